"""Recipes ``mask_rcnn`` and ``keypoint_rcnn``: instance masks and keypoints (He et al. 2017).

``mask_rcnn`` trains on ``shapes`` (exact visible instance masks) or on a COCO file whose
annotations have ``segmentation`` polygons or RLE, and is scored with box and mask AP
(``bbox/AP...``, ``segm/AP...``). ``keypoint_rcnn`` trains on ``shapes-pose`` (stick figures
with 15 keypoints) or on a COCO keypoints file, with horizontal flips that swap the left/right
keypoints, and is scored with box and keypoint (OKS) AP (``keypoints/AP...``).

A keypoint model's ``config.json`` keeps its keypoint layout beside the network's ``kwargs``
(``keypoint_names``, ``skeleton``, ``keypoint_flip_pairs`` and the OKS ``keypoint_sigmas``), so
``structvision eval`` and ``predict`` rebuild the evaluator and the drawing from the run alone,
also for data (a COCO file) that does not carry sigmas. Training picks the sigmas, in this
order: ``--set model.keypoint_sigmas=(...)``, the dataset's own (``shapes-pose``), the stick
figures' for a COCO file with their keypoint names, COCO's person sigmas for 17 keypoints (kept
as ``null``); any other layout must be given them. Evaluation uses the stored ones.

Crowd annotations (``iscrowd = 1``) of COCO files are left out of training, as in torchvision's
references; evaluation keeps them (COCOeval ignores detections matched to them).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from structvision.data.collate import collate_detection
from structvision.data.spec import DataSpec, build_dataset, parse_spec
from structvision.data.transforms import detection_train_transforms
from structvision.evaluation import COCOEvaluator
from structvision.tasks.detection import (
    SMALL_DETECTOR_TRAINING,
    coco_evaluator,
    init_from_classifier,
    init_from_coco,
    small_model_defaults,
)
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task

__all__ = [
    "KEYPOINT_ARCHITECTURES",
    "KEYPOINT_MODEL_OPTIONS",
    "MASK_ARCHITECTURES",
    "MASK_MODEL_OPTIONS",
    "build_keypoint_rcnn",
    "build_mask_rcnn",
    "draw_keypoint_instances",
    "keypoint_evaluator",
    "keypoint_layout",
    "mask_evaluator",
]

#: Architectures of ``mask_rcnn``, by the name stored in ``config.json``.
MASK_ARCHITECTURES = ("small_fpn", "resnet50_fpn", "resnet50_fpn_v2")
#: Architectures of ``keypoint_rcnn``.
KEYPOINT_ARCHITECTURES = ("small_fpn", "resnet50_fpn")

#: ``--set model.KEY=VALUE`` options of ``mask_rcnn`` (``width``, ``norm``, ``fpn_channels``,
#: ``roi_canonical_scale`` and ``box_head`` are the small model's; ``trainable_layers`` and ``weights_path``
#: ResNet-50's).
MASK_MODEL_OPTIONS = (
    "arch",
    "mask_pooler",
    "mask_rescoring",
    "mask_paste",
    "box_soft_nms_sigma",
    "width",
    "norm",
    "fpn_channels",
    "min_size",
    "max_size",
    "roi_canonical_scale",
    "box_head",
    "trainable_layers",
    "weights_path",
    "init",
    "pretrained",
)
#: ``--set model.KEY=VALUE`` options of ``keypoint_rcnn``; ``keypoint_sigmas`` is not a network
#: setting but the OKS sigmas stored with the model (needed for COCO files of a new layout).
KEYPOINT_MODEL_OPTIONS = (
    "arch",
    "width",
    "norm",
    "fpn_channels",
    "min_size",
    "max_size",
    "roi_canonical_scale",
    "box_head",
    "keypoint_roi_expansion",
    "keypoint_rescoring",
    "keypoint_subpixel",
    "keypoint_target_sigma",
    "keypoint_layers",
    "box_soft_nms_sigma",
    "trainable_layers",
    "weights_path",
    "init",
    "pretrained",
    "keypoint_sigmas",
)

MASK_POOLERS = ("align", "pool")

#: Mask R-CNN's and Keypoint R-CNN's defaults, the best measured settings (BENCHMARKS.md):
#: AdamW at lr 5e-4, with the conv box head and the pretrained trunk (`small_model_defaults`).
MASK_RCNN_TRAINING = SMALL_DETECTOR_TRAINING.replace(optimizer="adamw", lr=5e-4, max_steps=7000)
KEYPOINT_RCNN_TRAINING = SMALL_DETECTOR_TRAINING.replace(optimizer="adamw", lr=5e-4, max_steps=5000)


# --------------------------------------------------------------------------- models


def _build(builders: dict[str, Callable[..., nn.Module]], arch: str, **kwargs: Any) -> nn.Module:
    if arch not in builders:
        raise RecipeError(f"model.arch {arch!r} is unknown; choose one of {', '.join(builders)}")
    init = kwargs.pop("init", None)
    pretrained = kwargs.pop("pretrained", None)
    try:
        model = builders[arch](**kwargs)
    except TypeError as error:  # an option this architecture does not have
        raise RecipeError(f"model.arch {arch!r}: {error}") from error
    return init_from_coco(init_from_classifier(model, pretrained, arch=arch), init, arch=arch)


def build_mask_rcnn(*, arch: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a Mask R-CNN by architecture name (``num_classes`` includes the background);
    ``mask_pooler`` is ``"align"`` (RoIAlign) or ``"pool"`` (RoIPool, the paper's ablation)."""
    from structvision.models.detection import (
        mask_rcnn_resnet50_fpn,
        mask_rcnn_resnet50_fpn_v2,
        mask_rcnn_small_fpn,
    )

    pooler = options.get("mask_pooler", "align")
    if pooler not in MASK_POOLERS:
        raise RecipeError(
            f"model.mask_pooler {pooler!r} is unknown; choose one of {', '.join(MASK_POOLERS)}"
        )
    builders = {
        "small_fpn": mask_rcnn_small_fpn,
        "resnet50_fpn": mask_rcnn_resnet50_fpn,
        "resnet50_fpn_v2": mask_rcnn_resnet50_fpn_v2,
    }
    return _build(builders, arch, num_classes=num_classes, **options)


