"""Pascal VOC detection mAP, with the semantics of the official VOC devkit.

:func:`voc_ap` turns one class's precision/recall curve into an average precision:
VOC2007's 11-point interpolated AP, or (VOC2010 and later) the area under the monotone
precision envelope.

:class:`VOCEvaluator` follows the devkit's matching rules, per class:

* detections of all images are ranked by score (ties keep the order they were given in);
* a detection is matched to the ground-truth box of its class in its image with which it has
  the highest IoU; it is a true positive when that IoU is *strictly greater* than
  ``iou_threshold`` and the box has not been matched before (a later match is a false
  positive, so duplicates count against precision); everything else is a false positive;
* when the best ground-truth box is ``difficult``, the detection is neither a true nor a false
  positive, and difficult boxes do not count in the number of positives.

IoU is computed on continuous xyxy coordinates (``area = (x2 - x1) * (y2 - y1)``), without
the devkit's ``+1``: the devkit works on VOC's 1-based inclusive pixel indices, where a box's
width is ``xmax - xmin + 1``. :class:`~structvision.data.voc.VOCDetection` converts those to
continuous boxes ``[xmin - 1, ymin - 1, xmax, ymax]``, whose plain widths equal the devkit's,
so the IoUs (and the APs) agree when predictions use the same continuous convention.

Distributed use: ``update`` stores compact CPU per-image records in ``records`` (plain dicts of
small tensors, picklable). Gather them from every rank, concatenate them into one evaluator's
``records`` and call ``compute`` there. A record whose ``image_id`` was seen before is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from structvision.evaluation.records import unique_by_image_id

__all__ = ["VOCEvaluator", "voc_ap"]

BACKGROUND = "__background__"
# Detection outcomes.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, -1


def _as_curve(values: Any, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def voc_ap(recall: Any, precision: Any, *, use_07_metric: bool) -> float:
    """Average precision of one precision/recall curve.

    Args:
        recall: ``(D,)`` recall after each ranked detection, non-decreasing, in ``[0, 1]``
            (array, tensor or list).
        precision: ``(D,)`` precision after each ranked detection.
        use_07_metric: ``True``: VOC2007's 11-point interpolated AP, the mean over
            ``t = 0, 0.1, ..., 1`` of the highest precision at recall ``>= t`` (0 if none).
            The thresholds are exactly ``k / 10``; the devkit's Python port builds them with
            ``np.arange(0, 1.1, 0.1)``, which is 1 ulp higher at 0.3, 0.6 and 0.7 and only
            differs when a recall equals one of those exactly.
            ``False``: the area under the precision envelope
            ``p_interp(r) = max(precision[recall >= r])`` (VOC2010+).

    Returns:
        AP in ``[0, 1]``; 0.0 for an empty curve.
    """
    recall = _as_curve(recall, "recall")
    precision = _as_curve(precision, "precision")
    if recall.shape != precision.shape:
        raise ValueError(
            f"recall and precision must have the same shape, got {recall.shape} and "
            f"{precision.shape}"
        )
    if np.any(np.diff(recall) < 0):
        raise ValueError("recall must be non-decreasing (ranked detections)")
    if recall.size == 0:
        return 0.0
    if use_07_metric:
        return _eleven_point_ap(recall, precision)
    return _envelope_area_ap(recall, precision)


def _eleven_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    thresholds = np.arange(11) / 10.0  # (11,)
    reached = recall[None, :] >= thresholds[:, None]  # (11, D)
    best = np.where(reached, precision[None, :], 0.0).max(axis=1)  # (11,)
    return float(best.sum() / 11.0)


def _envelope_area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    padded_recall = np.concatenate([[0.0], recall, [1.0]])  # (D + 2,)
    padded_precision = np.concatenate([[0.0], precision, [0.0]])  # (D + 2,)
    envelope = np.maximum.accumulate(padded_precision[::-1])[::-1]  # max to the right
    widths = np.diff(padded_recall)  # (D + 1,)
    return float(np.sum(widths * envelope[1:]))


def _pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``(A, 4)`` x ``(B, 4)`` continuous xyxy -> ``(A, B)`` IoU (0 where the union is 0)."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (A, B, 2)
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (A, B, 2)
    wh = np.clip(bottom_right - top_left, 0.0, None)  # (A, B, 2)
    intersection = wh[..., 0] * wh[..., 1]  # (A, B)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])  # (A,)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])  # (B,)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _match_image(record: dict[str, Any], iou_threshold: float) -> np.ndarray:
    """Outcome (TRUE_POSITIVE / FALSE_POSITIVE / IGNORED) of each prediction of one image.

    Predictions are visited by decreasing score (stable), as in the dataset-wide ranking:
    within one image that ranking is the same, so matching image by image is exact.
    """
    pred_boxes = record["pred_boxes"].numpy().astype(np.float64)  # (D, 4)
    pred_labels = record["pred_labels"].numpy()  # (D,)
    gt_boxes = record["gt_boxes"].numpy().astype(np.float64)  # (G, 4)
    gt_labels = record["gt_labels"].numpy()  # (G,)
    gt_difficult = record["gt_difficult"].numpy()  # (G,)
    outcomes = np.full(len(pred_boxes), FALSE_POSITIVE, dtype=np.int8)  # (D,)
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return outcomes
    iou = _pairwise_iou(pred_boxes, gt_boxes)  # (D, G)
    iou[pred_labels[:, None] != gt_labels[None, :]] = -1.0  # other classes never match
    gt_matched = np.zeros(len(gt_boxes), dtype=bool)  # (G,)
    order = np.argsort(-record["pred_scores"].numpy(), kind="stable")
    for pred_idx in order:
        matched_idx = int(iou[pred_idx].argmax())
        if iou[pred_idx, matched_idx] <= iou_threshold:
            continue
        if gt_difficult[matched_idx]:
            outcomes[pred_idx] = IGNORED
        elif not gt_matched[matched_idx]:
            outcomes[pred_idx] = TRUE_POSITIVE
            gt_matched[matched_idx] = True
    return outcomes


def _cpu_boxes(boxes: Tensor, name: str) -> Tensor:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        if boxes.numel() == 0:
            return torch.zeros((0, 4), dtype=torch.float32)
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    boxes = boxes.detach().cpu()
    return boxes if boxes.dtype == torch.float64 else boxes.to(torch.float32)


def _cpu_vector(values: Tensor, length: int, dtype: torch.dtype, name: str) -> Tensor:
    values = values.detach().cpu().reshape(-1)
    if values.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(values.shape)}")
    return values.to(dtype)


class VOCEvaluator:
    """Accumulate detections and compute the Pascal VOC mAP.

    Args:
        class_names: label -> name, ``class_names[0]`` being ``"__background__"`` (pass the
            dataset's ``class_names``, e.g. ``structvision.data.voc.VOC_CLASSES``). Labels
            are ``1..len(class_names) - 1``.
        iou_threshold: a detection is a true positive when its IoU with a ground-truth box is
            strictly greater than this (VOC: 0.5).
        use_07_metric: VOC2007's 11-point AP (``True``) or the area under the precision
            envelope (``False``, VOC2010+); see :func:`voc_ap`.

    Attributes:
        records: per-image picklable records (dicts of CPU tensors: ``image_id`` int,
            ``gt_boxes (G, 4)``, ``gt_labels (G,)``, ``gt_difficult (G,)`` bool,
            ``pred_boxes (D, 4)``, ``pred_labels (D,)``, ``pred_scores (D,)``).
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        iou_threshold: float = 0.5,
        use_07_metric: bool = True,
    ) -> None:
        names = tuple(class_names)
        if len(names) < 2 or names[0] != BACKGROUND:
            raise ValueError(
                f"class_names must start with {BACKGROUND!r} followed by at least one class, "
                f"got {names[:3]}..."
            )
        if not 0.0 <= iou_threshold < 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
        self.class_names = names
        self.iou_threshold = float(iou_threshold)
        self.use_07_metric = use_07_metric
        self.records: list[dict[str, Any]] = []

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (labels are 1..K)."""
        return len(self.class_names) - 1

    def reset(self) -> None:
        """Forget all records."""
        self.records = []

    def _check_labels(self, labels: Tensor, name: str) -> None:
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > self.num_classes):
            raise ValueError(
                f"{name} must be in 1..{self.num_classes}, got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )

    def _record(self, target: dict[str, Tensor], prediction: dict[str, Tensor]) -> dict:
        for key in ("boxes", "labels", "image_id"):
            if key not in target:
                raise ValueError(f"target is missing {key!r} (has {sorted(target)})")
        for key in ("boxes", "labels", "scores"):
            if key not in prediction:
                raise ValueError(f"prediction is missing {key!r} (has {sorted(prediction)})")
        gt_boxes = _cpu_boxes(target["boxes"], "target['boxes']")  # (G, 4)
        pred_boxes = _cpu_boxes(prediction["boxes"], "prediction['boxes']")  # (D, 4)
        num_gt, num_pred = len(gt_boxes), len(pred_boxes)
        difficult = target.get("difficult", torch.zeros(num_gt, dtype=torch.bool))
        record = {
            "image_id": int(target["image_id"]),
            "gt_boxes": gt_boxes,
            "gt_labels": _cpu_vector(target["labels"], num_gt, torch.int64, "target['labels']"),
            "gt_difficult": _cpu_vector(difficult, num_gt, torch.bool, "target['difficult']"),
            "pred_boxes": pred_boxes,
            "pred_labels": _cpu_vector(
                prediction["labels"], num_pred, torch.int64, "prediction['labels']"
            ),
            "pred_scores": _cpu_vector(
                prediction["scores"], num_pred, torch.float64, "prediction['scores']"
            ),
        }
        self._check_labels(record["gt_labels"], "target['labels']")
        self._check_labels(record["pred_labels"], "prediction['labels']")
        return record

    def update(
        self, targets: Sequence[dict[str, Tensor]], predictions: Sequence[dict[str, Tensor]]
    ) -> None:
        """Add one batch. ``targets[i]``: ``boxes (G, 4)`` xyxy pixels, ``labels (G,)``,
        optional ``difficult (G,)`` bool, ``image_id``; ``predictions[i]``: ``boxes (D, 4)``
        xyxy pixels (same coordinates as the targets), ``labels (D,)``, ``scores (D,)``."""
        if len(targets) != len(predictions):
            raise ValueError(
                f"update: got {len(targets)} targets and {len(predictions)} predictions"
            )
        for target, prediction in zip(targets, predictions, strict=True):
            self.records.append(self._record(target, prediction))

    def average_precisions(self) -> dict[int, float]:
        """AP per label, for the labels with at least one non-difficult ground-truth box."""
        records = unique_by_image_id(self.records)
        num_positives = np.zeros(self.num_classes + 1, dtype=np.int64)  # (K + 1,)
        scores, labels, outcomes = [], [], []
        for record in records:
            easy_labels = record["gt_labels"][~record["gt_difficult"]].numpy()
            num_positives += np.bincount(easy_labels, minlength=self.num_classes + 1)
            scores.append(record["pred_scores"].numpy())
            labels.append(record["pred_labels"].numpy())
            outcomes.append(_match_image(record, self.iou_threshold))
        all_scores = np.concatenate(scores) if scores else np.zeros(0)  # (D_total,)
        all_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        all_outcomes = np.concatenate(outcomes) if outcomes else np.zeros(0, dtype=np.int8)
        ap = {}
        for label in range(1, self.num_classes + 1):
            if num_positives[label] == 0:
                continue
            selected = all_labels == label
            ap[label] = self._class_ap(
                all_scores[selected], all_outcomes[selected], int(num_positives[label])
            )
        return ap

    def _class_ap(self, scores: np.ndarray, outcomes: np.ndarray, num_positives: int) -> float:
        ranked = outcomes[np.argsort(-scores, kind="stable")]
        ranked = ranked[ranked != IGNORED]  # (D',) ignored detections leave the curve as is
        true_positives = np.cumsum(ranked == TRUE_POSITIVE)
        false_positives = np.cumsum(ranked == FALSE_POSITIVE)
        recall = true_positives / num_positives
        precision = true_positives / np.maximum(true_positives + false_positives, 1)
        return voc_ap(recall, precision, use_07_metric=self.use_07_metric)

    def compute(self) -> dict[str, float]:
        """``{"voc/mAP": ..., "voc/AP/<class>": ...}``; per-class keys only for classes with at
        least one non-difficult ground-truth box, the mAP their mean (-1.0 when there is none,
        pycocotools' "no ground truth" value)."""
        ap = self.average_precisions()
        metrics = {"voc/mAP": float(np.mean(list(ap.values()))) if ap else -1.0}
        for label, value in ap.items():
            metrics[f"voc/AP/{self.class_names[label]}"] = value
        return metrics
