"""Non-maximum suppression, backed by torchvision's compiled kernels (CPU and CUDA)."""

from __future__ import annotations

import torchvision.ops
from torch import Tensor

__all__ = ["batched_nms", "nms"]


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
