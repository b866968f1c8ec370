"""Faster R-CNN: a backbone, a Region Proposal Network and a Fast R-CNN box head, end to end.

    images -> DetectionTransform -> backbone (+ FPN) -> RPN -> proposals
           -> RoI pooling -> box head -> box predictor -> detections (in input image coordinates)

The model obeys the structvision contract: in training mode ``model(images, targets)`` returns
the named, weighted losses (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``,
``loss_box_reg``); in eval mode ``model(images)`` returns one dict per image with ``boxes``
(xyxy pixels of the input image), ``labels`` and ``scores``.

``num_classes`` always counts the background class too, as in torchvision. The builders fix the
common configurations: torchvision's COCO models
(`faster_rcnn_resnet50_fpn`, `faster_rcnn_resnet50_fpn_v2`) and small models that train from
scratch on a CPU (`faster_rcnn_small_fpn`, `faster_rcnn_small_c4`). `faster_rcnn` takes every
hyper-parameter explicitly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from structvision.models.backbones import group_norm, resnet_backbone, small_backbone
from structvision.models.detection.anchors import AnchorGenerator
from structvision.models.detection.roi_heads import (
    ConvFCHead,
    FastRCNNPredictor,
    RoIHeads,
    SingleLevelRoIPool,
    TwoMLPHead,
)
from structvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from structvision.models.detection.transform import DetectionTransform
from structvision.models.fpn import BackboneWithFPN, FeaturePyramidNetwork
from structvision.ops import MultiScaleRoIAlign

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FasterRCNN",
    "check_detection_inputs",
    "faster_rcnn",
    "faster_rcnn_resnet50_fpn",
    "faster_rcnn_resnet50_fpn_v2",
    "faster_rcnn_small_c4",
    "faster_rcnn_small_fpn",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_detection_inputs(
    images: list[Tensor], targets: list[dict] | None, *, training: bool
) -> None:
    """Raise ``ValueError`` naming the image or target that breaks the model contract."""
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError(
            f"images must be a non-empty list of (3, H, W) tensors, got {type(images).__name__}"
        )
    for index, image in enumerate(images):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"images[{index}] must be (3, H, W), got {tuple(image.shape)}")
    if not training:
        return
    if targets is None or len(targets) != len(images):
        raise ValueError("in training mode the model needs one target dict per image")
    for index, target in enumerate(targets):
        boxes = target.get("boxes")
        if boxes is None or boxes.ndim != 2 or boxes.shape[-1] != 4:
            shape = None if boxes is None else tuple(boxes.shape)
            raise ValueError(f"targets[{index}]['boxes'] must be (N, 4) xyxy, got {shape}")
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if degenerate.any():
            bad = int(degenerate.nonzero()[0, 0])
            raise ValueError(
                f"targets[{index}]['boxes'][{bad}] = {boxes[bad].tolist()} has zero or negative "
                "width or height"
            )


class FasterRCNN(nn.Module):
    """Transform, backbone, RPN and RoI heads, given as explicit sub-modules.

    ``backbone`` maps a normalised ``(B, 3, H, W)`` batch to an ``OrderedDict`` of feature maps.
    """

    def __init__(
        self,
        *,
        transform: DetectionTransform,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_detection_inputs(images, targets, training=self.training)
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, rpn_losses = self.rpn(batch, features, targets)
        detections, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)


def faster_rcnn(
    *,
    backbone: nn.Module,
    out_channels: int,
    num_classes: int,
    anchor_sizes: Sequence[Sequence[int]],
    aspect_ratios: Sequence[Sequence[float]],
    box_roi_pool: nn.Module,
    box_head: nn.Module | None = None,
    representation_size: int = 1024,
    rpn_head: nn.Module | None = None,
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    size_divisible: int = 32,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_thresh: float = 0.7,
    rpn_fg_iou_thresh: float = 0.7,
    rpn_bg_iou_thresh: float = 0.3,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_score_thresh: float = 0.0,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 100,
    box_soft_nms_sigma: float = 0.0,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_bg_iou_low: float = 0.0,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
) -> FasterRCNN:
    """Assemble a Faster R-CNN; every hyper-parameter is explicit (defaults: torchvision's).

    ``num_classes`` counts the background too, as in torchvision (COCO: 91).

    ``box_head`` defaults to `TwoMLPHead` over the pooled features (``box_roi_pool`` must then
    have an ``output_size``, or be a `SingleLevelRoIPool` whose flat output size is known).
    """
    anchor_generator = AnchorGenerator(
        sizes=tuple(tuple(s) for s in anchor_sizes),
        aspect_ratios=tuple(tuple(r) for r in aspect_ratios),
    )
    if rpn_head is None:
        rpn_head = RPNHead(out_channels, anchor_generator.num_anchors_per_location()[0])
    rpn = RegionProposalNetwork(
        anchor_generator=anchor_generator,
        head=rpn_head,
        fg_iou_thresh=rpn_fg_iou_thresh,
        bg_iou_thresh=rpn_bg_iou_thresh,
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=rpn_positive_fraction,
        pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
        nms_thresh=rpn_nms_thresh,
        score_thresh=rpn_score_thresh,
    )
    if box_head is None:
        box_head = TwoMLPHead(_pooled_size(box_roi_pool, out_channels), representation_size)
    roi_heads = RoIHeads(
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        fg_iou_thresh=box_fg_iou_thresh,
        bg_iou_thresh=box_bg_iou_thresh,
        bg_iou_low=box_bg_iou_low,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        bbox_reg_weights=bbox_reg_weights,
        score_thresh=box_score_thresh,
        nms_thresh=box_nms_thresh,
        detections_per_img=box_detections_per_img,
        soft_nms_sigma=box_soft_nms_sigma,
    )
    transform = DetectionTransform(
        min_size=min_size,
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        size_divisible=size_divisible,
    )
    return FasterRCNN(transform=transform, backbone=backbone, rpn=rpn, roi_heads=roi_heads)


def _pooled_size(box_roi_pool: nn.Module, channels: int) -> int:
    """Length of one flattened pooled RoI feature."""
    if isinstance(box_roi_pool, SingleLevelRoIPool):
        return box_roi_pool.flat_size(channels)
    size = box_roi_pool.output_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return channels * height * width


def faster_rcnn_resnet50_fpn(
    *,
    num_classes: int = 91,
    norm: str = "frozen",
    trainable_layers: int = 3,
    weights_path: str | Path | None = None,
    **overrides,
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn`` architecture (ResNet-50, FPN, TwoMLPHead).

    ``num_classes`` counts the background too (torchvision's convention; COCO: 91).
    ``weights_path`` loads an ImageNet ResNet-50 state dict from a local file. Other keyword
    arguments override `faster_rcnn`'s hyper-parameters.
    """
    body = resnet_backbone(
        50, norm=norm, trainable_layers=trainable_layers, weights_path=weights_path
    )
    fpn = FeaturePyramidNetwork(list(body.out_channels.values()), 256, extra_block="maxpool")
    settings = {
        "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "box_roi_pool": MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2),
        **overrides,
    }
    return faster_rcnn(
        backbone=BackboneWithFPN(body, fpn), out_channels=256, num_classes=num_classes, **settings
    )


def faster_rcnn_resnet50_fpn_v2(
    *,
    num_classes: int = 91,
    trainable_layers: int = 3,
    weights_path: str | Path | None = None,
    **overrides,
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn_v2``: batch-normed FPN, 2-conv RPN head and a
    4-conv + 1-FC box head (Li et al., "Benchmarking detection transfer learning with ViT")."""
    body = resnet_backbone(
        50, norm="batch", trainable_layers=trainable_layers, weights_path=weights_path
    )
    fpn = FeaturePyramidNetwork(
        list(body.out_channels.values()), 256, extra_block="maxpool", norm=nn.BatchNorm2d
    )
    settings = {
        "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "box_roi_pool": MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2),
        "rpn_head": RPNHead(256, 3, conv_depth=2),
        "box_head": ConvFCHead(
            (256, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
        ),
        **overrides,
    }
    return faster_rcnn(
        backbone=BackboneWithFPN(body, fpn), out_channels=256, num_classes=num_classes, **settings
    )


#: Settings of the small models for 128-pixel images (the ``shapes`` default).
SMALL_MODEL_DEFAULTS = {
    "min_size": 128,
    "max_size": 256,
    "representation_size": 256,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "box_batch_size_per_image": 128,
}


#: Box heads of the small models: ``"mlp"`` (two fully connected layers, the FPN paper's) or
#: ``"conv"`` (four GroupNorm convolutions + one fully connected layer, Faster R-CNN v2's).
SMALL_BOX_HEADS = ("mlp", "conv")


def small_box_head(
    kind: str | nn.Module,
    *,
    channels: int,
    pooled_size: int = 7,
    representation_size: int | None = None,
) -> nn.Module | None:
    """The box head named ``kind`` (see `SMALL_BOX_HEADS`) over ``(channels, s, s)`` RoIs.

    ``None`` for ``"mlp"``: `faster_rcnn` then builds its default `TwoMLPHead`. The ``"conv"``
    head keeps ``channels`` through four 3x3 convolutions, so it reasons about a shape's outline
    inside the RoI before the fully connected layer; it nearly doubles the small Faster R-CNN's
    training step on a CPU (0.43 -> 0.80 s at batch 8 on one thread). A module is returned as
    it is (a head of the caller's own).
    """
    if isinstance(kind, nn.Module):
        return kind
    if kind not in SMALL_BOX_HEADS:
        raise ValueError(f"box_head must be one of {SMALL_BOX_HEADS}, got {kind!r}")
    if kind == "mlp":
        return None
    size = representation_size or SMALL_MODEL_DEFAULTS["representation_size"]
    return ConvFCHead(
        (channels, pooled_size, pooled_size),
        [channels] * 4,
        [size],
        norm_layer=group_norm,
    )


def faster_rcnn_small_fpn(
    *,
    num_classes: int,
    width: int = 32,
    norm: str = "group",
    fpn_channels: int = 64,
    roi_canonical_scale: int = 224,
    box_head: str | nn.Module = "mlp",
    box_soft_nms_sigma: float = 0.5,
    **overrides,
) -> FasterRCNN:
    """A small Faster R-CNN with FPN that trains from scratch on a CPU in minutes.

    Anchors of 8 to 128 pixels (one size per level, three aspect ratios) suit 128-pixel images
    with objects from about 8 pixels to most of the image. ``roi_canonical_scale`` is the box
    side (pixels) that the RoI pooler assigns to ``p4`` (the FPN paper's 224); boxes half as
    big go one level down, twice as big one level up, clamped to ``p2 .. p5``. ``box_head``:
    ``"mlp"`` or ``"conv"`` (see `small_box_head`). Unlike torchvision's models its detections
    come from Gaussian soft-NMS (``box_soft_nms_sigma``; 0 gives torchvision's NMS).
    """
    head = small_box_head(
        box_head, channels=fpn_channels, representation_size=overrides.get("representation_size")
    )
    body = small_backbone(width=width, norm=norm)
    fpn = FeaturePyramidNetwork(
        list(body.out_channels.values()), fpn_channels, extra_block="maxpool"
    )
    settings = {
        **SMALL_MODEL_DEFAULTS,
        "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "box_roi_pool": MultiScaleRoIAlign(
            ["p2", "p3", "p4", "p5"], 7, 2, canonical_scale=roi_canonical_scale
        ),
        "box_head": head,
        "box_soft_nms_sigma": box_soft_nms_sigma,
        **overrides,
    }
    return faster_rcnn(
        backbone=BackboneWithFPN(body, fpn),
        out_channels=fpn_channels,
        num_classes=num_classes,
        **settings,
    )


def faster_rcnn_small_c4(
    *,
    num_classes: int,
    width: int = 32,
    norm: str = "group",
    pooler: str = "roi_align",
    **overrides,
) -> FasterRCNN:
    """A small single-level Faster R-CNN: RPN and RoI pooling on the stride-16 map (C4-style).

    ``pooler`` is ``"roi_align"``, ``"roi_pool"`` or ``"spp"``.
    """
    body = small_backbone(width=width, norm=norm, returned_layers=(3,))
    channels = body.out_channels["c4"]
    settings = {
        **SMALL_MODEL_DEFAULTS,
        "anchor_sizes": ((8, 16, 32, 64, 128),),
        "aspect_ratios": ((0.5, 1.0, 2.0),),
        "box_roi_pool": SingleLevelRoIPool(kind=pooler, output_size=7, featmap_name="c4"),
        **overrides,
    }
    return faster_rcnn(backbone=body, out_channels=channels, num_classes=num_classes, **settings)
