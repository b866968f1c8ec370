"""Recipes ``faster_rcnn`` and ``fast_rcnn``: box detection on ``shapes``, COCO or VOC data.

Each recipe is a plain function building the datasets, the model and the evaluator; the model
is rebuilt from a checkpoint with `build_detector` and the ``kwargs`` stored in ``config.json``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from structvision.data.collate import collate_detection
from structvision.data.spec import build_dataset, parse_spec
from structvision.data.transforms import detection_train_transforms
from structvision.engine import TrainConfig
from structvision.evaluation import COCOEvaluator
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task

__all__ = ["build_detector", "coco_evaluator", "default_cache_dir"]

#: Architectures a detection recipe can build, by the name stored in ``config.json``.
ARCHITECTURES = ("small_fpn", "small_c4", "resnet50_fpn", "resnet50_fpn_v2", "fast_rcnn_small")

#: Model options a user may set with ``--set model.KEY=VALUE``.
MODEL_OPTIONS = (
    "arch",
    "width",
    "norm",
    "pooler",
    "min_size",
    "max_size",
    "roi_canonical_scale",
    "box_head",
    "box_soft_nms_sigma",
    "trainable_layers",
    "weights_path",
    "init",
    "pretrained",
    "proposal_mode",
    "max_proposals",
    "cache_dir",
)


def default_cache_dir() -> Path:
    """Where Selective Search proposals are cached: ``$STRUCTVISION_CACHE/proposals`` or
    ``~/.cache/structvision/proposals``."""
    root = os.environ.get("STRUCTVISION_CACHE") or Path.home() / ".cache" / "structvision"
    return Path(root) / "proposals"


def build_detector(*, arch: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a detector by architecture name (``num_classes`` includes the background)."""
    from structvision.models.detection import (
        fast_rcnn_small,
        faster_rcnn_resnet50_fpn,
        faster_rcnn_resnet50_fpn_v2,
        faster_rcnn_small_c4,
        faster_rcnn_small_fpn,
    )

    builders = {
        "small_fpn": faster_rcnn_small_fpn,
        "small_c4": faster_rcnn_small_c4,
        "resnet50_fpn": faster_rcnn_resnet50_fpn,
        "resnet50_fpn_v2": faster_rcnn_resnet50_fpn_v2,
        "fast_rcnn_small": fast_rcnn_small,
    }
    if arch not in builders:
        raise RecipeError(
            f"model.arch {arch!r} is unknown; choose one of {', '.join(ARCHITECTURES)}"
        )
    init = options.pop("init", None)
    pretrained = options.pop("pretrained", None)
    try:
        model = builders[arch](num_classes=num_classes, **options)
    except TypeError as error:
        raise RecipeError(f"model.arch {arch!r}: {error}") from error
    return init_from_coco(init_from_classifier(model, pretrained, arch=arch), init, arch=arch)


#: Architectures whose trunk is the small backbone, which ``model.pretrained`` starts.
SMALL_ARCHITECTURES = ("small_fpn", "small_c4", "fast_rcnn_small")


def init_from_classifier(model: nn.Module, pretrained: str | None, *, arch: str) -> nn.Module:
    """``model`` with its small backbone copied from the classifier ``pretrained`` (``zoo:NAME``,
    a run/checkpoint folder or a state-dict file); ``None`` or ``"none"``: from scratch."""
    from structvision.models.pretrained import start_from_classifier

    return start_from_classifier(model, pretrained, arch=arch, small_archs=SMALL_ARCHITECTURES)


#: Architectures that ``model.init`` can start from torchvision's COCO-trained weights.
COCO_INIT_ARCHITECTURES = ("resnet50_fpn", "resnet50_fpn_v2")


def init_from_coco(model: nn.Module, init: str | None, *, arch: str) -> nn.Module:
    """``model`` started from ``init`` (nothing happens for ``None``): a torchvision
    COCO-trained state dict file (the class-specific layers stay freshly initialised), or a
    structvision model of the same recipe and settings to fine-tune (``zoo:NAME``, a run or
    checkpoint folder), whose every weight is copied."""
    if init is None:
        return model
    from structvision.engine import CheckpointError, load_model_weights
    from structvision.zoo import is_zoo_name, zoo_path

    if is_zoo_name(init) or Path(init).is_dir():
        try:
            load_model_weights(model, zoo_path(init) if is_zoo_name(init) else init)
        except (CheckpointError, FileNotFoundError) as error:
            raise RecipeError(
                f"model.init {init}: cannot fine-tune from it, it must be a model of the same "
                f"recipe and model settings ({error})"
            ) from error
        return model
    from structvision.convert import init_from_torchvision_detection, read_state_dict_file

    if arch not in COCO_INIT_ARCHITECTURES:
        raise RecipeError(
            f"model.init starts from torchvision's COCO-trained weights, which exist for "
            f"model.arch {' or '.join(COCO_INIT_ARCHITECTURES)}, not {arch!r}"
        )
    state_dict = read_state_dict_file(init, what="model.init")
    init_from_torchvision_detection(model, state_dict, source=f"model.init {init}")
    return model


