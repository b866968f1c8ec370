"""Surface-normal and intrinsic-image metrics.

**Normals** (Fouhey et al.'s protocol, used by Eigen & Fergus): over the valid pixels, the angle
``acos(clamp(<p, g>, -1, 1))`` between the unit predicted and true normals, in degrees; ``mean``,
``median``, ``rmse`` and the fractions ``a11``, ``a22``, ``a30`` under 11.25, 22.5 and 30
degrees. Predictions are normalised to unit length first.

**Intrinsic images** (``image = albedo * shading``):

* ``mse``: scale-invariant mean squared error (Grosse et al. 2009): each prediction multiplied
  by the least-squares scale ``alpha = <p, g> / <p, p>`` before the error; the mean of the
  albedo's and the shading's;
* ``lmse``: local scale-invariant MSE (Grosse et al.): the same within 20x20 windows with a
  shift of 10, summed, divided by the same sum for a prediction of zeros (so 1 is "no better
  than nothing"); the mean of albedo and shading;
* ``whdr``: the weighted human disagreement rate of Bell et al. (IIW, SIGGRAPH 2014) with
  ``delta = 0.10``: for each judgement "point 1 is darker (1) / lighter (2) / equal (E) to
  point 2" with a weight, the prediction's answer is ``1`` if ``R2 / R1 > 1 + delta``, ``2`` if
  ``R1 / R2 > 1 + delta``, else ``E``; WHDR is the weight of the disagreements over the total.
  :func:`sample_judgements` draws judgements from a true albedo (equal within the threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "IntrinsicEvaluator",
    "NormalEvaluator",
    "lmse",
    "normal_errors",
    "sample_judgements",
    "scale_invariant_mse",
    "whdr",
]


def _angles(pred: Tensor, gt: Tensor, valid: Tensor | None) -> Tensor:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[0] != 3:
        raise ValueError(
            f"pred and gt must both be (3, H, W) normals, got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}"
        )
    pred = torch.nn.functional.normalize(pred.double(), dim=0)
    gt = torch.nn.functional.normalize(gt.double(), dim=0)
    mask = torch.isfinite(gt).all(dim=0) & (gt.norm(dim=0) > 0.5)
    if valid is not None:
        mask &= valid.bool()
    cosine = (pred * gt).sum(dim=0).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cosine))[mask]


def _summary(angles: Tensor) -> dict[str, float]:
    if not len(angles):
        return {key: float("nan") for key in ("mean", "median", "rmse", "a11", "a22", "a30")}
    return {
        "mean": float(angles.mean()),
        "median": float(angles.quantile(0.5)),
        "rmse": float(angles.pow(2).mean().sqrt()),
        "a11": float((angles < 11.25).double().mean()),
        "a22": float((angles < 22.5).double().mean()),
        "a30": float((angles < 30).double().mean()),
    }


def normal_errors(pred: Tensor, gt: Tensor, valid: Tensor | None = None) -> dict[str, float]:
    """Angular errors of ``pred (3, H, W)`` against ``gt`` on ``valid`` pixels (module
    docstring); ``NaN`` when no pixel is evaluated."""
    return _summary(_angles(pred, gt, valid))


class NormalEvaluator:
    """Accumulate per-image normals; :meth:`compute` pools every valid pixel of the set (as
    Eigen & Fergus report NYUv2). Reads ``target[gt_key]``, ``prediction[pred_key]`` and the
    optional ``target[valid_key]``."""

    def __init__(
        self,
        *,
        gt_key: str = "normals",
        pred_key: str = "normals",
        valid_key: str = "normals_valid",
    ) -> None:
        self.gt_key, self.pred_key, self.valid_key = gt_key, pred_key, valid_key
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.records = []

    def update(self, targets: Sequence[dict], predictions: Sequence[dict]) -> None:
        for target, prediction in zip(targets, predictions, strict=True):
            angles = _angles(
                prediction[self.pred_key], target[self.gt_key], target.get(self.valid_key)
            )
            self.records.append({"angles": angles.float()})

    def compute(self) -> dict[str, float]:
        if not self.records:
            raise ValueError("NormalEvaluator.compute: no images were added")
        return _summary(torch.cat([r["angles"] for r in self.records]).double())


def scale_invariant_mse(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> float:
    """``mean((alpha p - g)^2)`` over ``mask`` with the best scale ``alpha`` (module docstring);
    channels are scaled together."""
    pred, gt = pred.double(), gt.double()
    if mask is None:
        mask = torch.ones(pred.shape[-2:], dtype=torch.bool)
    mask = mask.bool().expand_as(pred)
    p, g = pred[mask], gt[mask]
    if not len(p):
        return float("nan")
    alpha = float((p * g).sum() / (p * p).sum()) if float((p * p).sum()) > 0 else 0.0
    return float(((alpha * p - g) ** 2).mean())


def _local_error(
    pred: Tensor, gt: Tensor, mask: Tensor, window: int, shift: int
) -> tuple[float, float]:
    """Sum over windows of the window's scale-invariant squared error, and of ``g^2``."""
    height, width = pred.shape[-2:]
    error = total = 0.0
    for top in range(0, max(1, height - window + 1), shift):
        for left in range(0, max(1, width - window + 1), shift):
            area = (..., slice(top, top + window), slice(left, left + window))
            m = mask[area[1:]].bool().expand_as(pred[area])
            p, g = pred[area][m], gt[area][m]
            if not len(p):
                continue
            alpha = float((p * g).sum() / (p * p).sum()) if float((p * p).sum()) > 0 else 0.0
            error += float(((alpha * p - g) ** 2).sum())
            total += float((g**2).sum())
    return error, total


