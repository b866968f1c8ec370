"""Recipes: one per task, each a Python function that builds the dataset, model and evaluator.

The command line reads these. A recipe is registered in the plain dict `RECIPES`:

    RECIPES["faster_rcnn"] = Recipe(
        name="faster_rcnn",
        summary="Faster R-CNN (RPN + Fast R-CNN head), small backbone",
        setup=setup_faster_rcnn,          # (*, data, val_data, model_overrides) -> Task
        build_model=build_faster_rcnn,    # (**model_kwargs) -> nn.Module
        build_evaluator=coco_evaluator,   # (dataset) -> Evaluator
    )

A trained model is rebuilt from its checkpoint's ``config.json``: ``model.recipe`` names the
recipe and ``model.kwargs`` are passed to ``build_model``.
"""

from __future__ import annotations

from structvision.tasks import (
    classification,  # noqa: F401  (registers classifier)
    depth,  # noqa: F401  (registers monodepth)
    detection,  # noqa: F401  (registers faster_rcnn, fast_rcnn)
    flow,  # noqa: F401  (registers raft_small, flownet_s)
    instances,  # noqa: F401  (registers mask_rcnn, keypoint_rcnn)
    intrinsic,  # noqa: F401  (registers normals, intrinsic)
    segmentation,  # noqa: F401  (registers fcn32s, fcn16s, fcn8s)
    tracking,  # noqa: F401  (registers sint, siamfc)
)
from structvision.tasks.registry import (
    MODEL_OPTION_HELP,
    RECIPES,
    Recipe,
    RecipeError,
    Task,
    get_recipe,
    no_recipes_message,
)
from structvision.tasks.run import (
    is_rank_zero,
    load_trained_model,
    run_eval,
    run_predict,
    run_train,
)

__all__ = [
    "MODEL_OPTION_HELP",
    "RECIPES",
    "Recipe",
    "RecipeError",
    "Task",
    "get_recipe",
    "is_rank_zero",
    "load_trained_model",
    "no_recipes_message",
    "run_eval",
    "run_predict",
    "run_train",
]
