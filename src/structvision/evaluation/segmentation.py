"""Semantic segmentation metrics: one confusion matrix over the dataset, and a boundary F-score.

Region metrics come from the dataset-wide confusion matrix ``cm[gt, pred]`` (pixels labelled
255 in the ground truth are ignored):

* ``pixel_accuracy`` = ``trace(cm) / cm.sum()``;
* ``mean_class_accuracy`` = mean over the classes present in the ground truth of
  ``cm[c, c] / cm[c, :].sum()``;
* ``iou/<class>`` = ``cm[c, c] / (cm[c, :].sum() + cm[:, c].sum() - cm[c, c])`` for every
  class present in the ground truth or the prediction; ``miou`` is their mean (a class absent
  from both is skipped, not counted as 0 or 1);
* ``fw_iou`` = ``sum_c freq_c * iou_c`` with ``freq_c = cm[c, :].sum() / cm.sum()``.

``boundary_f`` measures how well boundaries are placed. A pixel is a boundary pixel of a label
map when one of its 4-neighbours has a different label (so a boundary is two pixels thick; the
image border is not a boundary). A predicted boundary pixel is correct when a ground-truth
boundary pixel lies within ``boundary_width`` pixels (Chebyshev distance, i.e. a
``(2w + 1) x (2w + 1)`` square, computed by max-pool dilation); a ground-truth boundary pixel
is recalled when a predicted one lies within the same band. Counts are summed over the dataset:
``P = correct / predicted``, ``R = recalled / ground truth``, ``F = 2PR / (P + R)``; an empty
count makes its ratio 1, so no boundary pixels in either gives ``F = 1`` and boundaries on one
side only give ``F = 0``.

Ignore pixels: in the ground truth, 255 is a label like any other for finding boundaries (the
edges of a VOC-style ignore band are boundaries), but pixels labelled 255 are never counted
themselves — neither as ground-truth boundary pixels nor as predicted ones — though a
predicted boundary inside an ignore band may still recall a ground-truth boundary next to it.

Distributed use: ``update`` stores one small record per image (its ``(C, C)`` int64 confusion
matrix and 4 boundary counts, never the label maps); the concatenated records of several
evaluators give the same result as one evaluator that saw everything. A record whose
``image_id`` was seen before is ignored (a distributed sampler may repeat images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SegmentationEvaluator",
    "boundary_counts",
    "confusion_matrix",
    "label_boundaries",
    "region_metrics",
]

IGNORE_INDEX = 255


def _check_same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


def _check_range(values: Tensor, num_classes: int, name: str) -> None:
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise ValueError(
            f"{name} must hold labels in 0..{num_classes - 1}, got values in "
            f"[{int(values.min())}, {int(values.max())}]"
        )


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``(C, C)`` int64 matrix, ``cm[gt, pred]`` = number of pixels of true class ``gt``
    predicted as ``pred``.

    Args:
        pred: predicted labels, any shape (``(H, W)``, ``(N,)``), integers in ``0..C - 1``.
        target: ground-truth labels of the same shape; pixels equal to ``ignore_index`` are
            skipped, the others must be in ``0..C - 1``.
        num_classes: C.
        ignore_index: the ground-truth label to skip (255).
    """
    _check_same_shape(pred, target)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes!r}")
    valid = target != ignore_index
    gt_labels = target[valid].long()  # (V,)
    pred_labels = pred[valid].long()  # (V,)
    _check_range(gt_labels, num_classes, "target")
    _check_range(pred_labels, num_classes, "pred")
    counts = torch.bincount(gt_labels * num_classes + pred_labels, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).cpu()


def label_boundaries(labels: Tensor) -> Tensor:
    """``(H, W)`` bool: pixels of the ``(H, W)`` label map with a 4-neighbour of another label."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be (H, W), got {tuple(labels.shape)}")
    boundary = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[1:, :] != labels[:-1, :]  # (H - 1, W)
    horizontal = labels[:, 1:] != labels[:, :-1]  # (H, W - 1)
    boundary[1:, :] |= vertical
    boundary[:-1, :] |= vertical
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    return boundary


def _dilate(mask: Tensor, width: int) -> Tensor:
    """``(H, W)`` bool -> pixels within ``width`` (Chebyshev distance) of a ``True`` pixel."""
    if width == 0:
        return mask
    pooled = F.max_pool2d(mask[None, None].float(), 2 * width + 1, stride=1, padding=width)
    return pooled[0, 0] > 0


def boundary_counts(
    pred: Tensor, target: Tensor, *, boundary_width: int = 2, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``(4,)`` int64 ``[correct_pred, num_pred, recalled_gt, num_gt]`` boundary pixel counts of
    one ``(H, W)`` prediction against its ``(H, W)`` ground truth (see the module docstring)."""
    _check_same_shape(pred, target)
    if boundary_width < 0:
        raise ValueError(f"boundary_width must be >= 0, got {boundary_width!r}")
    valid = target != ignore_index
    pred_boundary = label_boundaries(pred)
    gt_boundary = label_boundaries(target) & valid
    counted_pred = pred_boundary & valid
    correct_pred = counted_pred & _dilate(gt_boundary, boundary_width)
    recalled_gt = gt_boundary & _dilate(pred_boundary, boundary_width)
    counts = [correct_pred.sum(), counted_pred.sum(), recalled_gt.sum(), gt_boundary.sum()]
    return torch.stack(counts).long().cpu()


