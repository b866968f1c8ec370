"""Spatial pyramid pooling (SPPnet, He et al. 2014).

A spatial pyramid pools a feature map (or a region of it) over several grids: for each level
``l`` the region is divided into ``l x l`` cells and each cell is pooled to one value per
channel. Concatenating the levels gives a vector of fixed length ``C * sum(l * l)`` whatever the
region's size, which is what lets SPPnet feed regions of any shape to fully connected layers.

Layout of the output vector: levels in the order given; within a level, the ``(C, l, l)`` grid
flattened channel-major (channel, then row, then column), as ``Tensor.flatten`` does.

Boxes follow :mod:`structvision.ops.roi`: image-pixel ``xyxy`` coordinates, either one
``(K, 5)`` tensor of rows ``(batch_index, x1, y1, x2, y2)`` or a list of ``B`` ``(N_i, 4)``
tensors, and ``spatial_scale`` feature cells per image pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.ops.roi import roi_align, roi_pool

__all__ = ["RoISpatialPyramidPool", "roi_spatial_pyramid_pool", "spatial_pyramid_pool"]

POOL_MODES = ("max", "avg")


def roi_spatial_pyramid_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    *,
    levels: Sequence[int] = (1, 2, 4),
    spatial_scale: float = 1.0,
    mode: str = "max",
) -> Tensor:
    """SPPnet pooling of each region of interest into a fixed-length vector.

    ``mode="max"`` (SPPnet) max-pools each cell with :func:`~structvision.ops.roi_pool`
    (box corners rounded to feature cells, ``x2``/``y2`` inclusive). ``mode="avg"`` averages
    bilinear samples in each cell with :func:`~structvision.ops.roi_align` (``aligned=True``,
    adaptive sampling), a continuous-coordinate stand-in for average pooling.

    Args:
        input: ``(B, C, H, W)`` feature maps.
        boxes: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` or a list of ``B`` ``(N_i, 4)``
            ``xyxy`` tensors, in image pixels.
        levels: grid sizes of the pyramid, e.g. ``(1, 2, 4)``; each a positive int.
        spatial_scale: feature-map cells per image pixel (``1 / stride``).
        mode: ``"max"`` or ``"avg"``.

    Returns:
        ``(K, C * sum(l * l))`` pooled features, levels concatenated in the given order.
    """
    levels = _check_levels(levels)
    _check_mode(mode)
    pooled_levels = []
    for level in levels:
        if mode == "max":
            pooled = roi_pool(input, boxes, (level, level), spatial_scale=spatial_scale)
        else:
            pooled = roi_align(
                input, boxes, (level, level), spatial_scale=spatial_scale, aligned=True
            )
        pooled_levels.append(pooled.flatten(1))  # (K, C * l * l)
    return torch.cat(pooled_levels, dim=1)  # (K, C * sum(l * l))


def spatial_pyramid_pool(input: Tensor, levels: Sequence[int], *, mode: str = "max") -> Tensor:
    """Spatial pyramid pooling of whole feature maps (adaptive pooling per level).

    Cell ``(i, j)`` of level ``l`` covers rows ``floor(i * H / l) .. ceil((i + 1) * H / l) - 1``
    and the analogous columns (PyTorch's adaptive pooling), so cells of neighbouring indices may
    share a row or column when ``H`` is not a multiple of ``l``.

    Args:
        input: ``(B, C, H, W)`` feature maps.
        levels: grid sizes of the pyramid, e.g. ``(1, 2, 4)``.
        mode: ``"max"`` or ``"avg"``.

    Returns:
        ``(B, C * sum(l * l))`` pooled features, levels concatenated in the given order.
    """
    levels = _check_levels(levels)
    _check_mode(mode)
    if not isinstance(input, Tensor) or input.ndim != 4:
        shape = getattr(input, "shape", type(input).__name__)
        raise ValueError(f"input must have shape (B, C, H, W), got {tuple(shape)}")
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    pooled_levels = [pool(input, (level, level)).flatten(1) for level in levels]  # (B, C*l*l)
    return torch.cat(pooled_levels, dim=1)  # (B, C * sum(l * l))


class RoISpatialPyramidPool(nn.Module):
    """Module form of :func:`roi_spatial_pyramid_pool` with fixed levels, scale and mode."""

    def __init__(
        self, levels: Sequence[int] = (1, 2, 4), spatial_scale: float = 1.0, mode: str = "max"
    ) -> None:
        super().__init__()
        self.levels = _check_levels(levels)
        _check_mode(mode)
        self.spatial_scale = float(spatial_scale)
        self.mode = mode

    @property
    def bins_per_channel(self) -> int:
        """``sum(l * l)``: the output has ``C * bins_per_channel`` features per box."""
        return sum(level * level for level in self.levels)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        """``(B, C, H, W)`` features and boxes -> ``(K, C * sum(l * l))`` pooled features."""
        return roi_spatial_pyramid_pool(
            input, boxes, levels=self.levels, spatial_scale=self.spatial_scale, mode=self.mode
        )

    def extra_repr(self) -> str:
        return f"levels={self.levels}, spatial_scale={self.spatial_scale}, mode={self.mode!r}"


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    if isinstance(levels, int) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty sequence of positive ints, got {levels!r}")
    if any(isinstance(level, bool) or int(level) != level or level <= 0 for level in levels):
        raise ValueError(f"levels must be a non-empty sequence of positive ints, got {levels!r}")
    return tuple(int(level) for level in levels)


def _check_mode(mode: str) -> None:
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
