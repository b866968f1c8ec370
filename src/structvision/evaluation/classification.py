"""Classification metrics: top-1 accuracy, mean per-class accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["ClassificationEvaluator"]


class ClassificationEvaluator:
    """Accumulate ``(true label, predicted label)`` per image; targets hold ``label``,
    predictions ``label``. A record whose ``image_id`` was seen before is ignored.

    ``compute()``: ``top1`` (share of images right), ``mean_class_accuracy`` (mean over the
    classes present of their recall), ``num_images``; ``confusion_matrix()``: ``(K, K)`` counts,
    rows true, columns predicted.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.records: list[dict[str, Any]] = []

    def update(
        self, targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
    ) -> None:
        if len(targets) != len(predictions):
            raise ValueError(
                f"update: got {len(targets)} targets and {len(predictions)} predictions"
            )
        for target, prediction in zip(targets, predictions, strict=True):
            true, predicted = int(target["label"]), int(prediction["label"])
            for name, value in (("target", true), ("prediction", predicted)):
                if not 0 <= value < self.num_classes:
                    raise ValueError(f"{name} label {value} outside [0, {self.num_classes})")
            image_id = target.get("image_id")
            self.records.append(
                {
                    "image_id": None if image_id is None else int(image_id),
                    "true": true,
                    "pred": predicted,
                }
            )

    def _unique(self) -> list[dict[str, Any]]:
        seen, unique = set(), []
        for record in self.records:
            if record["image_id"] is not None:
                if record["image_id"] in seen:
                    continue
                seen.add(record["image_id"])
            unique.append(record)
        return unique

    def confusion_matrix(self) -> torch.Tensor:
        """``(K, K)`` int64 counts, rows the true labels, columns the predicted ones."""
        matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        for record in self._unique():
            matrix[record["true"], record["pred"]] += 1
        return matrix

    def compute(self) -> dict[str, float]:
        matrix = self.confusion_matrix()
        total = int(matrix.sum())
        if total == 0:
            raise ValueError("ClassificationEvaluator.compute: no images were evaluated")
        per_class = matrix.diag().float() / matrix.sum(1).clamp(min=1).float()
        present = matrix.sum(1) > 0
        return {
            "top1": float(matrix.diag().sum()) / total,
            "mean_class_accuracy": float(per_class[present].mean()),
            "num_images": float(total),
        }
