"""Non-maximum suppression: greedy NMS backed by torchvision's compiled kernels (CPU and CUDA),
and Gaussian soft-NMS (Bodla et al. 2017)."""

from __future__ import annotations

import torch
import torchvision.ops
from torch import Tensor

__all__ = ["batched_nms", "batched_soft_nms", "nms"]


def _check_nms_inputs(boxes: Tensor, scores: Tensor) -> None:
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = getattr(boxes, "shape", type(boxes).__name__)
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(shape)}")
    if not isinstance(scores, Tensor) or scores.shape != boxes.shape[:1]:
        shape = getattr(scores, "shape", type(scores).__name__)
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {tuple(shape)}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Boxes are visited in decreasing score order; a box is kept unless its IoU with an already
    kept box is strictly greater than ``iou_threshold``.

    Args:
        boxes: ``(N, 4)`` ``xyxy`` boxes in pixels (``x2 >= x1``, ``y2 >= y1``).
        scores: ``(N,)`` scores, higher is better.
        iou_threshold: suppress boxes overlapping a kept box with IoU ``> iou_threshold``.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, in decreasing score order.
    """
    _check_nms_inputs(boxes, scores)
    return torchvision.ops.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression applied independently within each group (class or image).

    Boxes with different ``idxs`` never suppress each other; the result equals running
    :func:`nms` per group and merging the kept indices by decreasing score.

    Args:
        boxes: ``(N, 4)`` ``xyxy`` boxes in pixels.
        scores: ``(N,)`` scores.
        idxs: ``(N,)`` integer group of each box (e.g. its class label).
        iou_threshold: suppress boxes overlapping a kept box of the same group with IoU
            ``> iou_threshold``.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, in decreasing score order.
    """
    _check_nms_inputs(boxes, scores)
    if not isinstance(idxs, Tensor) or idxs.shape != boxes.shape[:1]:
        shape = getattr(idxs, "shape", type(idxs).__name__)
        raise ValueError(f"idxs must have shape ({boxes.shape[0]},), got {tuple(shape)}")
    return torchvision.ops.batched_nms(boxes, scores, idxs, float(iou_threshold))


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    sigma: float,
    *,
    max_kept: int | None = None,
    min_score: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS (Bodla et al. 2017) within each group (class or image).

    Instead of removing the boxes that overlap a kept box, soft-NMS lowers their scores: the
    best remaining box is kept, and every remaining box of its group is multiplied by
    ``exp(-IoU**2 / sigma)`` with it; repeat. A second detection of the same object falls far
    down the ranking, while a neighbouring object that overlaps it keeps most of its score
    instead of being deleted. Boxes whose score falls below ``min_score`` are dropped.

    Args:
        boxes: ``(N, 4)`` ``xyxy`` boxes in pixels.
        scores: ``(N,)`` scores.
        idxs: ``(N,)`` integer group of each box; groups never lower each other's scores.
        sigma: the Gaussian's width (the paper's 0.5); smaller suppresses harder.
        max_kept: stop after this many boxes (all by default).
        min_score: drop boxes whose lowered score falls below it.

    Returns:
        ``(keep (K,) int64, kept_scores (K,))``: the kept boxes in the order they were kept
        (by decreasing lowered score) and their lowered scores.
    """
    _check_nms_inputs(boxes, scores)
    if not isinstance(idxs, Tensor) or idxs.shape != boxes.shape[:1]:
        shape = getattr(idxs, "shape", type(idxs).__name__)
        raise ValueError(f"idxs must have shape ({boxes.shape[0]},), got {tuple(shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    same_group = idxs[:, None] == idxs[None, :]
    decay = torch.exp(-torchvision.ops.box_iou(boxes, boxes).square() / sigma)
    decay = torch.where(same_group, decay, torch.ones_like(decay))  # (N, N)
    current = scores.clone()
    alive = current >= min_score
    keep, kept_scores = [], []
    limit = len(boxes) if max_kept is None else max_kept
    while len(keep) < limit and bool(alive.any()):
        best = int(torch.where(alive, current, current.new_tensor(-float("inf"))).argmax())
        keep.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        current = current * decay[best]
        alive &= current >= min_score
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device), scores[:0]
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device), torch.stack(kept_scores)