def coco_evaluator(
    dataset: Dataset,
    *,
    iou_types: Sequence[str] = ("bbox",),
    keypoint_sigmas: Sequence[float] | None = None,
) -> COCOEvaluator:
    """COCO evaluation (box AP by default; ``iou_types`` may add ``"segm"``, ``"keypoints"``):
    against the annotation file for COCO data, else built from the dataset's targets.
    ``keypoint_sigmas`` are the OKS sigmas (``None``: COCO's person sigmas, 17 keypoints)."""
    annotation_file = getattr(dataset, "annotation_file", None)
    mapping = getattr(dataset, "label_to_category_id", None)
    return COCOEvaluator(
        iou_types=tuple(iou_types),
        coco_gt=annotation_file,
        label_to_category_id=mapping,
        keypoint_sigmas=keypoint_sigmas,
    )


def _datasets(data: str, val_data: str | None) -> tuple[Dataset, Dataset]:
    train_dataset = build_dataset(
        data, split="train", transforms=detection_train_transforms(scale_range=None)
    )
    if val_data is None and parse_spec(data).kind != "generator":
        warnings.warn(
            f"no --val-data given: evaluating on the training data {data}",
            UserWarning,
            stacklevel=3,
        )
    val_dataset = build_dataset(val_data or data, split="val")
    return train_dataset, val_dataset


def _task(
    *, name: str, data: str, val_data: str | None, model_kwargs: dict, train_config: TrainConfig
) -> Task:
    train_dataset, val_dataset = _datasets(data, val_data)
    class_names = list(train_dataset.class_names)
    kwargs = {"num_classes": len(class_names), **model_kwargs}
    return Task(
        model=build_detector(**kwargs),
        model_config={
            "recipe": name,
            "kwargs": kwargs,
            "class_names": class_names,
            "label_to_category_id": getattr(train_dataset, "label_to_category_id", {}),
        },
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        collate_fn=collate_detection,
        evaluator_factory=lambda: coco_evaluator(val_dataset),
        train_config=train_config,
    )


def small_model_defaults(kwargs: dict) -> dict:
    """A detection recipe's model options with the measured best defaults of the small models:
    the conv box head for ``small_fpn`` and the zoo's pretrained trunk for every small model
    (unless the user chose otherwise; ``model.pretrained=none`` trains from scratch)."""
    from structvision.models.pretrained import with_default_trunk

    if kwargs.get("arch") == "small_fpn":
        kwargs = {"box_head": "conv", **kwargs}
    if kwargs.get("arch") in SMALL_ARCHITECTURES:
        kwargs = with_default_trunk(kwargs)
    return kwargs


#: Training settings of the small models on ``shapes`` (128-pixel images), from scratch.
SMALL_DETECTOR_TRAINING = TrainConfig(
    max_steps=3000,
    batch_size=8,
    optimizer="sgd",
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_steps=200,
    clip_grad_norm=10.0,
    eval_every=1000,
    checkpoint_every=500,
    log_every=20,
)


#: Faster R-CNN's defaults, the best measured setting (BENCHMARKS.md, "Defaults that
#: deliver"): AdamW at lr 5e-4 (SGD at lr 0.02 left the classifier underfitted) for 8000 steps
#: (box AP 0.717 at 4000), with the conv box head and the pretrained trunk that
#: `small_model_defaults` adds.
FASTER_RCNN_TRAINING = SMALL_DETECTOR_TRAINING.replace(optimizer="adamw", lr=5e-4, max_steps=8000)

#: Fast R-CNN trains on two images of cached proposals per step, with AdamW at lr 5e-4 as
#: Faster R-CNN (BENCHMARKS.md, "Defaults that deliver": 1000 steps with RoIAlign gave bbox/AP
#: 0.338 against 0.304 with SGD at lr 0.01).
FAST_RCNN_TRAINING = SMALL_DETECTOR_TRAINING.replace(batch_size=2, optimizer="adamw", lr=5e-4)


def setup_faster_rcnn(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
    """Faster R-CNN (RPN + box head); the small FPN model unless ``model.arch`` says otherwise."""
    return _task(
        name="faster_rcnn",
        data=data,
        val_data=val_data,
        model_kwargs=small_model_defaults({"arch": "small_fpn", **model_overrides}),
        train_config=FASTER_RCNN_TRAINING,
    )


def setup_fast_rcnn(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
    """Fast R-CNN on cached Selective Search proposals; ``model.pooler``: roi_pool, spp or
    roi_align."""
    kwargs = {
        "arch": "fast_rcnn_small",
        "pooler": "roi_pool",
        "cache_dir": str(default_cache_dir()),
    }
    return _task(
        name="fast_rcnn",
        data=data,
        val_data=val_data,
        model_kwargs=small_model_defaults({**kwargs, **model_overrides}),
        train_config=FAST_RCNN_TRAINING,
    )


RECIPES["faster_rcnn"] = Recipe(
    name="faster_rcnn",
    summary="Faster R-CNN: RPN + Fast R-CNN head (small FPN model by default; resnet50_fpn, ...)",
    setup=setup_faster_rcnn,
    build_model=build_detector,
    build_evaluator=coco_evaluator,
    collate_fn=collate_detection,
    model_options=MODEL_OPTIONS,
    train_defaults=FASTER_RCNN_TRAINING,
)
RECIPES["fast_rcnn"] = Recipe(
    name="fast_rcnn",
    summary="Fast R-CNN on Selective Search proposals with RoI pooling, SPP or RoIAlign",
    setup=setup_fast_rcnn,
    build_model=build_detector,
    build_evaluator=coco_evaluator,
    collate_fn=collate_detection,
    model_options=MODEL_OPTIONS,
    train_defaults=FAST_RCNN_TRAINING,
)
