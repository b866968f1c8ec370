"""structvision.ops: pure operators on tensors (no configs, no datasets).

Non-maximum suppression and region-of-interest pooling are documented facades over
torchvision's compiled kernels, so the rest of structvision imports these names. Spatial
pyramid pooling (SPPnet) and multi-scale RoIAlign over FPN levels build on them.
"""

from structvision.ops.boxes import batched_nms, nms
from structvision.ops.multiscale import MultiScaleRoIAlign, assign_fpn_levels
from structvision.ops.roi import RoIAlign, RoIPool, roi_align, roi_pool
from structvision.ops.spp import (
    RoISpatialPyramidPool,
    roi_spatial_pyramid_pool,
    spatial_pyramid_pool,
)

__all__ = [
    "MultiScaleRoIAlign",
    "RoIAlign",
    "RoIPool",
    "RoISpatialPyramidPool",
    "assign_fpn_levels",
    "batched_nms",
    "nms",
    "roi_align",
    "roi_pool",
    "roi_spatial_pyramid_pool",
    "spatial_pyramid_pool",
]