def build_keypoint_rcnn(
    *, arch: str, num_classes: int, num_keypoints: int, **options: Any
) -> nn.Module:
    """Build a Keypoint R-CNN by architecture name, predicting ``num_keypoints`` heatmaps."""
    from structvision.models.detection import keypoint_rcnn_resnet50_fpn, keypoint_rcnn_small_fpn

    builders = {"small_fpn": keypoint_rcnn_small_fpn, "resnet50_fpn": keypoint_rcnn_resnet50_fpn}
    return _build(builders, arch, num_classes=num_classes, num_keypoints=num_keypoints, **options)


# --------------------------------------------------------------------------- data


class _TrainTransforms:
    """Training transform: drop ``iscrowd`` instances, then augment with ``transforms``."""

    def __init__(self, transforms: Callable) -> None:
        self.transforms = transforms

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        from structvision.data.coco import drop_crowd

        return self.transforms(image, drop_crowd(target))


def _has_masks(dataset: Dataset) -> bool:
    """Whether the dataset's targets hold ``masks`` (a COCO file: whether it has segmentations;
    another dataset: whether its first sample has them)."""
    if hasattr(dataset, "has_segmentations"):
        return bool(dataset.has_segmentations)
    return len(dataset) == 0 or "masks" in dataset[0][1]


