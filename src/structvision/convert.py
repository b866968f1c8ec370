"""Import torchvision models: the same architecture and hyper-parameters, converted weights.

    import torchvision
    from structvision.convert import from_torchvision

    tv_model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="DEFAULT")
    model = from_torchvision(tv_model).eval()   # equal detections for equal inputs

This is how users get COCO-trained models: torchvision downloads them, structvision runs them.
Every hyper-parameter is read off the torchvision model (transform sizes and normalisation,
anchors, RPN and RoI-head thresholds and counts), so a model built with non-default settings
converts faithfully too. Labels keep torchvision's meaning (COCO category ids for its COCO
models).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection import KeypointRCNN as TVKeypointRCNN
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead as TVConvFCHead
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from structvision.models.backbones import resnet_backbone
from structvision.models.detection.faster_rcnn import FasterRCNN, faster_rcnn
from structvision.models.detection.roi_heads import ConvFCHead, TwoMLPHead
from structvision.models.detection.rpn import RPNHead
from structvision.models.fpn import BackboneWithFPN, FeaturePyramidNetwork
from structvision.ops import MultiScaleRoIAlign

__all__ = ["TorchvisionBody", "from_torchvision"]


def from_torchvision(tv_model: nn.Module) -> nn.Module:
    """The structvision equivalent of a torchvision model, with its weights.

    Supported: torchvision's ``FasterRCNN`` (``fasterrcnn_resnet50_fpn``,
    ``fasterrcnn_resnet50_fpn_v2``, ``fasterrcnn_mobilenet_v3_large_fpn`` and
    ``..._320_fpn``, or any ``FasterRCNN`` over a ResNet or MobileNet FPN backbone). The result is
    in the same train/eval mode as ``tv_model`` and on its device.
    """
    if isinstance(tv_model, (TVMaskRCNN, TVKeypointRCNN)):
        raise ValueError(
            f"from_torchvision: {type(tv_model).__name__} is not supported yet; the mask and "
            "keypoint heads come with structvision's Mask R-CNN"
        )
    if isinstance(tv_model, TVFasterRCNN):
        model = _convert_faster_rcnn(tv_model)
    else:
        raise ValueError(
            f"from_torchvision: cannot convert {type(tv_model).__name__}; supported: "
            "torchvision.models.detection.FasterRCNN"
        )
    device = next(tv_model.parameters()).device
    return model.to(device).train(tv_model.training)


class TorchvisionBody(nn.Module):
    """A torchvision feature extractor (e.g. MobileNetV3's ``IntermediateLayerGetter``) used as
    a structvision backbone: ``(B, 3, H, W)`` -> ``OrderedDict`` with ``out_channels``."""

    def __init__(self, body: nn.Module, *, out_channels: list[int]) -> None:
        super().__init__()
        self.body = body
        self.out_channels = list(out_channels)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(self.body(images))


def _resnet_depth(body: nn.Module) -> int:
    blocks = [len(body.layer1), len(body.layer2), len(body.layer3), len(body.layer4)]
    block_type = type(body.layer1[0])
    known = {
        (BasicBlock, (2, 2, 2, 2)): 18,
        (BasicBlock, (3, 4, 6, 3)): 34,
        (Bottleneck, (3, 4, 6, 3)): 50,
    }
    depth = known.get((block_type, tuple(blocks)))
    if depth is None:
        raise ValueError(
            f"from_torchvision: unsupported ResNet ({block_type.__name__}, blocks {blocks})"
        )
    return depth


def _norm_name(module: nn.Module) -> str:
    from torchvision.ops.misc import FrozenBatchNorm2d

    if isinstance(module, FrozenBatchNorm2d):
        return "frozen"
    if isinstance(module, nn.BatchNorm2d):
        return "batch"
    if isinstance(module, nn.GroupNorm):
        return "group"
    raise ValueError(f"from_torchvision: unsupported norm layer {type(module).__name__}")


def _convert_backbone(tv_backbone: nn.Module) -> tuple[BackboneWithFPN, dict[str, str], str]:
    """Our backbone + FPN, the map of torchvision feature names to ours, and the key prefix that
    torchvision's ``backbone.body.`` weights take in our model."""
    body, tv_fpn = tv_backbone.body, tv_backbone.fpn
    in_channels = [block[0].in_channels for block in tv_fpn.inner_blocks]
    if "layer1" in body:  # a ResNet IntermediateLayerGetter: return_layers {"layer1": "0", ...}
        return_layers = body.return_layers
        returned = [int(name.removeprefix("layer")) for name in return_layers]
        ours = resnet_backbone(
            _resnet_depth(body),
            norm=_norm_name(body.bn1),
            trainable_layers=5,
            returned_layers=returned,
        )
        names = {
            tv_name: f"p{int(layer.removeprefix('layer')) + 1}"
            for layer, tv_name in return_layers.items()
        }
        prefix = "backbone.backbone."
    else:  # MobileNet and others: keep torchvision's module, names and weights as they are
        ours = TorchvisionBody(copy.deepcopy(body), out_channels=in_channels)
        names = {name: name for name in body.return_layers.values()}
        prefix = "backbone.backbone.body."
    extra = tv_fpn.extra_blocks
    if isinstance(extra, LastLevelMaxPool):
        extra_block, names["pool"] = "maxpool", "pool"
    elif isinstance(extra, LastLevelP6P7):
        extra_block = "p6p7"
    elif extra is None:
        extra_block = None
    else:
        raise ValueError(f"from_torchvision: unsupported FPN extra block {type(extra).__name__}")
    inner = tv_fpn.inner_blocks[0]
    norm = type(inner[1]) if len(inner) > 1 else None
    fpn = FeaturePyramidNetwork(
        in_channels, tv_fpn.layer_blocks[0][0].out_channels, extra_block=extra_block, norm=norm
    )
    return BackboneWithFPN(ours, fpn), names, prefix


def _convert_box_head(
    tv_head: nn.Module, input_size: tuple[int, int, int]
) -> tuple[nn.Module, int]:
    if isinstance(tv_head, TVTwoMLPHead):
        return TwoMLPHead(
            tv_head.fc6.in_features, tv_head.fc7.out_features
        ), tv_head.fc7.out_features
    if isinstance(tv_head, TVConvFCHead):
        convs = [m for m in tv_head.modules() if isinstance(m, nn.Conv2d)]
        linears = [m for m in tv_head.modules() if isinstance(m, nn.Linear)]
        norms = [m for m in tv_head.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        head = ConvFCHead(
            input_size,
            [conv.out_channels for conv in convs],
            [linear.out_features for linear in linears],
            norm_layer=type(norms[0]) if norms else None,
        )
        return head, linears[-1].out_features
    raise ValueError(f"from_torchvision: unsupported box head {type(tv_head).__name__}")


def _convert_faster_rcnn(tv: TVFasterRCNN) -> FasterRCNN:
    if tv.transform.fixed_size is not None:
        raise ValueError("from_torchvision: transforms with a fixed_size are not supported")
    backbone, names, body_prefix = _convert_backbone(tv.backbone)
    out_channels = tv.backbone.out_channels
    tv_pool = tv.roi_heads.box_roi_pool
    output_size = tuple(tv_pool.output_size)
    box_roi_pool = MultiScaleRoIAlign(
        # torchvision pools only the listed maps that exist (MobileNet's FPN has two of four)
        [names[name] for name in tv_pool.featmap_names if name in names],
        output_size,
        tv_pool.sampling_ratio,
        canonical_scale=tv_pool.canonical_scale,
        canonical_level=tv_pool.canonical_level,
    )
    box_head, representation_size = _convert_box_head(
        tv.roi_heads.box_head, (out_channels, *output_size)
    )
    tv_rpn, tv_roi = tv.rpn, tv.roi_heads
    anchors = tv_rpn.anchor_generator
    transform = tv.transform
    model = faster_rcnn(
        backbone=backbone,
        out_channels=out_channels,
        num_classes=tv_roi.box_predictor.cls_score.out_features,
        anchor_sizes=anchors.sizes,
        aspect_ratios=anchors.aspect_ratios,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        representation_size=representation_size,
        rpn_head=RPNHead(
            out_channels, anchors.num_anchors_per_location()[0], conv_depth=len(tv_rpn.head.conv)
        ),
        min_size=tuple(transform.min_size),
        max_size=transform.max_size,
        image_mean=transform.image_mean,
        image_std=transform.image_std,
        size_divisible=transform.size_divisible,
        rpn_pre_nms_top_n_train=tv_rpn._pre_nms_top_n["training"],
        rpn_pre_nms_top_n_test=tv_rpn._pre_nms_top_n["testing"],
        rpn_post_nms_top_n_train=tv_rpn._post_nms_top_n["training"],
        rpn_post_nms_top_n_test=tv_rpn._post_nms_top_n["testing"],
        rpn_nms_thresh=tv_rpn.nms_thresh,
        rpn_fg_iou_thresh=tv_rpn.proposal_matcher.high_threshold,
        rpn_bg_iou_thresh=tv_rpn.proposal_matcher.low_threshold,
        rpn_batch_size_per_image=tv_rpn.fg_bg_sampler.batch_size_per_image,
        rpn_positive_fraction=tv_rpn.fg_bg_sampler.positive_fraction,
        rpn_score_thresh=tv_rpn.score_thresh,
        box_score_thresh=tv_roi.score_thresh,
        box_nms_thresh=tv_roi.nms_thresh,
        box_detections_per_img=tv_roi.detections_per_img,
        box_fg_iou_thresh=tv_roi.proposal_matcher.high_threshold,
        box_bg_iou_thresh=tv_roi.proposal_matcher.low_threshold,
        box_batch_size_per_image=tv_roi.fg_bg_sampler.batch_size_per_image,
        box_positive_fraction=tv_roi.fg_bg_sampler.positive_fraction,
        bbox_reg_weights=tuple(tv_roi.box_coder.weights),
    )
    _load_converted(model, tv, body_prefix=body_prefix)
    return model


def _load_converted(model: nn.Module, tv: nn.Module, *, body_prefix: str) -> None:
    """Copy ``tv``'s weights into ``model`` (strict), renaming ``backbone.body.`` keys; the
    ``requires_grad`` flags (frozen backbone stages) are copied too."""

    def rename(name: str) -> str:
        if name.startswith("backbone.body."):
            return body_prefix + name.removeprefix("backbone.body.")
        return name

    state = OrderedDict((rename(k), v) for k, v in tv.state_dict().items())
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            "from_torchvision: converted weights do not fit; missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    ours = dict(model.named_parameters())
    for name, parameter in tv.named_parameters():
        ours[rename(name)].requires_grad_(parameter.requires_grad)
