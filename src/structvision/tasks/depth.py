"""Recipe ``monodepth``: depth from one image, learned from stereo pairs (Godard et al., 2017).

Trained on ``world-stereo`` by default: the network sees the left image only, and the right
image is its only supervision (``--set model.lr_consistency=false`` for the paper's ablation,
``--set model.supervised=true`` for the upper bound trained on the true disparities).
Evaluated with monodepth2's seven metrics on every pixel with true depth in (1e-3, 80) m; the
stereo rig fixes the scale, so no median scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from structvision.data.collate import collate_detection
from structvision.data.spec import build_dataset
from structvision.evaluation import DepthEvaluator
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task, from_scratch_training

__all__ = ["build_monodepth", "depth_evaluator", "draw_depth"]

ARCHITECTURES = ("small", "resnet18")

MODEL_OPTIONS = (
    "arch",
    "width",
    "max_disp",
    "lr_consistency",
    "supervised",
    "smoothness_weight",
    "lr_weight",
    "post_process",
    "weights_path",
)


def build_monodepth(*, arch: str = "small", **options: Any) -> nn.Module:
    """Monodepth by architecture name: ``"small"`` (a from-scratch trunk for CPUs, ``width``)
    or ``"resnet18"`` (``weights_path``: a local ImageNet ResNet-18 state dict)."""
    from structvision.models.depth import monodepth_resnet18, monodepth_small

    builders = {"small": monodepth_small, "resnet18": monodepth_resnet18}
    if arch not in builders:
        raise RecipeError(f"model.arch {arch!r} is unknown; choose one of {', '.join(builders)}")
    try:
        return builders[arch](**options)
    except TypeError as error:
        raise RecipeError(f"model.arch {arch!r}: {error}") from error


def depth_evaluator(dataset: Dataset | None = None) -> DepthEvaluator:
    """monodepth2's metrics over every pixel with a true depth in (1e-3, 80) m (the stereo
    visibility mask ``valid`` is about matching, not depth, so it is not used)."""
    return DepthEvaluator(min_depth=1e-3, max_depth=80.0, valid_key="depth_valid")


def draw_depth(
    image: torch.Tensor,
    prediction: dict,
    class_names: Sequence[str] = (),
    *,
    score_threshold: float = 0.5,
    target: dict | None = None,
) -> torch.Tensor:
    """The image above its predicted disparity, colour-mapped (near bright, far dark), and,
    given a ``target`` with ``disparity``, the true disparity below on the same scale:
    ``(3, 2H or 3H, W)`` uint8. ``class_names`` and ``score_threshold`` do not apply."""
    from structvision.viz import colorize_values

    picture = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    disparity = prediction["disparity"].detach().cpu()
    rows = [picture]
    if target is not None and target.get("disparity") is not None:
        true = target["disparity"].detach().cpu().float()
        high = float(true.quantile(0.99))
        rows += [
            colorize_values(disparity, vmin=0.0, vmax=high),
            colorize_values(true, vmin=0.0, vmax=high),
        ]
    else:
        rows.append(colorize_values(disparity, vmin=0.0))
    return torch.cat(rows, dim=1)


#: Adam at 1e-4 is the paper's setting for its ResNet; the small trunk trains from scratch
#: faster with AdamW at 1e-3 and a cosine decay.
MONODEPTH_TRAINING = from_scratch_training()


def setup_monodepth(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
    """Monodepth on ``world-stereo`` (or stereo data on disk): the small model by default."""
    train_dataset = build_dataset(data, split="train")
    val_dataset = build_dataset(val_data or data, split="val")
    for dataset, name in ((train_dataset, "training"), (val_dataset, "validation")):
        if len(dataset) == 0:
            raise RecipeError(f"monodepth: the {name} data {data} is empty")
    sample = train_dataset[0][1]
    if "image_right" not in sample and not model_overrides.get("supervised"):
        raise RecipeError(
            f"monodepth trains on stereo pairs: the samples of {data} have no 'image_right' "
            "(use 'world-stereo' or a stereo folder, or --set model.supervised=true with depth)"
        )
    kwargs = {"arch": "small", **model_overrides}
    return Task(
        model=build_monodepth(**kwargs),
        model_config={"recipe": "monodepth", "kwargs": kwargs, "class_names": []},
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        collate_fn=collate_detection,
        evaluator_factory=lambda: depth_evaluator(val_dataset),
        train_config=MONODEPTH_TRAINING,
    )


RECIPES["monodepth"] = Recipe(
    name="monodepth",
    summary="Monodepth: depth from one image, trained on stereo pairs with left-right "
    "consistency (world-stereo by default)",
    setup=setup_monodepth,
    build_model=build_monodepth,
    build_evaluator=depth_evaluator,
    collate_fn=collate_detection,
    draw=draw_depth,
    model_options=MODEL_OPTIONS,
    train_defaults=MONODEPTH_TRAINING,
)
