"""Fast R-CNN (Girshick 2015): one backbone pass per image, RoI pooling on external proposals.

    images -> proposer (Selective Search, cached) -> proposals in image pixels
    images -> DetectionTransform -> backbone -> one feature map
    (feature map, proposals) -> RoI pooling (RoIPool, SPP or RoIAlign) -> two FC layers
                              -> class scores + class-specific box deltas

Training follows the paper: hierarchical sampling (few images, many RoIs each), 25% foreground
RoIs at IoU >= 0.5 and background in [0.1, 0.5), ground-truth boxes added to the proposals, a
multi-task loss (cross-entropy + smooth L1). Inference: per-class NMS and a score threshold.
Proposals come from the model's ``proposer`` unless each target carries ``proposals (N, 4)``.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from torch import Tensor, nn

from structvision.models.backbones import small_backbone
from structvision.models.detection.faster_rcnn import check_detection_inputs
from structvision.models.detection.proposals import (
    ProposalCache,
    image_to_uint8_hwc,
    selective_search,
)
from structvision.models.detection.roi_heads import (
    FastRCNNPredictor,
    RoIHeads,
    SingleLevelRoIPool,
    TwoMLPHead,
)
from structvision.models.detection.transform import DetectionTransform, resize_boxes

__all__ = ["FastRCNN", "SelectiveSearchProposer", "fast_rcnn_small"]


class SelectiveSearchProposer(nn.Module):
    """Selective Search proposals for each image, optionally cached on disk.

    The cache key is a hash of the image's pixels, so the same image reuses its proposals across
    epochs and runs, and any change to the image or the settings recomputes them. Holds no
    parameters; proposals are computed on the CPU and moved to the image's device.
    """

    def __init__(
        self,
        *,
        mode: str = "fast",
        max_proposals: int = 2000,
        min_size: float = 4,
        resize_to: int | None = 500,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.search_settings = {
            "mode": mode,
            "max_proposals": max_proposals,
            "min_size": min_size,
            "resize_to": resize_to,
        }
        cache_settings = {"method": "selective_search", **self.search_settings}
        self.cache = (
            None if cache_dir is None else ProposalCache(cache_dir, method_settings=cache_settings)
        )

    def propose(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` image in [0, 1] -> ``(N, 4)`` xyxy proposals in its pixels."""
        pixels = image_to_uint8_hwc(image.detach().cpu())
        compute = functools.partial(selective_search, pixels, **self.search_settings)
        if self.cache is None:
            boxes = compute()
        else:
            key = hashlib.blake2b(pixels.tobytes(), digest_size=16).hexdigest()
            boxes = self.cache.get_or_compute(pixels, key, compute)
        return boxes.to(image.device)

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        return [self.propose(image) for image in images]


class FastRCNN(nn.Module):
    """Transform, backbone, RoI heads and a proposal source, given as explicit sub-modules."""

    def __init__(
        self,
        *,
        transform: DetectionTransform,
        backbone: nn.Module,
        roi_heads: RoIHeads,
        proposer: nn.Module,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.proposer = proposer

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_detection_inputs(images, targets, training=self.training)
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        if targets is not None and all("proposals" in t for t in targets):
            proposals = [t["proposals"] for t in targets]
        else:
            proposals = self.proposer(images)
        batch, targets = self.transform(images, targets)
        proposals = [
            resize_boxes(p.to(batch.tensors.dtype), original_size=original, new_size=resized)
            for p, original, resized in zip(
                proposals, original_sizes, batch.image_sizes, strict=True
            )
        ]
        features = self.backbone(batch.tensors)
        detections, losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            return losses
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)


def fast_rcnn_small(
    *,
    num_classes: int,
    pooler: str = "roi_pool",
    width: int = 32,
    norm: str = "group",
    feature_level: int = 3,
    representation_size: int = 256,
    proposal_mode: str = "fast",
    max_proposals: int = 2000,
    cache_dir: str | Path | None = None,
    min_size: int = 128,
    max_size: int = 256,
    batch_size_per_image: int = 128,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    box_soft_nms_sigma: float = 0.0,
) -> FastRCNN:
    """A small Fast R-CNN on Selective Search proposals that trains from scratch on a CPU.

    Args:
        num_classes: classes including the background (torchvision's convention).
        pooler: ``"roi_pool"`` (the paper's 7x7 max pooling), ``"spp"`` (SPPnet's 1x1 + 2x2 +
            4x4 pyramid) or ``"roi_align"`` (Mask R-CNN's bilinear sampling).
        feature_level: backbone stage whose map is pooled: 3 (stride 8) or 4 (stride 16).
        cache_dir: where Selective Search proposals are cached (``None``: no cache).
        box_soft_nms_sigma: if positive, Gaussian soft-NMS of that width instead of NMS.
    """
    if pooler not in ("roi_pool", "spp", "roi_align"):
        raise ValueError(f"pooler must be 'roi_pool', 'spp' or 'roi_align', got {pooler!r}")
    backbone = small_backbone(width=width, norm=norm, returned_layers=(feature_level - 1,))
    featmap = f"c{feature_level}"
    box_roi_pool = SingleLevelRoIPool(kind=pooler, output_size=7, featmap_name=featmap)
    channels = backbone.out_channels[featmap]
    roi_heads = RoIHeads(
        box_roi_pool=box_roi_pool,
        box_head=TwoMLPHead(box_roi_pool.flat_size(channels), representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        bg_iou_low=0.1,
        batch_size_per_image=batch_size_per_image,
        positive_fraction=0.25,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        soft_nms_sigma=box_soft_nms_sigma,
    )
    transform = DetectionTransform(
        min_size=min_size,
        max_size=max_size,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    proposer = SelectiveSearchProposer(
        mode=proposal_mode, max_proposals=max_proposals, cache_dir=cache_dir
    )
    return FastRCNN(transform=transform, backbone=backbone, roi_heads=roi_heads, proposer=proposer)
