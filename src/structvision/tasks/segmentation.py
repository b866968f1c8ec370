"""Recipes ``fcn32s``, ``fcn16s`` and ``fcn8s``: semantic segmentation on ``shapes`` or VOC.

The ``shapes`` generator gives exact semantic label maps (``ignore_band=N`` adds a VOC-style
255 band at object boundaries); a Pascal VOC folder is read with its ``SegmentationClass``
PNGs. Predictions can be refined by the dense CRF (``structvision predict --crf``).

Weak supervision (Tang et al. 2018): ``--data shapes:scribbles=true`` trains on scribbles
(partial cross-entropy on the stroke pixels) and ``--set model.crf_loss_weight=...`` adds the
dense-CRF regularised loss. The validation data is always scored against full labels: the
recipe drops ``scribbles`` from the validation SPEC (``--val-data`` or the one derived from
``--data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from structvision.data.collate import collate_detection
from structvision.data.spec import DataSpec, build_dataset, parse_spec
from structvision.data.transforms import detection_train_transforms
from structvision.engine import TrainConfig
from structvision.evaluation.segmentation import SegmentationEvaluator
from structvision.models.pretrained import with_default_trunk
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task

__all__ = ["build_segmenter", "draw_segmentation", "segmentation_evaluator"]

MODEL_OPTIONS = (
    "arch",
    "width",
    "norm",
    "depth",
    "weights_path",
    "pretrained",
    "trainable_upsampling",
    "crf_loss_weight",
    "crf_sxy",
    "crf_srgb",
    "crf_scale",
)


def build_segmenter(*, arch: str, variant: str, num_classes: int, **options: Any) -> nn.Module:
    """Build an FCN by backbone name: ``small``, ``resnet`` or ``vgg``."""
    from structvision.models.pretrained import start_from_classifier
    from structvision.models.segmentation import fcn_resnet, fcn_small, fcn_vgg

    builders = {"small": fcn_small, "resnet": fcn_resnet, "vgg": fcn_vgg}
    if arch not in builders:
        raise RecipeError(f"model.arch {arch!r} is unknown; choose one of {', '.join(builders)}")
    pretrained = options.pop("pretrained", None)
    try:
        model = builders[arch](num_classes=num_classes, variant=variant, **options)
    except TypeError as error:
        raise RecipeError(f"model.arch {arch!r}: {error}") from error
    return start_from_classifier(model, pretrained, arch=arch, small_archs=("small",))


def _dataset(spec: str | DataSpec, *, split: str, transforms=None) -> Dataset:
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "voc":
        from structvision.data.voc import resolve_voc_root
        from structvision.data.voc_segmentation import VOCSegmentation

        image_set = {"train": "train", "val": "val"}.get(split, split)
        return VOCSegmentation(
            resolve_voc_root(parsed.path), image_set=image_set, transforms=transforms
        )
    if parsed.kind != "generator":
        raise RecipeError(
            f"data {spec}: semantic segmentation reads 'shapes' or a Pascal VOC folder"
        )
    return build_dataset(parsed, split=split, transforms=transforms)


def _full_labels(spec: str) -> str | DataSpec:
    """``spec`` without ``scribbles=...``: validation is scored against the full label maps."""
    parsed = parse_spec(spec)
    if parsed.kind != "generator" or "scribbles" not in parsed.options:
        return spec
    options = {k: v for k, v in parsed.options.items() if k != "scribbles"}
    return replace(parsed, options=options)


def segmentation_evaluator(dataset: Dataset) -> SegmentationEvaluator:
    """mIoU, accuracies and boundary F over the dataset's classes (background included)."""
    class_names = list(dataset.class_names)
    return SegmentationEvaluator(num_classes=len(class_names), class_names=class_names)


def draw_segmentation(
    image: torch.Tensor,
    prediction: dict,
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.5,
) -> torch.Tensor:
    """The image and its predicted label map side by side, above a legend of the classes:
    ``(3, s * H + legend, 2 * s * W)`` uint8, enlarged ``s`` times so that small images stay
    legible. ``score_threshold`` does not apply to label maps."""
    from structvision.viz import colorize_semantic, draw_legend

    scale = max(1, 256 // max(image.shape[-2:]))
    picture = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    labels = colorize_semantic(prediction["semantic"])
    if scale > 1:
        picture = picture.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
        labels = labels.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    overlay = (0.5 * picture.float() + 0.5 * labels.float()).round().to(torch.uint8)
    side_by_side = torch.cat([picture, overlay], dim=2)
    legend = draw_legend(class_names, width=side_by_side.shape[-1])
    return torch.cat([side_by_side, legend], dim=1)


#: Training settings of the small FCNs on ``shapes``, the best measured (BENCHMARKS.md,
#: "Defaults that deliver"): AdamW at lr 1e-3 from the pretrained trunk, 12000 steps (FCN-8s:
#: mIoU 0.758). SGD at lr 0.01 from scratch predicted background almost everywhere for the
#: first 4000 steps and reached 0.225 after 15000.
FCN_TRAINING = TrainConfig(
    max_steps=12000,
    batch_size=8,
    optimizer="adamw",
    lr=1e-3,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_steps=100,
    clip_grad_norm=10.0,
    eval_every=1000,
    checkpoint_every=500,
)


def _setup(variant: str):
    def setup(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
        train_dataset = _dataset(
            data, split="train", transforms=detection_train_transforms(scale_range=None)
        )
        val_dataset = _dataset(_full_labels(val_data or data), split="val")
        class_names = list(train_dataset.class_names)
        kwargs = {
            "arch": "small",
            "variant": variant,
            "num_classes": len(class_names),
            **model_overrides,
        }
        if kwargs["arch"] == "small":  # group norm, like the pretrained trunk it starts from
            kwargs = with_default_trunk({"norm": "group", **kwargs})
        return Task(
            model=build_segmenter(**kwargs),
            model_config={"recipe": f"fcn{variant}", "kwargs": kwargs, "class_names": class_names},
            train_dataset=train_dataset,
            val_dataset=val_dataset,
            collate_fn=collate_detection,
            evaluator_factory=lambda: segmentation_evaluator(val_dataset),
            train_config=FCN_TRAINING,
        )

    return setup


for _variant in ("32s", "16s", "8s"):
    RECIPES[f"fcn{_variant}"] = Recipe(
        name=f"fcn{_variant}",
        summary=f"FCN-{_variant}: fully convolutional segmentation with learned upsampling",
        setup=_setup(_variant),
        build_model=build_segmenter,
        build_evaluator=segmentation_evaluator,
        collate_fn=collate_detection,
        draw=draw_segmentation,
        model_options=MODEL_OPTIONS,
        predicts_semantic=True,
        train_defaults=FCN_TRAINING,
    )