def _instance_dataset(spec: str | DataSpec, *, split: str, recipe: str) -> Dataset:
    """A generator or a COCO file, without transforms; ``mask_rcnn`` refuses a file without
    segmentations, ``keypoint_rcnn`` data without keypoints."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "voc":
        raise RecipeError(
            f"data {spec}: {recipe} reads a built-in generator or a COCO file; Pascal VOC "
            "detection folders have no instance masks or keypoints"
        )
    if parsed.kind == "coco" and recipe == "keypoint_rcnn":
        dataset = build_dataset(parsed, split=split, with_masks=False)  # masks unused
    else:
        dataset = build_dataset(parsed, split=split)
    if recipe == "mask_rcnn" and not _has_masks(dataset):
        raise RecipeError(
            f"data {spec}: no annotation has a 'segmentation'; mask_rcnn needs instance masks "
            "(COCO polygons or RLE)"
        )
    if recipe == "keypoint_rcnn" and getattr(dataset, "num_keypoints", 0) == 0:
        raise RecipeError(
            f"data {spec} has no keypoints; keypoint_rcnn trains on 'shapes-pose', "
            "'shapes:figures=true' or a COCO keypoints file"
        )
    return dataset


def _datasets(data: str, val_data: str | None, *, recipe: str) -> tuple[Dataset, Dataset]:
    """``(train, val)`` datasets, both without transforms (the recipe adds the training ones)."""
    if val_data is None and parse_spec(data).kind != "generator":
        warnings.warn(
            f"no --val-data given: evaluating on the training data {data}",
            UserWarning,
            stacklevel=3,
        )
    train_dataset = _instance_dataset(data, split="train", recipe=recipe)
    val_dataset = _instance_dataset(val_data or data, split="val", recipe=recipe)
    return train_dataset, val_dataset


# --------------------------------------------------------------------------- keypoint layout


def _keypoint_sigmas(
    dataset: Dataset,
    *,
    given: Sequence[float] | None = None,
    given_by: str = "--set model.keypoint_sigmas",
) -> list[float] | None:
    """OKS sigmas for ``dataset``'s keypoints: ``given`` (checked), else the dataset's, else
    the stick figures' for their keypoint names, else ``None`` (COCO's person sigmas) for 17
    keypoints; any other layout raises `RecipeError`."""
    from structvision.data.synthetic import KEYPOINT_NAMES, KEYPOINT_SIGMAS

    num_keypoints = int(dataset.num_keypoints)
    sources = (
        (given_by, given),
        ("the dataset's keypoint_sigmas", getattr(dataset, "keypoint_sigmas", None)),
    )
    for source, sigmas in sources:
        if sigmas is None or (isinstance(sigmas, (list, tuple)) and len(sigmas) == 0):
            continue
        if not isinstance(sigmas, (list, tuple)) or len(sigmas) != num_keypoints:
            raise RecipeError(
                f"{source} must list {num_keypoints} sigmas (one per keypoint of the data), "
                f"got {sigmas!r}"
            )
        if not all(isinstance(s, (int, float)) and s > 0 for s in sigmas):
            raise RecipeError(f"{source} must be positive numbers, got {sigmas!r}")
        return [float(s) for s in sigmas]
    if tuple(dataset.keypoint_names) == KEYPOINT_NAMES:
        return list(KEYPOINT_SIGMAS)  # a COCO file written from shapes-pose
    if num_keypoints == 17:
        return None
    raise RecipeError(
        f"no OKS sigmas are known for this data's {num_keypoints} keypoints "
        f"({', '.join(dataset.keypoint_names) or 'unnamed'}); give one per keypoint with "
        "--set model.keypoint_sigmas=(0.05, 0.05, ...)"
    )


def keypoint_layout(
    dataset: Dataset, *, keypoint_sigmas: Sequence[float] | None = None
) -> dict[str, Any]:
    """The keypoint layout a keypoint model keeps in its ``config.json``: ``keypoint_names``,
    ``skeleton`` (0-based limbs; a known default when the data has none),
    ``keypoint_flip_pairs`` and ``keypoint_sigmas`` (``keypoint_sigmas`` overrides the
    data's)."""
    from structvision.viz import default_skeleton

    num_keypoints = int(dataset.num_keypoints)
    skeleton = list(getattr(dataset, "skeleton", ()) or default_skeleton(num_keypoints))
    return {
        "keypoint_names": list(dataset.keypoint_names),
        "skeleton": [[int(i), int(j)] for i, j in skeleton],
        "keypoint_flip_pairs": [[int(i), int(j)] for i, j in dataset.keypoint_flip_pairs],
        "keypoint_sigmas": _keypoint_sigmas(dataset, given=keypoint_sigmas),
    }


# --------------------------------------------------------------------------- evaluation, drawing


def mask_evaluator(dataset: Dataset) -> COCOEvaluator:
    """COCO box and mask AP (``bbox/...``, ``segm/...``) on ``dataset``."""
    if not _has_masks(dataset):
        raise RecipeError(
            f"data {getattr(dataset, 'annotation_file', type(dataset).__name__)} has no "
            "segmentations: mask AP needs ground-truth instance masks"
        )
    return coco_evaluator(dataset, iou_types=("bbox", "segm"))


def keypoint_evaluator(
    dataset: Dataset, *, model_config: dict[str, Any] | None = None
) -> COCOEvaluator:
    """COCO box and keypoint AP (``bbox/...``, ``keypoints/...``) on ``dataset``.

    The OKS sigmas are ``model_config``'s (a trained model's) when it stores them, else
    found from the data; the model's ``num_keypoints`` must equal the data's.
    """
    num_keypoints = int(getattr(dataset, "num_keypoints", 0))
    if num_keypoints == 0:
        raise RecipeError(
            "the evaluation data has no keypoints; keypoint_rcnn is scored on 'shapes-pose' or "
            "a COCO keypoints file"
        )
    stored = model_config or {}
    predicted = stored.get("kwargs", {}).get("num_keypoints", num_keypoints)
    if predicted != num_keypoints:
        raise RecipeError(
            f"the model predicts {predicted} keypoints but the evaluation data has {num_keypoints}"
        )
    sigmas = _keypoint_sigmas(
        dataset, given=stored.get("keypoint_sigmas"), given_by="the model's keypoint_sigmas"
    )
    return coco_evaluator(dataset, iou_types=("bbox", "keypoints"), keypoint_sigmas=sigmas)


def draw_keypoint_instances(
    image: torch.Tensor,
    prediction: dict,
    class_names: Sequence[str],
    *,
    model_config: dict[str, Any] | None = None,
    score_threshold: float = 0.5,
) -> torch.Tensor:
    """Boxes and skeletons (the model's stored ``skeleton``) of the detections scoring
    ``score_threshold`` or more, upscaled so that small images stay legible:
    ``(3, s * H, s * W)`` uint8."""
    from structvision.viz import draw_instances

    limbs = (model_config or {}).get("skeleton")
    skeleton = [(int(i), int(j)) for i, j in limbs] if limbs is not None else None
    scale = max(1, 256 // max(image.shape[-2:]))
    return draw_instances(
        image,
        prediction,
        class_names=class_names,
        skeleton=skeleton,
        scale=scale,
        score_threshold=score_threshold,
    )


# --------------------------------------------------------------------------- recipes


def setup_mask_rcnn(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
    """Mask R-CNN on ``shapes`` or a COCO file with masks; the small FPN model with RoIAlign
    unless ``model.arch`` / ``model.mask_pooler`` say otherwise."""
    train_dataset, val_dataset = _datasets(data, val_data, recipe="mask_rcnn")
    train_dataset.transforms = _TrainTransforms(detection_train_transforms(scale_range=None))
    class_names = list(train_dataset.class_names)
    kwargs = small_model_defaults(
        {
            "arch": "small_fpn",
            "mask_pooler": "align",
            "mask_rescoring": True,  # rank detections by their mask's confidence too
            "mask_paste": "where_sampled",  # place masks where their targets were sampled
            "num_classes": len(class_names),
            **model_overrides,
        }
    )
    return Task(
        model=build_mask_rcnn(**kwargs),
        model_config={
            "recipe": "mask_rcnn",
            "kwargs": kwargs,
            "class_names": class_names,
            "label_to_category_id": getattr(train_dataset, "label_to_category_id", {}),
        },
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        collate_fn=collate_detection,
        evaluator_factory=lambda: mask_evaluator(val_dataset),
        train_config=MASK_RCNN_TRAINING,
    )


def setup_keypoint_rcnn(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
    """Keypoint R-CNN on ``shapes-pose`` or a COCO keypoints file: the small FPN model,
    ``num_keypoints`` from the data, flips that swap the data's left/right keypoints."""
    overrides = dict(model_overrides)
    sigmas_override = overrides.pop("keypoint_sigmas", None)
    train_dataset, val_dataset = _datasets(data, val_data, recipe="keypoint_rcnn")
    layout = keypoint_layout(train_dataset, keypoint_sigmas=sigmas_override)
    flip_pairs = [(i, j) for i, j in layout["keypoint_flip_pairs"]]
    train_dataset.transforms = _TrainTransforms(
        detection_train_transforms(scale_range=None, keypoint_flip_pairs=flip_pairs)
    )
    class_names = list(train_dataset.class_names)
    kwargs = {
        "arch": "small_fpn",
        "num_classes": len(class_names),
        "num_keypoints": int(train_dataset.num_keypoints),
        **overrides,
    }
    if kwargs["arch"] == "small_fpn":  # heatmaps that reach joints just outside the box
        kwargs = {"keypoint_roi_expansion": 1.25, **kwargs}
        # eight convolutions of twice the pyramid's width, as torchvision's head has (measured
        # in BENCHMARKS.md); written into the run's config, so that runs made before this
        # default (four convolutions, the builder's) still rebuild as they were trained
        from structvision.models.detection.keypoint_rcnn import keypoint_rcnn_small_fpn

        default = inspect.signature(keypoint_rcnn_small_fpn).parameters["fpn_channels"].default
        channels = kwargs.get("fpn_channels", default)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise RecipeError(f"model.fpn_channels must be a positive integer, got {channels!r}")
        kwargs = {"keypoint_layers": (2 * channels,) * 8, **kwargs}
    # rank detections by their pose too; keypoints between pixels
    kwargs = {"keypoint_rescoring": True, "keypoint_subpixel": True, **kwargs}
    kwargs = small_model_defaults(kwargs)
    model_config = {
        "recipe": "keypoint_rcnn",
        "kwargs": kwargs,
        "class_names": class_names,
        "label_to_category_id": getattr(train_dataset, "label_to_category_id", {}),
        **layout,
    }
    return Task(
        model=build_keypoint_rcnn(**kwargs),
        model_config=model_config,
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        collate_fn=collate_detection,
        evaluator_factory=lambda: keypoint_evaluator(val_dataset, model_config=model_config),
        train_config=KEYPOINT_RCNN_TRAINING,
    )


RECIPES["mask_rcnn"] = Recipe(
    name="mask_rcnn",
    summary="Mask R-CNN: Faster R-CNN plus a mask head (RoIAlign, or RoIPool: "
    "model.mask_pooler=pool); small FPN model by default",
    setup=setup_mask_rcnn,
    build_model=build_mask_rcnn,
    build_evaluator=mask_evaluator,
    collate_fn=collate_detection,
    model_options=MASK_MODEL_OPTIONS,
    train_defaults=MASK_RCNN_TRAINING,
)
RECIPES["keypoint_rcnn"] = Recipe(
    name="keypoint_rcnn",
    summary="Keypoint R-CNN: Faster R-CNN plus keypoint heatmaps (pose), on shapes-pose or "
    "COCO keypoints",
    setup=setup_keypoint_rcnn,
    build_model=build_keypoint_rcnn,
    build_evaluator=keypoint_evaluator,
    collate_fn=collate_detection,
    draw=draw_keypoint_instances,
    model_options=KEYPOINT_MODEL_OPTIONS,
    train_defaults=KEYPOINT_RCNN_TRAINING,
    takes_model_config=True,
)
