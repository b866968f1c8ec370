"""Backward warping with a dense flow: the operation flow losses, tests and viewers share.

``warp(image, flow)[..., y, x] = image[..., y + v(x, y), x + u(x, y)]`` (bilinear): the second
frame warped with the forward flow of the first reproduces the first wherever the scene point
stays visible. Pixel ``(x, y)`` is the integer index of a pixel centre, the convention of the
library's flow and disparity targets, so ``grid_sample`` is called with ``align_corners=False``
and the normalised coordinate ``(2 x + 1) / W - 1``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["flow_inside", "flow_to_grid", "warp"]


def _check(image: Tensor | None, flow: Tensor) -> None:
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must have shape (B, 2, H, W), got {tuple(flow.shape)}")
    if image is not None and (
        image.ndim != 4 or image.shape[0] != flow.shape[0] or image.shape[2:] != flow.shape[2:]
    ):
        raise ValueError(
            f"image must have shape (B, C, H, W) matching flow {tuple(flow.shape)}, got "
            f"{tuple(image.shape)}"
        )


def flow_to_grid(flow: Tensor) -> Tensor:
    """``grid_sample``'s ``(B, H, W, 2)`` grid (``align_corners=False``) for ``x + flow``."""
    _check(None, flow)
    _, _, height, width = flow.shape
    xs = torch.arange(width, dtype=flow.dtype, device=flow.device)
    ys = torch.arange(height, dtype=flow.dtype, device=flow.device)
    source_x = xs[None, None, :] + flow[:, 0]  # (B, H, W)
    source_y = ys[None, :, None] + flow[:, 1]
    return torch.stack([(2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1], dim=-1)


def warp(
    image: Tensor,
    flow: Tensor,
    *,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    padding_mode: Literal["zeros", "border", "reflection"] = "zeros",
) -> Tensor:
    """Sample ``image (B, C, H, W)`` at ``(x + u, y + v)`` for every pixel; differentiable in
    both. Outside the image: ``padding_mode`` (zeros by default; see :func:`flow_inside`)."""
    _check(image, flow)
    grid = flow_to_grid(flow).to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def flow_inside(flow: Tensor) -> Tensor:
    """``(B, H, W)`` bool: where ``x + flow`` lands inside the image (between the outer pixel
    centres, where bilinear sampling needs no padding)."""
    _check(None, flow)
    _, _, height, width = flow.shape
    xs = torch.arange(width, dtype=flow.dtype, device=flow.device)[None, None, :] + flow[:, 0]
    ys = torch.arange(height, dtype=flow.dtype, device=flow.device)[None, :, None] + flow[:, 1]
    return (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
