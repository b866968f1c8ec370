"""Multi-scale RoIAlign over a feature pyramid (FPN, Lin et al. 2017).

Each box is pooled from one pyramid level chosen by its size (the FPN paper's eq. 1): a box of
``canonical_size x canonical_size`` pixels goes to ``canonical_level``, one twice as large to the
next coarser level, and so on. Level ``k`` is the feature map of stride ``2 ** k`` pixels.

:class:`MultiScaleRoIAlign` gives the same results as ``torchvision.ops.MultiScaleRoIAlign``
(same level assignment, same inferred scales, RoIAlign with ``aligned=False``), so torchvision's
FPN weights can be used unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from structvision.ops.roi import roi_align, roi_pool
from structvision.structures import box_area

__all__ = ["MultiScaleRoIAlign", "MultiScaleRoIPool", "assign_fpn_levels"]


def assign_fpn_levels(
    boxes: Tensor,
    *,
    min_level: int = 2,
    max_level: int = 5,
    canonical_size: float = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """Pyramid level of each box, FPN eq. 1: ``floor(k0 + log2(sqrt(w * h) / 224))``, clamped.

    ``eps`` is added before the floor (as torchvision's ``LevelMapper`` does) so that a box whose
    size is exactly a power of two times ``canonical_size`` is not pushed one level down by
    rounding error.

    Args:
        boxes: ``(K, 4)`` ``xyxy`` boxes in input-image pixels.
        min_level: finest level available (stride ``2 ** min_level``).
        max_level: coarsest level available.
        canonical_size: box side in pixels (``sqrt(w * h)``) that maps to ``canonical_level``.
        canonical_level: ``k0`` of eq. 1.
        eps: added to the level before flooring.

    Returns:
        ``(K,)`` int64 levels in ``[min_level, max_level]`` (absolute, not relative to
        ``min_level``).
    """
    if min_level > max_level:
        raise ValueError(f"min_level must be <= max_level, got {min_level} > {max_level}")
    box_sizes = torch.sqrt(box_area(boxes))  # (K,) geometric-mean side in pixels
    eps_tensor = torch.tensor(eps, dtype=box_sizes.dtype, device=box_sizes.device)
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_size) + eps_tensor)
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64)  # (K,)


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign each box on the pyramid level that matches its size.

    The stride of each named feature map is inferred at every call from its height and the
    largest image height: ``scale = 2 ** round(log2(feature_h / max_image_h))`` (torchvision's
    rule; images of a batch are padded to a common size before the backbone). The named maps
    must form consecutive levels (strides a factor 2 apart); they may be listed in any order.

    Differences from torchvision (results are equal): the feature maps are taken in the order of
    ``featmap_names`` and sorted by stride (torchvision uses the dict's order), scales are not
    cached between calls, and non-consecutive levels raise an error instead of silently
    returning zeros for the boxes of the missing levels.

    Args:
        featmap_names: keys of the feature dict to pool from.
        output_size: ``(h, w)`` bins per box, or one int for both.
        sampling_ratio: bilinear samples per bin along each axis; ``<= 0`` for adaptive.
        canonical_scale: box side in pixels that maps to ``canonical_level`` (eq. 1).
        canonical_level: ``k0`` of eq. 1.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(featmap_names, str) or len(featmap_names) == 0:
            raise ValueError(f"featmap_names must be a non-empty list, got {featmap_names!r}")
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if len(output_size) != 2 or min(output_size) <= 0:
            raise ValueError(f"output_size must be a positive int or (h, w), got {output_size!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> Tensor:
        """Pool each box from its level.

        Args:
            features: ``{name: (B, C, H_l, W_l)}`` feature maps (extra keys are ignored).
            boxes: ``B`` tensors ``(N_i, 4)`` of ``xyxy`` boxes in input-image pixels.
            image_sizes: ``B`` ``(H, W)`` sizes of the images fed to the backbone.

        Returns:
            ``(K, C, h, w)`` pooled features, ``K = sum(N_i)``, in input order (image by image).
        """
        feature_maps, levels = self._pyramid(features, image_sizes)  # featmap_names order
        rois = _boxes_to_rois(boxes)  # (K, 5)
        # Level of each box between the first and the last map's level, as an index into the
        # maps (torchvision's rule: maps sharing a stride leave the later ones unused).
        map_index = (
            assign_fpn_levels(
                rois[:, 1:],
                min_level=levels[0],
                max_level=levels[-1],
                canonical_size=self.canonical_scale,
                canonical_level=self.canonical_level,
            )
            - levels[0]
        )  # (K,)
        first = feature_maps[0]
        pooled = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for index, (feature_map, level) in enumerate(zip(feature_maps, levels, strict=True)):
            idx_in_level = torch.nonzero(map_index == index).squeeze(1)  # (K_l,)
            pooled_level = self._pool_level(feature_map, rois[idx_in_level], level)
            pooled[idx_in_level] = pooled_level.to(pooled.dtype)
        return pooled

    def _pool_level(self, feature_map: Tensor, rois: Tensor, level: int) -> Tensor:
        """RoIAlign ``(K_l, 5)`` rois on one ``(B, C, H_l, W_l)`` map -> ``(K_l, C, h, w)``."""
        return roi_align(
            feature_map,
            rois,
            self.output_size,
            spatial_scale=2.0**-level,
            sampling_ratio=self.sampling_ratio,
            aligned=False,
        )

    def _pyramid(
        self, features: dict[str, Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[int]]:
        """The named maps in ``featmap_names`` order and their levels (``stride = 2 ** level``).

        The first map must be the finest and the last the coarsest, as in an FPN.
        """
        missing = [name for name in self.featmap_names if name not in features]
        if missing:
            raise ValueError(
                f"features is missing the maps {missing}; it has keys {list(features.keys())}"
            )
        if len(image_sizes) == 0:
            raise ValueError("image_sizes must hold one (H, W) per image, got an empty list")
        max_image_h = max(int(size[0]) for size in image_sizes)
        levels_by_name = {
            name: _infer_level(features[name], max_image_h) for name in self.featmap_names
        }
        names = self.featmap_names
        levels = [levels_by_name[name] for name in names]
        if levels != sorted(levels):
            raise ValueError(
                "featmap_names must go from the finest to the coarsest map, got levels "
                f"{dict(zip(names, levels, strict=True))} for image height {max_image_h}"
            )
        return [features[name] for name in names], levels

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}"
        )


class MultiScaleRoIPool(MultiScaleRoIAlign):
    """RoIPool (Fast R-CNN's quantised max pooling) each box on the level that matches its size.

    The same level assignment and scale inference as :class:`MultiScaleRoIAlign`, only the
    pooling differs: the box corners are rounded to feature cells and each bin takes the maximum
    (:func:`~structvision.ops.roi_pool`). This is the RoIPool side of Mask R-CNN's RoIAlign
    ablation (He et al. 2017, Table 2c) on an FPN.

    Args:
        featmap_names: keys of the feature dict to pool from.
        output_size: ``(h, w)`` bins per box, or one int for both.
        canonical_scale: box side in pixels that maps to ``canonical_level`` (eq. 1).
        canonical_level: ``k0`` of eq. 1.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int],
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__(
            featmap_names,
            output_size,
            0,
            canonical_scale=canonical_scale,
            canonical_level=canonical_level,
        )

    def _pool_level(self, feature_map: Tensor, rois: Tensor, level: int) -> Tensor:
        """RoIPool ``(K_l, 5)`` rois on one ``(B, C, H_l, W_l)`` map -> ``(K_l, C, h, w)``."""
        return roi_pool(feature_map, rois, self.output_size, spatial_scale=2.0**-level)

    def extra_repr(self) -> str:
        return f"featmap_names={self.featmap_names}, output_size={self.output_size}"


def _infer_level(feature_map: Tensor, image_h: int) -> int:
    """Level ``k`` such that the map's stride is ``2 ** k``: ``-round(log2(H_l / image_h))``."""
    if not isinstance(feature_map, Tensor) or feature_map.ndim != 4:
        shape = getattr(feature_map, "shape", type(feature_map).__name__)
        raise ValueError(f"feature maps must have shape (B, C, H, W), got {tuple(shape)}")
    # float32 log2 and round-half-to-even, as torchvision computes it
    ratio = torch.tensor(float(feature_map.shape[-2]) / float(image_h))
    return -int(ratio.log2().round().item())


def _boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """List of ``(N_i, 4)`` boxes -> ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)``."""
    if isinstance(boxes, Tensor) or len(boxes) == 0:
        raise ValueError("boxes must be a non-empty list of (N_i, 4) tensors, one per image")
    for image_idx, image_boxes in enumerate(boxes):
        if (
            not isinstance(image_boxes, Tensor)
            or image_boxes.ndim != 2
            or image_boxes.shape[1] != 4
        ):
            shape = getattr(image_boxes, "shape", type(image_boxes).__name__)
            raise ValueError(f"boxes[{image_idx}] must have shape (N, 4), got {tuple(shape)}")
    batch_idxs = [
        torch.full_like(image_boxes[:, :1], image_idx)
        for image_idx, image_boxes in enumerate(boxes)
    ]
    return torch.cat((torch.cat(batch_idxs), torch.cat(boxes)), dim=1)  # (K, 5)
