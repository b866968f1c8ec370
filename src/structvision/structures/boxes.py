"""Axis-aligned box utilities and the R-CNN box coder.

Boxes are float tensors in absolute pixel coordinates. The canonical format is ``xyxy``:
``(x1, y1, x2, y2)`` with ``x`` to the right and ``y`` down, ``x2 >= x1`` and ``y2 >= y1``.
Widths are ``x2 - x1`` (continuous coordinates, no ``+ 1``).

The plain geometry functions are thin, validated wrappers over :mod:`torchvision.ops`.
:class:`BoxCoder` reproduces torchvision's detection ``BoxCoder`` operation by operation so
that its outputs are bit-identical to torchvision's.
"""

from __future__ import annotations

import math

import torch
import torchvision.ops
from torch import Tensor

__all__ = [
    "BOX_FORMATS",
    "BoxCoder",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "remove_small_boxes",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_boxes_2d(boxes: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``boxes`` is a floating ``(N, 4)`` tensor."""
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a Tensor of shape (N, 4), got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")


def _check_boxes_last4(boxes: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``boxes`` is a ``(..., 4)`` tensor."""
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a Tensor of shape (..., 4), got {type(boxes).__name__}")
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between formats.

    Formats: ``"xyxy"`` = ``(x1, y1, x2, y2)`` corners; ``"xywh"`` = ``(x1, y1, w, h)`` top-left
    corner plus size (COCO's ``bbox``); ``"cxcywh"`` = ``(cx, cy, w, h)`` centre plus size.

    Args:
        boxes: ``(..., 4)`` boxes in ``in_fmt``.
        in_fmt: format of ``boxes``.
        out_fmt: format to return.

    Returns:
        ``(..., 4)`` boxes in ``out_fmt`` (a new tensor; same dtype and device).
    """
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    _check_boxes_last4(boxes, "boxes")
    if in_fmt == out_fmt:
        return boxes.clone()
    return torchvision.ops.box_convert(boxes, in_fmt=in_fmt, out_fmt=out_fmt)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``xyxy`` boxes, ``(x2 - x1) * (y2 - y1)``, in square pixels.

    Args:
        boxes: ``(N, 4)`` ``xyxy`` boxes.

    Returns:
        ``(N,)`` areas (integer boxes are upcast, as in torchvision).
    """
    _check_boxes_2d(boxes, "boxes")
    return torchvision.ops.box_area(boxes)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection-over-union of two sets of ``xyxy`` boxes.

    Args:
        boxes1: ``(N, 4)`` ``xyxy`` boxes.
        boxes2: ``(M, 4)`` ``xyxy`` boxes.

    Returns:
        ``(N, M)`` IoU values in ``[0, 1]``; ``iou[i, j]`` compares ``boxes1[i]`` with
        ``boxes2[j]``.
    """
    _check_boxes_2d(boxes1, "boxes1")
    _check_boxes_2d(boxes2, "boxes2")
    return torchvision.ops.box_iou(boxes1, boxes2)


def clip_boxes_to_image(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clamp ``xyxy`` boxes so that ``0 <= x <= W`` and ``0 <= y <= H``.

    Args:
        boxes: ``(..., 4)`` ``xyxy`` boxes in absolute pixels.
        image_size: ``(H, W)`` of the image, height first.

    Returns:
        ``(..., 4)`` clipped boxes (a new tensor).
    """
    _check_boxes_last4(boxes, "boxes")
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")
    height, width = int(image_size[0]), int(image_size[1])
    return torchvision.ops.clip_boxes_to_image(boxes, (height, width))


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the ``xyxy`` boxes whose width and height are both ``>= min_size`` pixels.

    Args:
        boxes: ``(N, 4)`` ``xyxy`` boxes.
        min_size: minimum width and height in pixels.

    Returns:
        ``(K,)`` int64 indices into ``boxes``, increasing.
    """
    _check_boxes_2d(boxes, "boxes")
    return torchvision.ops.remove_small_boxes(boxes, min_size)


def scale_boxes(boxes: Tensor, scale: float) -> Tensor:
    """``xyxy`` boxes grown (``scale > 1``) or shrunk about their centres, not clipped.

    Args:
        boxes: ``(N, 4)`` ``xyxy`` boxes.
        scale: factor applied to each box's width and height.

    Returns:
        ``(N, 4)`` scaled boxes (a new tensor).
    """
    _check_boxes_2d(boxes, "boxes")
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5
    ctr_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    ctr_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    half_w = half_w * scale
    half_h = half_h * scale
    return torch.stack((ctr_x - half_w, ctr_y - half_h, ctr_x + half_w, ctr_y + half_h), dim=1)


class BoxCoder:
    """Encode boxes as R-CNN regression deltas relative to reference boxes, and decode them.

    With reference (proposal or anchor) box centre ``(px, py)`` and size ``(pw, ph)``, and target
    box centre ``(gx, gy)`` and size ``(gw, gh)``, the deltas are::

        dx = wx * (gx - px) / pw        dy = wy * (gy - py) / ph
        dw = ww * log(gw / pw)          dh = wh * log(gh / ph)

    Widths are ``x2 - x1`` (no ``+ 1``). On decoding, ``dw`` and ``dh`` (after dividing by their
    weights) are clamped from above at ``bbox_xform_clip`` so that ``exp`` cannot overflow.

    The arithmetic follows torchvision's ``models.detection._utils.BoxCoder`` step by step (same
    operation order, dtypes and tensor layouts), so the results are bit-identical to it.

    Args:
        weights: ``(wx, wy, ww, wh)`` multipliers of the deltas, e.g. ``(10, 10, 5, 5)`` for the
            Fast R-CNN box head and ``(1, 1, 1, 1)`` for the RPN.
        bbox_xform_clip: upper bound of the decoded log-scale deltas ``dw`` and ``dh``.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        bbox_xform_clip: float = math.log(1000.0 / 16),
    ) -> None:
        if len(weights) != 4:
            raise ValueError(f"weights must have 4 values (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, gt_boxes: Tensor, proposal_boxes: Tensor) -> Tensor:
        """Regression targets that move each proposal box onto its ground-truth box.

        Args:
            gt_boxes: ``(N, 4)`` ``xyxy`` target boxes (one per proposal).
            proposal_boxes: ``(N, 4)`` ``xyxy`` reference boxes with positive width and height.

        Returns:
            ``(N, 4)`` deltas ``(dx, dy, dw, dh)`` in ``gt_boxes.dtype``.
        """
        _check_boxes_2d(gt_boxes, "gt_boxes")
        _check_boxes_2d(proposal_boxes, "proposal_boxes")
        if gt_boxes.shape[0] != proposal_boxes.shape[0]:
            raise ValueError(
                "gt_boxes and proposal_boxes must have the same length, got "
                f"{tuple(gt_boxes.shape)} and {tuple(proposal_boxes.shape)}"
            )
        weights = torch.as_tensor(self.weights, dtype=gt_boxes.dtype, device=gt_boxes.device)
        wx, wy, ww, wh = weights[0], weights[1], weights[2], weights[3]

        proposal_w = proposal_boxes[:, 2:3] - proposal_boxes[:, 0:1]  # (N, 1)
        proposal_h = proposal_boxes[:, 3:4] - proposal_boxes[:, 1:2]
        proposal_cx = proposal_boxes[:, 0:1] + 0.5 * proposal_w
        proposal_cy = proposal_boxes[:, 1:2] + 0.5 * proposal_h

        gt_w = gt_boxes[:, 2:3] - gt_boxes[:, 0:1]  # (N, 1)
        gt_h = gt_boxes[:, 3:4] - gt_boxes[:, 1:2]
        gt_cx = gt_boxes[:, 0:1] + 0.5 * gt_w
        gt_cy = gt_boxes[:, 1:2] + 0.5 * gt_h

        dx = wx * (gt_cx - proposal_cx) / proposal_w
        dy = wy * (gt_cy - proposal_cy) / proposal_h
        dw = ww * torch.log(gt_w / proposal_w)
        dh = wh * torch.log(gt_h / proposal_h)
        return torch.cat((dx, dy, dw, dh), dim=1)  # (N, 4)

    def decode(self, deltas: Tensor, proposal_boxes: Tensor) -> Tensor:
        """Apply regression deltas to proposal boxes.

        Args:
            deltas: ``(N, 4)`` deltas ``(dx, dy, dw, dh)``, or ``(N, 4 * C)`` / ``(N, C, 4)``
                class-specific deltas (class ``c`` in columns ``4c .. 4c + 3``).
            proposal_boxes: ``(N, 4)`` ``xyxy`` reference boxes; cast to ``deltas.dtype``.

        Returns:
            ``(N, 4)`` ``xyxy`` boxes when ``deltas`` is ``(N, 4)``, else ``(N, C, 4)``. Boxes
            are not clipped to the image.
        """
        _check_boxes_2d(proposal_boxes, "proposal_boxes")
        if not isinstance(deltas, Tensor) or deltas.ndim not in (2, 3):
            shape = tuple(deltas.shape) if isinstance(deltas, Tensor) else type(deltas).__name__
            raise ValueError(f"deltas must have shape (N, 4 * C) or (N, C, 4), got {shape}")
        if deltas.ndim == 3 and deltas.shape[2] != 4:
            raise ValueError(f"deltas must have shape (N, C, 4), got {tuple(deltas.shape)}")
        if deltas.shape[0] != proposal_boxes.shape[0] or deltas.flatten(1).shape[1] % 4 != 0:
            raise ValueError(
                f"deltas must have shape (N, 4 * C) with N = {proposal_boxes.shape[0]} "
                f"proposal boxes, got {tuple(deltas.shape)}"
            )
        flat_deltas = deltas.flatten(1)  # (N, 4 * C)
        pred_boxes = self._decode_flat(flat_deltas, proposal_boxes)  # (N, 4 * C)
        if deltas.ndim == 2 and deltas.shape[1] == 4:
            return pred_boxes
        return pred_boxes.reshape(deltas.shape[0], flat_deltas.shape[1] // 4, 4)

    def _decode_flat(self, deltas: Tensor, proposal_boxes: Tensor) -> Tensor:
        """``(N, 4 * C)`` deltas and ``(N, 4)`` boxes -> ``(N, 4 * C)`` ``xyxy`` boxes."""
        proposal_boxes = proposal_boxes.to(deltas.dtype)
        widths = proposal_boxes[:, 2] - proposal_boxes[:, 0]  # (N,)
        heights = proposal_boxes[:, 3] - proposal_boxes[:, 1]
        ctr_x = proposal_boxes[:, 0] + 0.5 * widths
        ctr_y = proposal_boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx  # (N, C)
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.bbox_xform_clip)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]  # (N, C)
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        pred_half_h = 0.5 * (torch.exp(dh) * heights[:, None])

        corners = (
            pred_ctr_x - pred_half_w,
            pred_ctr_y - pred_half_h,
            pred_ctr_x + pred_half_w,
            pred_ctr_y + pred_half_h,
        )
        return torch.stack(corners, dim=2).flatten(1)  # (N, C, 4) -> (N, 4 * C)