def _f_score(counts: Tensor) -> float:
    correct_pred, num_pred, recalled_gt, num_gt = (int(c) for c in counts)
    # An empty set is vacuously precise / fully recalled: no boundaries anywhere gives F = 1,
    # boundaries on one side only give F = 0.
    precision = correct_pred / num_pred if num_pred else 1.0
    recall = recalled_gt / num_gt if num_gt else 1.0
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def region_metrics(cm: Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """``miou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``fw_iou`` and ``iou/<class>``
    (classes present in truth or prediction) of a ``(C, C)`` confusion matrix ``cm[gt, pred]``.
    All are 0.0 when the matrix is empty."""
    cm = cm.double()
    total = cm.sum()
    if total == 0:
        return {"miou": 0.0, "pixel_accuracy": 0.0, "mean_class_accuracy": 0.0, "fw_iou": 0.0}
    true_positives = cm.diag()  # (C,)
    gt_counts = cm.sum(1)  # (C,)
    pred_counts = cm.sum(0)  # (C,)
    union = gt_counts + pred_counts - true_positives  # (C,)
    present = union > 0
    in_gt = gt_counts > 0
    iou = true_positives[present] / union[present]
    metrics = {
        "miou": float(iou.mean()),
        "pixel_accuracy": float(true_positives.sum() / total),
        "mean_class_accuracy": float((true_positives[in_gt] / gt_counts[in_gt]).mean()),
        "fw_iou": float((gt_counts[present] / total * iou).sum()),
    }
    for index in present.nonzero().flatten().tolist():
        metrics[f"iou/{class_names[index]}"] = float(true_positives[index] / union[index])
    return metrics


class SegmentationEvaluator:
    """Accumulate per-pixel predictions and compute the segmentation metrics.

    Args:
        num_classes: C (labels ``0 .. C - 1``, background included).
        class_names: C names, used for the ``iou/<name>`` keys (default: ``"0" .. "C-1"``).
        ignore_index: the ground-truth label that is not evaluated (255).
        boundary_width: the tolerance band, in pixels, of the boundary F-score.

    Attributes:
        records: per-image picklable dicts: ``image_id`` (int, or ``None`` when the target has
            none), ``confusion (C, C)`` int64, ``boundary (4,)`` int64
            ``[correct_pred, num_pred, recalled_gt, num_gt]``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        boundary_width: int = 2,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        names = (
            tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        )
        if len(names) != num_classes:
            raise ValueError(f"class_names must have {num_classes} names, got {len(names)}")
        if boundary_width < 0:
            raise ValueError(f"boundary_width must be >= 0, got {boundary_width!r}")
        self.num_classes = num_classes
        self.class_names = names
        self.ignore_index = ignore_index
        self.boundary_width = boundary_width
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget all records."""
        self.records = []

    def _record(self, target: Mapping[str, Tensor], prediction: Mapping[str, Tensor]) -> dict:
        if "semantic" not in target:
            raise ValueError(f"target is missing 'semantic' (has {sorted(target)})")
        if "semantic" not in prediction:
            raise ValueError(f"prediction is missing 'semantic' (has {sorted(prediction)})")
        gt_semantic, pred_semantic = target["semantic"].cpu(), prediction["semantic"].cpu()
        if gt_semantic.dim() != 2 or gt_semantic.shape != pred_semantic.shape:
            raise ValueError(
                f"target['semantic'] and prediction['semantic'] must both be (H, W) of the "
                f"same size, got {tuple(gt_semantic.shape)} and {tuple(pred_semantic.shape)}"
            )
        image_id = target.get("image_id")
        return {
            "image_id": None if image_id is None else int(image_id),
            "confusion": confusion_matrix(
                pred_semantic, gt_semantic, self.num_classes, self.ignore_index
            ),
            "boundary": boundary_counts(
                pred_semantic,
                gt_semantic,
                boundary_width=self.boundary_width,
                ignore_index=self.ignore_index,
            ),
        }

    def update(
        self, targets: Sequence[Mapping[str, Tensor]], predictions: Sequence[Mapping[str, Tensor]]
    ) -> None:
        """Add one batch: ``targets[i]["semantic"]`` and ``predictions[i]["semantic"]`` are
        ``(H, W)`` integer label maps of the same size (255 = ignore in the targets)."""
        if len(targets) != len(predictions):
            raise ValueError(
                f"update: got {len(targets)} targets and {len(predictions)} predictions"
            )
        for target, prediction in zip(targets, predictions, strict=True):
            self.records.append(self._record(target, prediction))

    def _unique_records(self) -> list[dict[str, Any]]:
        seen: set[int] = set()
        unique = []
        for record in self.records:
            if record["image_id"] is not None:
                if record["image_id"] in seen:
                    continue
                seen.add(record["image_id"])
            unique.append(record)
        return unique

    def confusion(self) -> Tensor:
        """The dataset's ``(C, C)`` int64 confusion matrix ``cm[gt, pred]``."""
        cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        for record in self._unique_records():
            cm += record["confusion"]
        return cm

    def compute(self) -> dict[str, float]:
        """``miou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``fw_iou``, ``boundary_f``
        and ``iou/<class>`` for the classes present in the ground truth or predictions."""
        counts = torch.zeros(4, dtype=torch.int64)
        for record in self._unique_records():
            counts += record["boundary"]
        metrics = region_metrics(self.confusion(), self.class_names)
        metrics["boundary_f"] = _f_score(counts)
        return metrics
