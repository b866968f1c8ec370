"""Single-object tracking metrics: one-pass evaluation (OTB), LaSOT's normalised precision and
GOT-10k's average overlap, with the got10k toolkit's conventions.

A tracker is started on frame 0 with the true box and predicts one box per later frame. Per
sequence (boxes ``xyxy`` in pixels, ``T`` frames):

* the first frame's prediction is taken as the ground truth (got10k's OTB experiment);
* ``IoU`` per frame; a missing prediction (non-finite box) has IoU 0 and an infinite centre
  error;
* **success curve**: for each threshold of ``linspace(0, 1, 21)``, the fraction of frames whose
  IoU is *strictly greater*; ``success_auc`` is the curve's mean;
* **precision curve**: for each threshold ``0, 1, ..., 50`` pixels, the fraction of frames whose
  centre error is at most the threshold; ``precision`` is its value at 20 pixels;
* **normalised precision** (LaSOT): the centre error divided by the true box's width and height
  per axis, its length compared with ``linspace(0, 0.5, 51)``; ``norm_precision`` is that
  curve's mean;
* frames where the target is not visible (``visible`` false: fully occluded or out of view)
  are left out of all three, as LaSOT does;
* **GOT-10k**: ``ao`` is the mean IoU over the visible frames after the first, ``sr50`` and
  ``sr75`` the fractions of those frames with IoU above 0.5 and 0.75.

Every metric is computed per sequence and then averaged over sequences (each sequence counts
once, whatever its length), overall and per attribute (OTB's ``IV, SV, OCC, DEF, MB, FM, IPR,
OPR, OV, BC, LR``) when the sequences carry them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "OTB_ATTRIBUTES",
    "PRECISION_THRESHOLDS",
    "SUCCESS_THRESHOLDS",
    "TrackingEvaluator",
    "center_errors",
    "paired_iou",
    "sequence_curves",
]

SUCCESS_THRESHOLDS = torch.linspace(0, 1, 21, dtype=torch.float64)
PRECISION_THRESHOLDS = torch.arange(0, 51, dtype=torch.float64)
NORM_PRECISION_THRESHOLDS = torch.linspace(0, 0.5, 51, dtype=torch.float64)

#: OTB-2015's attributes: illumination variation, scale variation, occlusion, deformation,
#: motion blur, fast motion, in-plane rotation, out-of-plane rotation, out of view, background
#: clutter, low resolution.
OTB_ATTRIBUTES = ("IV", "SV", "OCC", "DEF", "MB", "FM", "IPR", "OPR", "OV", "BC", "LR")


def _boxes(boxes: Tensor, name: str) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be (T, 4) xyxy boxes, got {tuple(boxes.shape)}")
    return boxes


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1[t]`` with ``boxes2[t]`` for every ``t`` (``(T, 4)`` xyxy): ``(T,)``;
    0 where either box is non-finite or empty."""
    a, b = _boxes(boxes1, "boxes1"), _boxes(boxes2, "boxes2")
    if a.shape != b.shape:
        raise ValueError(f"got {tuple(a.shape)} and {tuple(b.shape)} boxes")
    width = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    height = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))
    finite = torch.isfinite(a).all(dim=1) & torch.isfinite(b).all(dim=1)
    return torch.where(finite, iou, torch.zeros_like(iou))


def center_errors(predicted: Tensor, truth: Tensor, *, normalized: bool = False) -> Tensor:
    """Distance between the boxes' centres, pixels (``(T,)``; infinite for a non-finite
    prediction). ``normalized``: each axis divided by the true box's width / height first."""
    p, g = _boxes(predicted, "predicted"), _boxes(truth, "truth")
    offset = (p[:, :2] + p[:, 2:]) / 2 - (g[:, :2] + g[:, 2:]) / 2
    if normalized:
        offset = offset / (g[:, 2:] - g[:, :2]).clamp(min=1e-12)
    error = offset.norm(dim=1)
    return torch.where(torch.isfinite(p).all(dim=1), error, torch.full_like(error, float("inf")))


def sequence_curves(
    predicted: Tensor, truth: Tensor, visible: Tensor | None = None
) -> dict[str, Any]:
    """One sequence's curves and GOT-10k numbers (module docstring).

    Returns ``success (21,)``, ``precision (51,)``, ``norm_precision (51,)`` (float64 curves),
    ``ao``, ``sr50``, ``sr75`` and ``frames`` (the frames scored by the curves).
    """
    predicted, truth = _boxes(predicted, "predicted").clone(), _boxes(truth, "truth")
    if predicted.shape != truth.shape:
        raise ValueError(f"{len(predicted)} predicted boxes for a sequence of {len(truth)} frames")
    frames = len(truth)
    visible = (
        torch.ones(frames, dtype=torch.bool)
        if visible is None
        else torch.as_tensor(visible, dtype=torch.bool)
    )
    if visible.shape != (frames,):
        raise ValueError(f"visible must have shape ({frames},), got {tuple(visible.shape)}")
    predicted[0] = truth[0]  # the tracker is given frame 0
    iou = paired_iou(predicted, truth)[visible]
    errors = center_errors(predicted, truth)[visible]
    normalized = center_errors(predicted, truth, normalized=True)[visible]
    later = visible.clone()
    later[0] = False
    got_iou = paired_iou(predicted, truth)[later]

    def fraction(mask: Tensor) -> Tensor:
        return mask.double().mean(dim=-1) if mask.shape[-1] else torch.zeros(mask.shape[:-1])

    return {
        "success": fraction(iou[None, :] > SUCCESS_THRESHOLDS[:, None]),
        "precision": fraction(errors[None, :] <= PRECISION_THRESHOLDS[:, None]),
        "norm_precision": fraction(normalized[None, :] <= NORM_PRECISION_THRESHOLDS[:, None]),
        "ao": float(got_iou.mean()) if len(got_iou) else float("nan"),
        "sr50": float((got_iou > 0.5).double().mean()) if len(got_iou) else float("nan"),
        "sr75": float((got_iou > 0.75).double().mean()) if len(got_iou) else float("nan"),
        "frames": int(visible.sum()),
    }


