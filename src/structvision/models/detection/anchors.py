"""Anchor boxes of the Region Proposal Network, tiled over one or more feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from structvision.models.detection.image_batch import ImageBatch

__all__ = ["AnchorGenerator", "make_base_anchors"]


def make_base_anchors(
    *,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Zero-centred anchors for every (aspect ratio, size) pair, rounded to whole pixels.

    An anchor of size ``s`` and aspect ratio ``r = height / width`` has area ``s**2``: width
    ``s / sqrt(r)`` and height ``s * sqrt(r)``. Corners are ``(-w/2, -h/2, w/2, h/2)`` rounded
    half to even (``torch.round``), as torchvision does.

    Args:
        sizes: anchor side lengths in pixels (square-root of the area).
        aspect_ratios: height / width ratios.
        dtype: dtype of the result.
        device: device of the result.

    Returns:
        ``(len(aspect_ratios) * len(sizes), 4)`` ``xyxy`` anchors, ordered aspect-ratio-major
        (all sizes of the first ratio, then the next ratio).
    """
    size_t = torch.as_tensor(sizes, dtype=dtype, device=device)  # (S,)
    ratio_t = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # (R,)
    h_ratios = torch.sqrt(ratio_t)
    w_ratios = 1 / h_ratios
    widths = (w_ratios[:, None] * size_t[None, :]).view(-1)  # (R * S,)
    heights = (h_ratios[:, None] * size_t[None, :]).view(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()  # (R * S, 4)


class AnchorGenerator(nn.Module):
    """Tile base anchors over the locations of each feature map (torchvision-equal output).

    Level ``l`` has ``len(sizes[l]) * len(aspect_ratios[l])`` anchors per location. The stride
    of a level is ``padded_image_size // feature_size`` per axis (integer division), and the
    anchors of location ``(y, x)`` are the base anchors shifted by ``(x * stride_w, y *
    stride_h)``. The output order is: level, then location (row-major over ``(y, x)``), then
    base anchor (aspect-ratio-major, then size).

    Args:
        sizes: per feature level, anchor sizes in pixels, e.g. ``((32,), (64,), ...)`` for FPN.
        aspect_ratios: per feature level, height / width ratios, e.g. ``((0.5, 1.0, 2.0),) * 5``.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]] = ((128, 256, 512),),
        aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
    ) -> None:
        super().__init__()
        if len(sizes) == 0 or len(sizes) != len(aspect_ratios):
            raise ValueError(
                "sizes and aspect_ratios must give one tuple per feature level, got "
                f"{len(sizes)} and {len(aspect_ratios)}"
            )
        for level, (level_sizes, level_ratios) in enumerate(zip(sizes, aspect_ratios, strict=True)):
            if not isinstance(level_sizes, Sequence) or not isinstance(level_ratios, Sequence):
                raise ValueError(
                    f"sizes[{level}] and aspect_ratios[{level}] must be tuples, got "
                    f"{level_sizes!r} and {level_ratios!r}"
                )
        self.sizes = tuple(tuple(level_sizes) for level_sizes in sizes)
        self.aspect_ratios = tuple(tuple(level_ratios) for level_ratios in aspect_ratios)
        self._base_anchor_cache: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}"

    def num_anchors_per_location(self) -> list[int]:
        """Number of anchors at each location of each feature level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def base_anchors(self, *, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
        """Per level, ``(A_l, 4)`` zero-centred anchors (cached per device and dtype)."""
        key = (torch.device(device), dtype)
        if key not in self._base_anchor_cache:
            # Computed in float32 on the CPU, then cast, exactly like torchvision.
            self._base_anchor_cache[key] = [
                make_base_anchors(sizes=s, aspect_ratios=r).to(dtype=dtype, device=device)
                for s, r in zip(self.sizes, self.aspect_ratios, strict=True)
            ]
        return self._base_anchor_cache[key]

    def forward(self, images: ImageBatch, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors over all feature levels, one (identical) tensor per image.

        Args:
            images: the padded batch; only ``images.tensors.shape[-2:]`` (the padded size)
                and the number of images are used.
            feature_maps: per level, ``(B, C, H_l, W_l)`` features.

        Returns:
            ``B`` tensors of shape ``(sum_l H_l * W_l * A_l, 4)``: ``xyxy`` anchors in padded-
            image pixels, in the features' dtype and on their device.
        """
        if len(feature_maps) != len(self.sizes):
            raise ValueError(
                f"feature_maps must have one tensor per anchor level ({len(self.sizes)}), got "
                f"{len(feature_maps)}"
            )
        padded_h, padded_w = int(images.tensors.shape[-2]), int(images.tensors.shape[-1])
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        base_anchors = self.base_anchors(dtype=dtype, device=device)
        level_anchors = []
        for feature_map, level_base_anchors in zip(feature_maps, base_anchors, strict=True):
            grid_h, grid_w = int(feature_map.shape[-2]), int(feature_map.shape[-1])
            stride = (padded_h // grid_h, padded_w // grid_w)
            level_anchors.append(
                _grid_anchors(level_base_anchors, grid_size=(grid_h, grid_w), stride=stride)
            )
        all_anchors = torch.cat(level_anchors)  # (A_total, 4)
        return [all_anchors for _ in range(len(images.image_sizes))]


def _grid_anchors(
    base_anchors: Tensor, *, grid_size: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """``(A, 4)`` base anchors tiled over a ``(H, W)`` grid -> ``(H * W * A, 4)`` anchors."""
    grid_h, grid_w = grid_size
    device = base_anchors.device
    # Integer shifts then one addition to the (float) base anchors, as torchvision computes them.
    shifts_x = torch.arange(0, grid_w, dtype=torch.int32, device=device) * stride[1]  # (W,)
    shifts_y = torch.arange(0, grid_h, dtype=torch.int32, device=device) * stride[0]  # (H,)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H, W) each
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)  # (H * W,)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H * W, 4)
    return (shifts[:, None, :] + base_anchors[None, :, :]).reshape(-1, 4)  # (H * W * A, 4)