def lmse(
    pred_albedo: Tensor,
    pred_shading: Tensor,
    gt_albedo: Tensor,
    gt_shading: Tensor,
    mask: Tensor | None = None,
    *,
    window: int = 20,
    shift: int = 10,
) -> float:
    """Grosse et al.'s local mean squared error, normalised and averaged over albedo and
    shading (module docstring)."""
    if mask is None:
        mask = torch.ones(gt_albedo.shape[-2:], dtype=torch.bool)
    scores = []
    for pred, gt in ((pred_albedo, gt_albedo), (pred_shading, gt_shading)):
        error, total = _local_error(pred.double(), gt.double(), mask, window, shift)
        scores.append(error / total if total > 0 else float("nan"))
    return (scores[0] + scores[1]) / 2


def sample_judgements(
    albedo: Tensor,
    count: int,
    generator: torch.Generator,
    *,
    delta: float = 0.10,
    valid: Tensor | None = None,
) -> list[dict[str, Any]]:
    """``count`` pairwise judgements from a true ``albedo (3, H, W)`` (its mean over channels,
    IIW's reflectance intensity): random pixel pairs, answered by the :func:`whdr` rule with
    ``delta``, each with weight 1. ``x``, ``y`` are pixel indices."""
    intensity = albedo.double().mean(dim=0)
    height, width = intensity.shape
    mask = torch.ones(height, width, dtype=torch.bool) if valid is None else valid.bool()
    pixels = mask.nonzero()
    if len(pixels) < 2:
        raise ValueError("sample_judgements needs at least two valid pixels")
    picks = torch.randint(0, len(pixels), (count, 2), generator=generator)
    judgements = []
    for first, second in picks.tolist():
        (y1, x1), (y2, x2) = pixels[first].tolist(), pixels[second].tolist()
        answer = _answer(float(intensity[y1, x1]), float(intensity[y2, x2]), delta)
        judgements.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "darker": answer, "weight": 1.0})
    return judgements


def _answer(first: float, second: float, delta: float) -> str:
    """``"1"`` if point 1 is darker, ``"2"`` if point 2 is, else ``"E"``."""
    first, second = max(first, 1e-10), max(second, 1e-10)
    if second / first > 1 + delta:
        return "1"
    if first / second > 1 + delta:
        return "2"
    return "E"


def whdr(albedo: Tensor, judgements: Sequence[dict[str, Any]], *, delta: float = 0.10) -> float:
    """Weighted human disagreement rate of a predicted ``albedo (3, H, W)`` or ``(H, W)`` on
    ``judgements`` (module docstring; ``x``/``y`` pixel indices, ``darker`` in ``1``, ``2``,
    ``E``, ``weight``)."""
    intensity = albedo.double().mean(dim=0) if albedo.ndim == 3 else albedo.double()
    wrong = total = 0.0
    for j in judgements:
        answer = _answer(
            float(intensity[j["y1"], j["x1"]]), float(intensity[j["y2"], j["x2"]]), delta
        )
        weight = float(j.get("weight", 1.0))
        total += weight
        wrong += weight * (answer != str(j["darker"]))
    return wrong / total if total > 0 else math.nan


class IntrinsicEvaluator:
    """Per image ``mse`` (scale-invariant, albedo and shading averaged), ``lmse`` and ``whdr``;
    :meth:`compute` averages over images. WHDR uses the target's ``judgements`` (IIW) when it
    has them, else ``num_judgements`` drawn from its true ``albedo`` (seeded by the image's
    index, so every model is scored on the same pairs); images without a true albedo count for
    WHDR only."""

    def __init__(self, *, num_judgements: int = 300, delta: float = 0.10) -> None:
        self.num_judgements = num_judgements
        self.delta = delta
        self.records: list[dict[str, float]] = []

    def reset(self) -> None:
        self.records = []

    def update(self, targets: Sequence[dict], predictions: Sequence[dict]) -> None:
        for target, prediction in zip(targets, predictions, strict=True):
            albedo, shading = (
                prediction["albedo"].double().cpu(),
                prediction["shading"].double().cpu(),
            )
            record: dict[str, float] = {}
            if "albedo" in target and "shading" in target:
                true_albedo = target["albedo"].double().cpu()
                true_shading = target["shading"].double().cpu()
                if true_shading.shape[0] != shading.shape[0]:
                    true_shading = true_shading.mean(0, keepdim=True)
                    shading = shading.mean(0, keepdim=True)
                mask = target.get("mask")
                record["mse"] = (
                    scale_invariant_mse(albedo, true_albedo, mask)
                    + scale_invariant_mse(shading, true_shading, mask)
                ) / 2
                record["lmse"] = lmse(albedo, shading, true_albedo, true_shading, mask)
            judgements = target.get("judgements")
            if judgements is None and "albedo" in target:
                seed = int(target.get("image_id", len(self.records)))
                generator = torch.Generator().manual_seed(seed)
                judgements = sample_judgements(
                    target["albedo"].cpu(), self.num_judgements, generator, delta=self.delta
                )
            if judgements:
                record["whdr"] = whdr(albedo, judgements, delta=self.delta)
            self.records.append(record)

    def compute(self) -> dict[str, float]:
        if not self.records:
            raise ValueError("IntrinsicEvaluator.compute: no images were added")
        metrics = {}
        for key in ("mse", "lmse", "whdr"):
            values = [r[key] for r in self.records if key in r and not math.isnan(r[key])]
            if values:
                metrics[key] = sum(values) / len(values)
        return metrics
