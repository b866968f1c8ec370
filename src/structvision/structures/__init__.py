"""structvision.structures: pure tensor code for boxes, matching, sampling, masks, keypoints.

Boxes are float ``(N, 4)`` tensors in absolute pixels, ``xyxy`` unless a function says
otherwise; masks are uint8 ``(N, H, W)``; keypoints ``(N, K, 3)`` ``(x, y, visibility)`` (see
DESIGN.md's data contracts).
"""

from structvision.structures.boxes import (
    BOX_FORMATS,
    BoxCoder,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
    scale_boxes,
)
from structvision.structures.keypoints import (
    heatmaps_to_keypoints,
    keypoints_to_heatmap_distributions,
    keypoints_to_heatmap_targets,
)
from structvision.structures.masks import (
    mask_to_rle,
    masks_to_boxes,
    paste_masks_in_image,
    paste_masks_where_sampled,
    polygons_to_mask,
    rle_to_mask,
)
from structvision.structures.matcher import Matcher
from structvision.structures.sampler import BalancedPositiveNegativeSampler

__all__ = [
    "BOX_FORMATS",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "Matcher",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "heatmaps_to_keypoints",
    "keypoints_to_heatmap_distributions",
    "keypoints_to_heatmap_targets",
    "mask_to_rle",
    "masks_to_boxes",
    "paste_masks_in_image",
    "paste_masks_where_sampled",
    "polygons_to_mask",
    "remove_small_boxes",
    "rle_to_mask",
    "scale_boxes",
]
