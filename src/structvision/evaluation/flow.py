"""Optical-flow metrics: end-point error, pixel-threshold accuracies and KITTI's Fl-all.

For a predicted flow ``f`` and the true flow ``g`` (both ``(2, H, W)``, pixels), the end-point
error of a pixel is ``|f - g|`` (Euclidean). Over the evaluated pixels:

* ``epe``: mean end-point error over the pixels with ground truth;
* ``epe_noc`` / ``epe_occ``: the same over the pixels that stay visible in the second frame /
  that do not (when the data says which);
* ``px1``, ``px3``, ``px5``: fraction of pixels whose error is below 1, 3, 5 pixels;
* ``fl_all``: KITTI 2015's outlier rate, the *percentage* of pixels whose error exceeds both
  3 pixels and 5% of the true flow's length.

Benchmarks pool these differently, and :class:`FlowEvaluator` follows either:

* ``"pixels"`` (MPI-Sintel, FlyingChairs): every pixel of the whole set counts once, so a large
  image weighs more than a small one;
* ``"images"`` (KITTI 2015's devkit): each image's metric first, then the mean over images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["FLOW_METRICS", "FlowEvaluator", "flow_errors"]

FLOW_METRICS = ("epe", "epe_noc", "epe_occ", "px1", "px3", "px5", "fl_all")

Convention = Literal["pixels", "images"]


def _check(pred: Tensor, gt: Tensor, mask: Tensor | None, name: str) -> None:
    if gt.ndim != 3 or gt.shape[0] != 2:
        raise ValueError(f"gt must be a flow of shape (2, H, W), got {tuple(gt.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred has shape {tuple(pred.shape)}, gt {tuple(gt.shape)}: predict the flow at the "
            "ground truth's resolution"
        )
    if mask is not None and mask.shape != gt.shape[1:]:
        raise ValueError(f"{name} must have shape {tuple(gt.shape[1:])}, got {tuple(mask.shape)}")


def _sums(pred: Tensor, gt: Tensor, valid: Tensor | None, noc: Tensor | None) -> dict[str, float]:
    """Per-image sums and pixel counts from which every metric follows."""
    _check(pred, gt, valid, "valid")
    _check(pred, gt, noc, "noc")
    pred, gt = pred.detach().double().cpu(), gt.detach().double().cpu()
    known = torch.isfinite(gt).all(dim=0)
    if valid is not None:
        known &= valid.cpu().bool()
    error = (pred - gt).norm(dim=0)
    length = gt.norm(dim=0)
    error = torch.where(known, error, 0.0)
    sums = {
        "pixels": float(known.sum()),
        "epe": float(error[known].sum()),
        "px1": float((error[known] < 1).sum()),
        "px3": float((error[known] < 3).sum()),
        "px5": float((error[known] < 5).sum()),
        "fl_all": float(((error > 3) & (error > 0.05 * length))[known].sum()),
    }
    if noc is not None:
        visible = known & noc.cpu().bool()
        hidden = known & ~noc.cpu().bool()
        sums |= {
            "pixels_noc": float(visible.sum()),
            "epe_noc": float(error[visible].sum()),
            "pixels_occ": float(hidden.sum()),
            "epe_occ": float(error[hidden].sum()),
        }
    return sums


def _metrics(sums: dict[str, float]) -> dict[str, float]:
    """Means from :func:`_sums` (NaN where no pixel counts)."""

    def ratio(total: float, count: float) -> float:
        return total / count if count > 0 else float("nan")

    metrics = {
        "epe": ratio(sums["epe"], sums["pixels"]),
        "px1": ratio(sums["px1"], sums["pixels"]),
        "px3": ratio(sums["px3"], sums["pixels"]),
        "px5": ratio(sums["px5"], sums["pixels"]),
        "fl_all": 100.0 * ratio(sums["fl_all"], sums["pixels"]),
    }
    if "pixels_noc" in sums:
        metrics["epe_noc"] = ratio(sums["epe_noc"], sums["pixels_noc"])
        metrics["epe_occ"] = ratio(sums["epe_occ"], sums["pixels_occ"])
    return metrics


def flow_errors(
    pred: Tensor, gt: Tensor, valid: Tensor | None = None, noc: Tensor | None = None
) -> dict[str, float]:
    """The flow metrics of one image (module docstring).

    Args:
        pred: ``(2, H, W)`` predicted flow, pixels.
        gt: ``(2, H, W)`` true flow; non-finite values count as unknown.
        valid: ``(H, W)`` bool, where ground truth exists (default: where ``gt`` is finite).
        noc: ``(H, W)`` bool, the pixels visible in the second frame; adds ``epe_noc`` and
            ``epe_occ`` (``NaN`` when no pixel is occluded).

    Returns:
        ``epe``, ``px1``, ``px3``, ``px5`` (fractions), ``fl_all`` (percent), and with ``noc``
        also ``epe_noc``, ``epe_occ``. ``NaN`` where no pixel is evaluated.
    """
    return _metrics(_sums(pred, gt, valid, noc))


class FlowEvaluator:
    """Accumulate per-image flow predictions; :meth:`compute` gives the pooled metrics.

    Per image: ``gt = target[gt_key]``, ``pred = prediction[pred_key]`` (``(2, H, W)``, the same
    size), the pixels with ground truth ``target[valid_key]`` (when present; else every finite
    pixel) and the visible ones ``target[noc_key]`` (when present: ``epe_noc``/``epe_occ``).
    The ``world-flow`` generator gives ground truth everywhere and ``valid`` = visible in frame 2.

    Args:
        convention: ``"pixels"`` pools every pixel of the set (Sintel), ``"images"`` averages
            per-image metrics (KITTI); see the module docstring.
        gt_key, pred_key: the flow keys of targets and predictions.
        valid_key: the targets' optional "ground truth exists" mask.
        noc_key: the targets' optional "visible in the second frame" mask.
        prefix: prepended to every key of :meth:`compute` (e.g. ``"flow/"``).

    Attributes:
        records: per-image picklable dicts (``image_id`` and the sums of :func:`_sums`).
    """

    def __init__(
        self,
        *,
        convention: Convention = "pixels",
        gt_key: str = "flow",
        pred_key: str = "flow",
        valid_key: str = "flow_valid",
        noc_key: str = "valid",
        prefix: str = "",
    ) -> None:
        if convention not in ("pixels", "images"):
            raise ValueError(f"convention must be 'pixels' or 'images', got {convention!r}")
        self.convention = convention
        self.gt_key = gt_key
        self.pred_key = pred_key
        self.valid_key = valid_key
        self.noc_key = noc_key
        self.prefix = prefix
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.records = []

    def update(self, targets: Sequence[dict[str, Tensor]], predictions: Sequence[dict]) -> None:
        if len(targets) != len(predictions):
            raise ValueError(
                f"update: got {len(targets)} targets and {len(predictions)} predictions"
            )
        for target, prediction in zip(targets, predictions, strict=True):
            for key, where in ((self.gt_key, target), (self.pred_key, prediction)):
                if key not in where:
                    raise ValueError(f"update: missing {key!r} (has {sorted(where)})")
            sums = _sums(
                prediction[self.pred_key],
                target[self.gt_key],
                target.get(self.valid_key),
                target.get(self.noc_key),
            )
            image_id = target.get("image_id")
            self.records.append({"image_id": None if image_id is None else int(image_id), **sums})

    def compute(self) -> dict[str, float]:
        if not self.records:
            raise ValueError("FlowEvaluator.compute: no images were added")
        if self.convention == "pixels":
            keys = set.intersection(*(set(r) for r in self.records)) - {"image_id"}
            pooled = {key: sum(r[key] for r in self.records) for key in keys}
            metrics = _metrics(pooled)
        else:
            per_image = [_metrics(r) for r in self.records]
            keys = set.intersection(*(set(m) for m in per_image))
            metrics = {}
            for key in keys:
                values = torch.tensor([m[key] for m in per_image], dtype=torch.float64)
                values = values[~values.isnan()]
                metrics[key] = float(values.mean()) if len(values) else float("nan")
        ordered = [key for key in FLOW_METRICS if key in metrics]
        return {f"{self.prefix}{key}": metrics[key] for key in ordered}
