"""Monocular depth metrics, computed exactly as monodepth2's ``evaluate_depth.py`` does.

For one image, the evaluated pixels are those whose ground truth is finite and lies strictly
inside ``(min_depth, max_depth)`` (1e-3 and 80 m by default), further restricted by an
optional validity mask and crop. The prediction, at those pixels, is (in this order) multiplied
by a fixed ``scale``, optionally median-scaled (``pred *= median(gt) / median(pred)``), clamped
to ``[min_depth, max_depth]``, and compared with the ground truth in float64
(monodepth2's ``compute_errors``):

* ``abs_rel`` = ``mean(|gt - pred| / gt)``; ``sq_rel`` = ``mean((gt - pred)² / gt)``;
* ``rmse`` = ``sqrt(mean((gt - pred)²))``; ``rmse_log`` = ``sqrt(mean((log gt - log pred)²))``;
* ``a1``, ``a2``, ``a3`` = fraction of pixels with ``max(gt / pred, pred / gt)`` below
  ``1.25``, ``1.25²``, ``1.25³``.

Dataset values are the *mean over images* of the per-image values, as in monodepth2 (not a
mean over all pixels pooled together).

Crops (see :func:`garg_crop_mask`, :func:`eigen_crop_mask`) use the fractions of the image
size that monodepth2 uses, truncated to integers the same way.

Evaluating sparse predictions (e.g. a stereo matcher that leaves holes): give the evaluator a
``pred_valid_key``; the prediction's validity mask is then AND-ed into the evaluated pixels and
``density`` (mean over images of ``|pred valid ∧ gt valid| / |gt valid|``) is reported, so the
errors describe the pixels the method fills and ``density`` how many those are.

Distributed use: ``update`` stores one small record per image (``image_id``, the number of
evaluated pixels and the 7 metrics, plus ``median_ratio`` / ``density`` when used, never the
depth maps); the concatenated records of several evaluators give the same result as one
evaluator that saw everything. A record whose ``image_id`` was seen before is ignored (a
distributed sampler may repeat images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "METRIC_NAMES",
    "DepthEvaluator",
    "depth_errors",
    "eigen_crop_mask",
    "garg_crop_mask",
]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

ArrayLike = Tensor | np.ndarray


def _to_numpy(values: ArrayLike | float, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _crop_mask(height: int, width: int, fractions: Sequence[float]) -> np.ndarray:
    top, bottom, left, right = np.array(
        [
            fractions[0] * height,
            fractions[1] * height,
            fractions[2] * width,
            fractions[3] * width,
        ]
    ).astype(np.int32)
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def garg_crop_mask(height: int, width: int) -> Tensor:
    """``(H, W)`` bool mask of the Garg et al. crop, as monodepth2 computes it: rows
    ``int(0.40810811 H) .. int(0.99189189 H)``, columns ``int(0.03594771 W) ..
    int(0.96405229 W)`` (end exclusive)."""
    fractions = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
    return torch.from_numpy(_crop_mask(height, width, fractions))


def eigen_crop_mask(height: int, width: int) -> Tensor:
    """``(H, W)`` bool mask of the Eigen et al. crop, as monodepth2 computes it: rows
    ``int(0.3324324 H) .. int(0.91351351 H)``, columns ``int(0.0359477 W) ..
    int(0.96405229 W)`` (end exclusive)."""
    fractions = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
    return torch.from_numpy(_crop_mask(height, width, fractions))


CROPS = {"garg": garg_crop_mask, "eigen": eigen_crop_mask}


def _valid_pixels(
    gt: np.ndarray, min_depth: float, max_depth: float, mask: np.ndarray | None
) -> np.ndarray:
    """Bool array of the pixels of ``gt`` that are evaluated."""
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        valid &= mask
    return valid


def _compute_errors(
    gt: np.ndarray, pred: np.ndarray, min_depth: float, max_depth: float
) -> dict[str, float]:
    """monodepth2's ``compute_errors`` on 1-D float64 arrays of evaluated pixels; ``pred`` is
    clamped to ``[min_depth, max_depth]`` first."""
    pred = np.clip(pred, min_depth, max_depth)
    thresh = np.maximum(gt / pred, pred / gt)
    a1 = (thresh < 1.25).mean()
    a2 = (thresh < 1.25**2).mean()
    a3 = (thresh < 1.25**3).mean()
    rmse = np.sqrt(((gt - pred) ** 2).mean())
    rmse_log = np.sqrt(((np.log(gt) - np.log(pred)) ** 2).mean())
    abs_rel = (np.abs(gt - pred) / gt).mean()
    sq_rel = ((gt - pred) ** 2 / gt).mean()
    values = (abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3)
    return {name: float(value) for name, value in zip(METRIC_NAMES, values, strict=True)}


def _check_range(min_depth: float, max_depth: float) -> None:
    if not 0 < min_depth < max_depth:
        raise ValueError(
            f"need 0 < min_depth < max_depth, got min_depth={min_depth!r}, max_depth={max_depth!r}"
        )


def depth_errors(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    mask: ArrayLike | None = None,
) -> dict[str, float]:
    """The 7 monodepth2 metrics of one prediction (see the module docstring).

    Args:
        gt: ground-truth depth, any shape (``(H, W)``), metres; pixels that are not finite or
            not strictly inside ``(min_depth, max_depth)`` are skipped.
        pred: predicted depth of the same shape; clamped to ``[min_depth, max_depth]``.
        min_depth: lower bound of the evaluated (and clamping) range.
        max_depth: upper bound of the evaluated (and clamping) range.
        mask: optional bool array of the same shape; only ``True`` pixels are evaluated.

    Returns:
        ``abs_rel``, ``sq_rel``, ``rmse``, ``rmse_log``, ``a1``, ``a2``, ``a3``.

    Raises:
        ValueError: on shape mismatch or when no pixel is valid.
    """
    _check_range(min_depth, max_depth)
    gt_np, pred_np = _to_numpy(gt), _to_numpy(pred)
    if gt_np.shape != pred_np.shape:
        raise ValueError(
            f"gt and pred must have the same shape, got gt {gt_np.shape} and pred {pred_np.shape}"
        )
    mask_np = None
    if mask is not None:
        mask_np = _to_numpy(mask, dtype=bool)
        if mask_np.shape != gt_np.shape:
            raise ValueError(
                f"mask must have the shape of gt, got mask {mask_np.shape} and gt {gt_np.shape}"
            )
    valid = _valid_pixels(gt_np, min_depth, max_depth, mask_np)
    if not valid.any():
        raise ValueError(
            f"no valid pixels: no finite ground truth in ({min_depth}, {max_depth}) inside the mask"
        )
    return _compute_errors(gt_np[valid], pred_np[valid], min_depth, max_depth)


def _as_map(value: Any, name: str) -> Tensor:
    """``(H, W)`` or ``(1, H, W)`` tensor / array -> ``(H, W)`` CPU tensor."""
    tensor = torch.as_tensor(value).detach().cpu()
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be (H, W) or (1, H, W), got {tuple(tensor.shape)}")
    return tensor


class DepthEvaluator:
    """Accumulate per-image depth predictions and compute monodepth2's metrics.

    Per image: ``gt = target[gt_key]`` and ``pred = prediction[pred_key]``, each ``(H, W)`` or
    ``(1, H, W)``. A prediction of another size is resized bilinearly
    (``align_corners=False``) to the ground truth's size; note that monodepth2 resizes the
    *disparity* and inverts it afterwards, whereas this evaluator resizes the *depth* it is
    given. The evaluated pixels are the finite ground truth in ``(min_depth, max_depth)``, AND
    ``target[valid_key]`` when present, AND the crop, AND ``prediction[pred_valid_key]`` when
    ``pred_valid_key`` is set and present (resized with nearest neighbour if needed). Then
    ``pred *= scale``, optional median scaling, clamping, and :func:`depth_errors`.

    Args:
        min_depth: lower bound of the evaluated range (and of the clamp), metres.
        max_depth: upper bound of the evaluated range (and of the clamp), metres.
        crop: ``"garg"``, ``"eigen"`` or ``None`` (no crop).
        median_scaling: rescale each prediction by ``median(gt) / median(pred)`` over the
            evaluated pixels (monocular, scale-ambiguous methods).
        scale: fixed factor applied to every prediction first (e.g. monodepth2's
            ``STEREO_SCALE_FACTOR = 5.4``).
        gt_key: the targets' depth key.
        pred_key: the predictions' depth key.
        valid_key: the targets' optional ``(H, W)`` bool validity key.
        pred_valid_key: the predictions' optional ``(H, W)`` bool validity key (sparse
            methods); when set, ``density`` is reported.
        prefix: prepended to every key of :meth:`compute` (e.g. ``"depth/"``).

    Attributes:
        records: per-image picklable dicts: ``image_id`` (int or ``None``), ``num_pixels``
            (int, evaluated pixels), the 7 metrics (floats), plus ``median_ratio`` with median
            scaling and ``density`` when the prediction carried ``pred_valid_key``.
    """

    def __init__(
        self,
        *,
        min_depth: float = 1e-3,
        max_depth: float = 80.0,
        crop: Literal["garg", "eigen"] | None = None,
        median_scaling: bool = False,
        scale: float = 1.0,
        gt_key: str = "depth",
        pred_key: str = "depth",
        valid_key: str = "valid",
        pred_valid_key: str | None = None,
        prefix: str = "",
    ) -> None:
        _check_range(min_depth, max_depth)
        if crop is not None and crop not in CROPS:
            raise ValueError(f"crop must be 'garg', 'eigen' or None, got {crop!r}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.crop = crop
        self.median_scaling = bool(median_scaling)
        self.scale = float(scale)
        self.gt_key = gt_key
        self.pred_key = pred_key
        self.valid_key = valid_key
        self.pred_valid_key = pred_valid_key
        self.prefix = prefix
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget all records."""
        self.records = []

    def _record(self, target: Mapping[str, Any], prediction: Mapping[str, Any]) -> dict:
        if self.gt_key not in target:
            raise ValueError(f"target is missing {self.gt_key!r} (has {sorted(target)})")
        if self.pred_key not in prediction:
            raise ValueError(f"prediction is missing {self.pred_key!r} (has {sorted(prediction)})")
        gt = _as_map(target[self.gt_key], f"target[{self.gt_key!r}]").double()
        pred = _as_map(prediction[self.pred_key], f"prediction[{self.pred_key!r}]").double()
        size = tuple(gt.shape)
        if tuple(pred.shape) != size:
            pred = F.interpolate(pred[None, None], size=size, mode="bilinear", align_corners=False)
            pred = pred[0, 0]
        mask = torch.ones(size, dtype=torch.bool)
        if self.valid_key in target and target[self.valid_key] is not None:
            gt_valid = _as_map(target[self.valid_key], f"target[{self.valid_key!r}]").bool()
            if tuple(gt_valid.shape) != size:
                raise ValueError(
                    f"target[{self.valid_key!r}] must have the ground truth's shape {size}, "
                    f"got {tuple(gt_valid.shape)}"
                )
            mask &= gt_valid
        if self.crop is not None:
            mask &= CROPS[self.crop](*size)
        gt_np = gt.numpy()
        gt_valid_np = _valid_pixels(gt_np, self.min_depth, self.max_depth, mask.numpy())
        valid_np = gt_valid_np
        density = None
        if self.pred_valid_key is not None and prediction.get(self.pred_valid_key) is not None:
            pred_valid = _as_map(
                prediction[self.pred_valid_key], f"prediction[{self.pred_valid_key!r}]"
            ).bool()
            if tuple(pred_valid.shape) != size:
                pred_valid = F.interpolate(
                    pred_valid[None, None].float(), size=size, mode="nearest"
                )[0, 0].bool()
            valid_np = gt_valid_np & pred_valid.numpy()
            num_gt = int(gt_valid_np.sum())
            density = float(valid_np.sum()) / num_gt if num_gt else 0.0
        image_id = target.get("image_id")
        if not valid_np.any():
            raise ValueError(
                f"image {image_id!r}: no valid pixels (no finite ground truth in "
                f"({self.min_depth}, {self.max_depth}) inside the masks)"
            )
        gt_pixels = gt_np[valid_np]
        pred_pixels = pred.numpy()[valid_np] * self.scale
        record: dict[str, Any] = {
            "image_id": None if image_id is None else int(image_id),
            "num_pixels": int(valid_np.sum()),
        }
        if self.median_scaling:
            ratio = float(np.median(gt_pixels) / np.median(pred_pixels))
            pred_pixels = pred_pixels * ratio
            record["median_ratio"] = ratio
        record.update(_compute_errors(gt_pixels, pred_pixels, self.min_depth, self.max_depth))
        if density is not None:
            record["density"] = density
        return record

    def update(
        self, targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]
    ) -> None:
        """Add one batch: ``targets[i][gt_key]`` and ``predictions[i][pred_key]`` are
        ``(H, W)`` (or ``(1, H, W)``) depth maps in metres."""
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

    def compute(self) -> dict[str, float]:
        """Mean over images of the 7 metrics, ``num_images``, plus ``median_ratio_mean`` and
        ``median_ratio_std`` (population std) with median scaling and ``density`` when
        predictions carried ``pred_valid_key``; every key is prefixed with ``prefix``.

        Raises:
            ValueError: when no image was evaluated.
        """
        records = self._unique_records()
        if not records:
            raise ValueError("DepthEvaluator.compute: no images were evaluated")
        metrics = {
            name: float(np.mean([record[name] for record in records])) for name in METRIC_NAMES
        }
        metrics["num_images"] = float(len(records))
        ratios = [record["median_ratio"] for record in records if "median_ratio" in record]
        if ratios:
            metrics["median_ratio_mean"] = float(np.mean(ratios))
            metrics["median_ratio_std"] = float(np.std(ratios))
        densities = [record["density"] for record in records if "density" in record]
        if densities:
            metrics["density"] = float(np.mean(densities))
        return {f"{self.prefix}{name}": value for name, value in metrics.items()}
