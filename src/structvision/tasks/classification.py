"""Recipe ``classifier``: the small trunk trained to classify ``shapes-cls`` crops.

The pretraining task of the lecture's systems (FCN and the R-CNNs all start from a
classifier), on built-in data: top-1 accuracy and mean per-class accuracy on held-out crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import Dataset

from structvision.data.collate import collate_detection
from structvision.data.spec import build_dataset
from structvision.engine import TrainConfig
from structvision.evaluation import ClassificationEvaluator
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task

__all__ = ["build_classifier", "classification_evaluator", "draw_classification"]

MODEL_OPTIONS = ("arch", "width", "norm")


def build_classifier(*, arch: str = "small", num_classes: int, **options: Any) -> nn.Module:
    """A classifier by architecture name (``"small"``: the detectors' small backbone)."""
    from structvision.models.classification import classifier_small

    builders = {"small": classifier_small}
    if arch not in builders:
        raise RecipeError(f"model.arch {arch!r} is unknown; choose one of {', '.join(builders)}")
    try:
        return builders[arch](num_classes=num_classes, **options)
    except TypeError as error:
        raise RecipeError(f"model.arch {arch!r}: {error}") from error


def classification_evaluator(dataset: Dataset) -> ClassificationEvaluator:
    """Top-1 and mean per-class accuracy over the dataset's ``class_names``."""
    return ClassificationEvaluator(num_classes=len(dataset.class_names))


def draw_classification(
    image: torch.Tensor,
    prediction: dict,
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.5,
) -> torch.Tensor:
    """The crop enlarged to at least 128 pixels with the predicted class and its probability
    written under it: ``(3, s * H + 14, s * W)`` uint8."""
    scale = max(1, 128 // max(image.shape[-2:]))
    picture = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    picture = picture.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    label = int(prediction["label"])
    probability = float(prediction["probabilities"][label])
    name = class_names[label] if 0 <= label < len(class_names) else str(label)
    strip = Image.new("RGB", (picture.shape[-1], 14), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 1), f"{name} {probability:.2f}", fill=(0, 0, 0))
    text = torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1)
    return torch.cat([picture, text], dim=1)


#: Validation crops the run report's confusion matrix is computed on (at most).
REPORT_CROPS = 1000


def classification_report_sections(model: nn.Module, dataset: Dataset, model_config: dict) -> list:
    """The confusion matrix of ``model`` on up to `REPORT_CROPS` validation crops, rows the
    true classes, with each class's recall, for the run report."""
    from structvision.viz import ReportSection

    names = list(model_config.get("class_names") or dataset.class_names)
    evaluator = ClassificationEvaluator(num_classes=len(names))
    device = next(model.parameters()).device
    count = min(len(dataset), REPORT_CROPS)
    model.eval()
    with torch.no_grad():
        for start in range(0, count, 64):
            samples = [dataset[i] for i in range(start, min(start + 64, count))]
            images = torch.stack([image for image, _ in samples]).to(device)
            evaluator.update([target for _, target in samples], model(images))
    matrix = evaluator.confusion_matrix()
    header = ["true \\ predicted", *names, "recall"]
    rows = [
        [name, *row.tolist(), float(row[index]) / max(int(row.sum()), 1)]
        for index, (name, row) in enumerate(zip(names, matrix, strict=True))
    ]
    top1 = float(matrix.diag().sum()) / max(int(matrix.sum()), 1)
    return [
        ReportSection(
            "Confusion matrix",
            paragraphs=[f"{count} validation crops; top-1 accuracy {top1:.4f}."],
            grid=[header, *rows],
        )
    ]


CLASSIFIER_TRAINING = TrainConfig(
    max_steps=2000,
    batch_size=64,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=0.05,
    schedule="cosine",
    warmup_steps=100,
    clip_grad_norm=10.0,
    eval_every=1000,
    checkpoint_every=500,
    log_every=20,
)


def setup_classifier(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
    """The small classifier on ``shapes-cls`` (or any dataset whose targets hold ``label``)."""
    train_dataset = build_dataset(data, split="train")
    val_dataset = build_dataset(val_data or data, split="val")
    if len(train_dataset) == 0 or "label" not in train_dataset[0][1]:
        raise RecipeError(
            f"classifier trains on samples with a 'label'; {data} has none (use 'shapes-cls')"
        )
    class_names = list(train_dataset.class_names)
    kwargs = {"arch": "small", "num_classes": len(class_names), **model_overrides}
    return Task(
        model=build_classifier(**kwargs),
        model_config={"recipe": "classifier", "kwargs": kwargs, "class_names": class_names},
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        collate_fn=collate_detection,
        evaluator_factory=lambda: classification_evaluator(val_dataset),
        train_config=CLASSIFIER_TRAINING,
    )


RECIPES["classifier"] = Recipe(
    name="classifier",
    summary="Image classifier on shapes-cls crops: pretrains the small trunk of the detectors",
    setup=setup_classifier,
    build_model=build_classifier,
    build_evaluator=classification_evaluator,
    collate_fn=collate_detection,
    draw=draw_classification,
    model_options=MODEL_OPTIONS,
    train_defaults=CLASSIFIER_TRAINING,
    report_sections=classification_report_sections,
)
