"""Losses for normals and intrinsic images, apart from the networks.

* :func:`normal_loss`: the per-pixel negative cosine ``1 - <p / |p|, g>`` (Eigen & Fergus 2015
  use the dot product) or the angle itself, averaged over valid pixels.
* :func:`scale_invariant_log_loss`: Eigen et al.'s (2014) ``mean(d^2) - lambda mean(d)^2`` with
  ``d = log p - log g``: the error up to one global scale when ``lambda = 1``.
* :func:`reconstruction_loss`: ``mean((log A + log S - log I)^2)``: the prediction must explain
  the image.
* :func:`ordinal_reflectance_loss`: IIW-style pairwise judgements as squared hinges on the log
  reflectance ratio: "equal" wants ``|log R1 - log R2| <= log(1 + delta)``, "1 is darker" wants
  ``log R2 - log R1 >= log(1 + delta)`` (and symmetrically), weighted by each judgement's
  weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "normal_loss",
    "ordinal_reflectance_loss",
    "reconstruction_loss",
    "scale_invariant_log_loss",
]

_EPS = 1e-4


def _mask(mask: Tensor | None, like: Tensor) -> Tensor:
    shape = (like.shape[0], *like.shape[2:])
    return torch.ones(shape, dtype=torch.bool, device=like.device) if mask is None else mask.bool()


def normal_loss(
    pred: Tensor, gt: Tensor, valid: Tensor | None = None, *, kind: str = "cosine"
) -> Tensor:
    """``pred``, ``gt`` ``(B, 3, H, W)``; ``valid (B, H, W)``; ``kind``: ``cosine`` or
    ``angular`` (radians)."""
    if kind not in ("cosine", "angular"):
        raise ValueError(f"kind must be 'cosine' or 'angular', got {kind!r}")
    cosine = (torch.nn.functional.normalize(pred, dim=1) * gt).sum(dim=1)
    mask = _mask(valid, pred)
    values = 1 - cosine if kind == "cosine" else torch.acos(cosine.clamp(-1 + 1e-6, 1 - 1e-6))
    return values[mask].mean() if mask.any() else pred.sum() * 0


def scale_invariant_log_loss(
    pred: Tensor, gt: Tensor, mask: Tensor | None = None, *, lam: float = 1.0
) -> Tensor:
    """Per image ``mean(d^2) - lam * mean(d)^2`` over ``mask`` (``d = log p - log g``), averaged
    over the batch; ``pred``, ``gt`` ``(B, C, H, W)`` positive, ``mask (B, H, W)``."""
    m = _mask(mask, pred)[:, None].expand_as(pred).float()
    d = (torch.log(pred.clamp(min=_EPS)) - torch.log(gt.clamp(min=_EPS))) * m
    count = m.flatten(1).sum(1).clamp(min=1)
    mean = d.flatten(1).sum(1) / count
    mean_sq = d.pow(2).flatten(1).sum(1) / count
    return (mean_sq - lam * mean.pow(2)).mean()


def reconstruction_loss(
    albedo: Tensor, shading: Tensor, image: Tensor, mask: Tensor | None = None
) -> Tensor:
    """``mean((log A + log S - log I)^2)`` over ``mask``; ``shading`` may have one channel."""
    log_error = torch.log(albedo.clamp(min=_EPS)) + torch.log(shading.clamp(min=_EPS))
    log_error = log_error - torch.log(image.clamp(min=_EPS))
    m = _mask(mask, image)[:, None].expand_as(log_error)
    return log_error.pow(2)[m].mean() if m.any() else log_error.sum() * 0


def ordinal_reflectance_loss(
    albedo: Tensor, judgements: Sequence[Sequence[dict[str, Any]]], *, delta: float = 0.10
) -> Tensor:
    """The pairwise hinge loss of ``albedo (B, C, H, W)`` on ``judgements[b]`` (dicts with
    ``x1, y1, x2, y2, darker, weight``), weighted mean over all judgements."""
    log_albedo = torch.log(albedo.clamp(min=_EPS).mean(dim=1))  # (B, H, W) log intensity
    rows = [(b, j) for b, items in enumerate(judgements) for j in items]
    if not rows:
        return albedo.sum() * 0
    index = torch.tensor(
        [[b, int(j["y1"]), int(j["x1"]), int(j["y2"]), int(j["x2"])] for b, j in rows],
        device=albedo.device,
    )
    weight = torch.tensor([float(j.get("weight", 1.0)) for _, j in rows], device=albedo.device)
    answer = [str(j["darker"]) for _, j in rows]
    equal = torch.tensor([a == "E" for a in answer], device=albedo.device)
    first_darker = torch.tensor([a == "1" for a in answer], device=albedo.device)
    first = log_albedo[index[:, 0], index[:, 1], index[:, 2]]
    second = log_albedo[index[:, 0], index[:, 3], index[:, 4]]
    threshold = math.log(1 + delta)
    # "E": |r1 - r2| within the threshold; "1": r2 - r1 above it; "2": r1 - r2 above it
    margin = torch.where(first_darker, second - first, first - second)
    penalty = torch.where(equal, (first - second).abs() - threshold, threshold - margin)
    return (weight * penalty.clamp(min=0).pow(2)).sum() / weight.sum()
