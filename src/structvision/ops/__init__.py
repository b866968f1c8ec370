"""structvision.ops: pure operators on tensors (no configs, no datasets).

Non-maximum suppression and region-of-interest pooling are documented facades over
torchvision's compiled kernels, so the rest of structvision imports these names. Spatial
pyramid pooling (SPPnet) and multi-scale RoIAlign over FPN levels build on them. The fully
connected CRF (mean-field inference, a trainable layer and a regularised loss) runs on a
permutohedral lattice. ``warp`` samples an image along a dense flow (flow losses and tests).
"""

from structvision.ops.boxes import batched_nms, batched_soft_nms, nms
from structvision.ops.crf import (
    DenseCRF,
    dense_crf,
    dense_crf_loss,
    mean_field,
    partial_cross_entropy,
)
from structvision.ops.multiscale import MultiScaleRoIAlign, MultiScaleRoIPool, assign_fpn_levels
from structvision.ops.permutohedral import PermutohedralLattice, permutohedral_filter
from structvision.ops.roi import RoIAlign, RoIPool, roi_align, roi_pool
from structvision.ops.spp import (
    RoISpatialPyramidPool,
    roi_spatial_pyramid_pool,
    spatial_pyramid_pool,
)
from structvision.ops.warp import flow_inside, warp

__all__ = [
    "DenseCRF",
    "MultiScaleRoIAlign",
    "MultiScaleRoIPool",
    "PermutohedralLattice",
    "RoIAlign",
    "RoIPool",
    "RoISpatialPyramidPool",
    "assign_fpn_levels",
    "batched_nms",
    "batched_soft_nms",
    "dense_crf",
    "dense_crf_loss",
    "flow_inside",
    "mean_field",
    "nms",
    "partial_cross_entropy",
    "permutohedral_filter",
    "roi_align",
    "roi_pool",
    "roi_spatial_pyramid_pool",
    "spatial_pyramid_pool",
    "warp",
]