def _attribute_names(attributes: Any) -> list[str]:
    """Names, or ``(11,)`` bool flags in :data:`OTB_ATTRIBUTES` order (``world-track``)."""
    if isinstance(attributes, Tensor):
        if attributes.shape != (len(OTB_ATTRIBUTES),):
            raise ValueError(
                f"attribute flags must have shape (11,), got {tuple(attributes.shape)}"
            )
        return [
            name for name, flag in zip(OTB_ATTRIBUTES, attributes.tolist(), strict=True) if flag
        ]
    return [str(a) for a in attributes]


class TrackingEvaluator:
    """Accumulate tracked sequences; :meth:`compute` gives the metrics averaged over sequences.

    ``update(targets, predictions)``: one dict per sequence. ``targets[i]["boxes"] (T, 4)``
    xyxy, optionally ``visible (T,)`` bool and ``attributes`` (names such as ``"OCC"``, or
    ``(11,)`` bool flags in :data:`OTB_ATTRIBUTES` order);
    ``predictions[i]["boxes"] (T, 4)``, optionally ``seconds_per_frame``.

    :meth:`compute` returns ``success_auc``, ``precision`` (at 20 px), ``norm_precision``,
    ``ao``, ``sr50``, ``sr75``, ``fps`` (when timed) and, per attribute present,
    ``success_auc/ATTR``, ``precision/ATTR`` and ``sequences/ATTR``. :meth:`curves` gives the
    mean curves for the success and precision plots.

    Attributes:
        records: per-sequence picklable dicts (curves as lists).
    """

    def __init__(self, *, prefix: str = "") -> None:
        self.prefix = prefix
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.records = []

    def update(self, targets: Sequence[dict], predictions: Sequence[dict]) -> None:
        if len(targets) != len(predictions):
            raise ValueError(
                f"update: got {len(targets)} target sequences and {len(predictions)} predictions"
            )
        for index, (target, prediction) in enumerate(zip(targets, predictions, strict=True)):
            for key, where, what in (
                ("boxes", target, "target"),
                ("boxes", prediction, "prediction"),
            ):
                if key not in where:
                    raise ValueError(f"update: {what} {index} has no 'boxes' (has {sorted(where)})")
            curves = sequence_curves(prediction["boxes"], target["boxes"], target.get("visible"))
            record = {
                "name": str(target.get("name", len(self.records))),
                "attributes": _attribute_names(target.get("attributes", ())),
                **{k: v.tolist() if isinstance(v, Tensor) else v for k, v in curves.items()},
            }
            if "seconds_per_frame" in prediction:
                record["seconds_per_frame"] = float(prediction["seconds_per_frame"])
            self.records.append(record)

    def curves(self, attribute: str | None = None) -> dict[str, Tensor]:
        """Mean ``success``, ``precision`` and ``norm_precision`` curves over the sequences
        (those with ``attribute``), with their thresholds."""
        chosen = [r for r in self.records if attribute is None or attribute in r["attributes"]]
        if not chosen:
            raise ValueError(f"no sequence{'' if attribute is None else ' with ' + attribute}")
        mean = {
            key: torch.tensor([r[key] for r in chosen], dtype=torch.float64).mean(dim=0)
            for key in ("success", "precision", "norm_precision")
        }
        return {
            **mean,
            "success_thresholds": SUCCESS_THRESHOLDS,
            "precision_thresholds": PRECISION_THRESHOLDS,
            "norm_precision_thresholds": NORM_PRECISION_THRESHOLDS,
        }

    def compute(self) -> dict[str, float]:
        if not self.records:
            raise ValueError("TrackingEvaluator.compute: no sequences were added")
        curves = self.curves()
        metrics = {
            "success_auc": float(curves["success"].mean()),
            "precision": float(curves["precision"][20]),
            "norm_precision": float(curves["norm_precision"].mean()),
        }
        for key in ("ao", "sr50", "sr75"):
            values = torch.tensor([r[key] for r in self.records], dtype=torch.float64)
            values = values[~values.isnan()]
            metrics[key] = float(values.mean()) if len(values) else float("nan")
        timed = [r["seconds_per_frame"] for r in self.records if "seconds_per_frame" in r]
        if timed:
            metrics["fps"] = len(timed) / sum(timed) if sum(timed) > 0 else float("inf")
        for attribute in sorted({a for r in self.records for a in r["attributes"]}):
            subset = self.curves(attribute)
            metrics[f"success_auc/{attribute}"] = float(subset["success"].mean())
            metrics[f"precision/{attribute}"] = float(subset["precision"][20])
            metrics[f"sequences/{attribute}"] = float(
                sum(attribute in r["attributes"] for r in self.records)
            )
        return {f"{self.prefix}{key}": value for key, value in metrics.items()}
