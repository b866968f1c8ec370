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
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection import KeypointRCNN as TVKeypointRCNN
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead as TVConvFCHead
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads as TVKeypointRCNNHeads
from torchvision.models.detection.keypoint_rcnn import (
    KeypointRCNNPredictor as TVKeypointRCNNPredictor,
)
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads as TVMaskRCNNHeads
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as TVMaskRCNNPredictor
from torchvision.models.optical_flow import RAFT as TVRAFT
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.segmentation import FCN as TVSegmentationFCN
from torchvision.models.segmentation import DeepLabV3 as TVDeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead as TVDeepLabHead
from torchvision.models.segmentation.fcn import FCNHead as TVFCNHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from structvision.models.backbones import dilated_resnet_backbone, resnet_backbone
from structvision.models.detection.faster_rcnn import FasterRCNN, faster_rcnn
from structvision.models.detection.keypoint_rcnn import (
    KeypointBranch,
    KeypointHead,
    KeypointPredictor,
    KeypointRCNN,
)
from structvision.models.detection.mask_rcnn import MaskBranch, MaskHead, MaskPredictor, MaskRCNN
from structvision.models.detection.roi_heads import ConvFCHead, TwoMLPHead
from structvision.models.detection.rpn import RPNHead
from structvision.models.flow.raft import RAFT, raft
from structvision.models.fpn import BackboneWithFPN, FeaturePyramidNetwork
from structvision.models.segmentation.deeplab import DeepLabHead, DilatedSegmenter, FCNHead
from structvision.ops import MultiScaleRoIAlign

__all__ = ["TorchvisionBody", "from_torchvision"]


def from_torchvision(tv_model: nn.Module) -> nn.Module:
    """The structvision equivalent of a torchvision model, with its weights.

    Supported: torchvision's ``FasterRCNN`` (``fasterrcnn_resnet50_fpn``,
    ``fasterrcnn_resnet50_fpn_v2``, ``fasterrcnn_mobilenet_v3_large_fpn`` and
    ``..._320_fpn``, or any ``FasterRCNN`` over a ResNet or MobileNet FPN backbone); its
    subclasses ``MaskRCNN`` (``maskrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn_v2``) and
    ``KeypointRCNN`` (``keypointrcnn_resnet50_fpn``), which become structvision's
    :class:`~structvision.models.detection.MaskRCNN` and
    :class:`~structvision.models.detection.KeypointRCNN`; and the
    semantic segmentation models ``FCN`` (``fcn_resnet50``, ``fcn_resnet101``) and
    ``DeepLabV3`` (``deeplabv3_resnet50``, ``deeplabv3_resnet101``) over a ResNet, with or
    without ``aux_loss``, any ``num_classes``, which become a
    :class:`~structvision.models.segmentation.DilatedSegmenter`. torchvision's segmentation
    models take normalised images while ours take ``[0, 1]`` images and normalise them with
    ImageNet's mean/std: ``ours(x)[i]["semantic_logits"]`` equals
    ``tv_model((x - mean) / std)["out"][i]``. Optical flow: ``RAFT`` (``raft_small``,
    ``raft_large``, or any configuration of torchvision's class) becomes
    :class:`~structvision.models.flow.RAFT`; it takes ``[0, 1]`` frames where torchvision's
    takes ``[-1, 1]``: ``ours.flows(a, b, n)[-1]`` equals ``tv_model(2 a - 1, 2 b - 1, n)[-1]``.
    The result is in the same train/eval mode as ``tv_model`` and on its device.
    """
    if isinstance(tv_model, TVMaskRCNN):
        model = _convert_mask_rcnn(tv_model)
    elif isinstance(tv_model, TVKeypointRCNN):
        model = _convert_keypoint_rcnn(tv_model)
    elif isinstance(tv_model, TVFasterRCNN):
        model = _convert_faster_rcnn(tv_model)
    elif isinstance(tv_model, (TVSegmentationFCN, TVDeepLabV3)):
        model = _convert_dilated_segmenter(tv_model)
    elif isinstance(tv_model, TVRAFT):
        model = _convert_raft(tv_model)
    else:
        raise ValueError(
            f"from_torchvision: cannot convert {type(tv_model).__name__}; supported: "
            "torchvision.models.detection.FasterRCNN (and its MaskRCNN, KeypointRCNN), "
            "torchvision.models.segmentation.FCN and "
            "DeepLabV3 (ResNet backbones), torchvision.models.optical_flow.RAFT"
        )
    device = next(tv_model.parameters()).device
    return model.to(device).train(tv_model.training)


def _raft_encoder_settings(encoder: nn.Module) -> tuple[tuple[int, ...], str, str]:
    """``(layers, block, norm)`` of a torchvision RAFT ``FeatureEncoder``."""
    from torchvision.models.optical_flow.raft import BottleneckBlock as TVBottleneckBlock

    stem = encoder.convnormrelu
    layers = (
        stem[0].out_channels,
        *(
            getattr(encoder, name)[-1].convnormrelu2[0].out_channels
            for name in ("layer1", "layer2", "layer3")
        ),
        encoder.conv.out_channels,
    )
    block = "bottleneck" if isinstance(encoder.layer1[0], TVBottleneckBlock) else "residual"
    if block == "bottleneck":
        layers = (
            layers[0],
            *(
                getattr(encoder, name)[-1].convnormrelu3[0].out_channels
                for name in ("layer1", "layer2", "layer3")
            ),
            layers[4],
        )
    norm = "none"
    if isinstance(stem[1], nn.InstanceNorm2d):
        norm = "instance"
    elif isinstance(stem[1], nn.BatchNorm2d):
        norm = "batch"
    return layers, block, norm


def _convert_raft(tv: TVRAFT) -> RAFT:
    """torchvision's RAFT with its hyper-parameters read off the modules, weights loaded as they
    are (the module names agree)."""
    feature_layers, feature_block, feature_norm = _raft_encoder_settings(tv.feature_encoder)
    context_layers, context_block, context_norm = _raft_encoder_settings(tv.context_encoder)
    motion = tv.update_block.motion_encoder
    corr_layers = (motion.convcorr1[0].out_channels,)
    if not isinstance(motion.convcorr2, nn.Identity):
        corr_layers = (*corr_layers, motion.convcorr2[0].out_channels)
    recurrent = tv.update_block.recurrent_block
    cells = [recurrent.convgru1]
    if isinstance(recurrent.convgru2, nn.Module):
        cells.append(recurrent.convgru2)
    model = raft(
        feature_layers=feature_layers,
        feature_block=feature_block,
        feature_norm=feature_norm,
        context_layers=context_layers,
        context_block=context_block,
        context_norm=context_norm,
        num_levels=tv.corr_block.num_levels,
        radius=tv.corr_block.radius,
        corr_layers=corr_layers,
        flow_layers=(motion.convflow1[0].out_channels, motion.convflow2[0].out_channels),
        motion_channels=motion.out_channels,
        hidden_size=recurrent.hidden_size,
        gru_kernels=tuple(cell.convz.kernel_size for cell in cells),
        gru_paddings=tuple(cell.convz.padding for cell in cells),
        flow_head_hidden=tv.update_block.flow_head.conv1.out_channels,
        convex_upsampling=tv.mask_predictor is not None,
    )
    if tv.mask_predictor is not None:
        model.mask_predictor.multiplier = tv.mask_predictor.multiplier
    model.load_state_dict(tv.state_dict())
    return model


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


def _convert_faster_rcnn(
    tv: TVFasterRCNN,
    *,
    add_branch: Callable[[FasterRCNN, dict[str, str]], nn.Module] | None = None,
) -> nn.Module:
    """Our Faster R-CNN for ``tv``; ``add_branch(detector, feature_names)`` may wrap it with
    a mask or keypoint branch (``feature_names``: torchvision feature map name -> ours)
    before the weights are loaded."""
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
    if add_branch is not None:
        model = add_branch(model, names)
    _load_converted(model, tv, body_prefix=body_prefix)
    return model


def _load_converted(model: nn.Module, tv: nn.Module, *, body_prefix: str) -> None:
    """Copy ``tv``'s weights into ``model`` (strict), renaming ``backbone.body.`` keys; the
    ``requires_grad`` flags (frozen backbone stages) are copied too."""

    def rename(name: str) -> str:
        if name.startswith("backbone.body."):
            return body_prefix + name.removeprefix("backbone.body.")
        for tv_prefix, our_prefix in _BRANCH_RENAMES.items():
            if name.startswith(tv_prefix):
                return our_prefix + name.removeprefix(tv_prefix)
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


# ============================================================================================
# Mask R-CNN and Keypoint R-CNN: torchvision's MaskRCNN / KeypointRCNN -> MaskRCNN / KeypointRCNN
# ============================================================================================
#
# The detector converts as a Faster R-CNN; the mask (keypoint) pooler, head and predictor become
# a MaskBranch (KeypointBranch) whose layers keep torchvision's names under a new prefix.

_BRANCH_RENAMES = {
    "roi_heads.mask_head.": "mask_branch.head.",
    "roi_heads.mask_predictor.": "mask_branch.predictor.",
    "roi_heads.keypoint_head.": "keypoint_branch.head.",
    "roi_heads.keypoint_predictor.": "keypoint_branch.predictor.",
}


def _convert_mask_rcnn(tv: TVMaskRCNN) -> MaskRCNN:
    tv_roi = tv.roi_heads

    def add_mask_branch(detector: FasterRCNN, names: dict[str, str]) -> MaskRCNN:
        head = _convert_mask_head(tv_roi.mask_head, tv.backbone.out_channels)
        tv_predictor = tv_roi.mask_predictor
        if not isinstance(tv_predictor, TVMaskRCNNPredictor):
            raise ValueError(
                f"from_torchvision: unsupported mask predictor {type(tv_predictor).__name__}"
            )
        predictor = MaskPredictor(
            tv_predictor.conv5_mask.in_channels,
            tv_predictor.conv5_mask.out_channels,
            tv_predictor.mask_fcn_logits.out_channels,
        )
        branch = MaskBranch(
            roi_pool=_convert_instance_pool(tv_roi.mask_roi_pool, names),
            head=head,
            predictor=predictor,
        )
        return MaskRCNN(
            transform=detector.transform,
            backbone=detector.backbone,
            rpn=detector.rpn,
            roi_heads=detector.roi_heads,
            mask_branch=branch,
        )

    return _convert_faster_rcnn(tv, add_branch=add_mask_branch)


def _convert_keypoint_rcnn(tv: TVKeypointRCNN) -> KeypointRCNN:
    tv_roi = tv.roi_heads

    def add_keypoint_branch(detector: FasterRCNN, names: dict[str, str]) -> KeypointRCNN:
        tv_head, tv_predictor = tv_roi.keypoint_head, tv_roi.keypoint_predictor
        if not isinstance(tv_head, TVKeypointRCNNHeads):
            raise ValueError(
                f"from_torchvision: unsupported keypoint head {type(tv_head).__name__}"
            )
        convs = [m for m in tv_head.children() if isinstance(m, nn.Conv2d)]
        if any(conv.kernel_size != (3, 3) or conv.dilation != (1, 1) for conv in convs):
            raise ValueError("from_torchvision: keypoint head convolutions must be 3x3, undilated")
        if not isinstance(tv_predictor, TVKeypointRCNNPredictor) or tv_predictor.up_scale != 2:
            raise ValueError(
                f"from_torchvision: unsupported keypoint predictor {type(tv_predictor).__name__}"
            )
        lowres = tv_predictor.kps_score_lowres
        branch = KeypointBranch(
            roi_pool=_convert_instance_pool(tv_roi.keypoint_roi_pool, names),
            head=KeypointHead(convs[0].in_channels, [conv.out_channels for conv in convs]),
            predictor=KeypointPredictor(lowres.in_channels, lowres.out_channels),
        )
        return KeypointRCNN(
            transform=detector.transform,
            backbone=detector.backbone,
            rpn=detector.rpn,
            roi_heads=detector.roi_heads,
            keypoint_branch=branch,
        )

    return _convert_faster_rcnn(tv, add_branch=add_keypoint_branch)


def _convert_instance_pool(tv_pool: nn.Module, names: dict[str, str]) -> MultiScaleRoIAlign:
    """Our ``MultiScaleRoIAlign`` for torchvision's mask or keypoint pooler."""
    return MultiScaleRoIAlign(
        [names[name] for name in tv_pool.featmap_names if name in names],
        tuple(tv_pool.output_size),
        tv_pool.sampling_ratio,
        canonical_scale=tv_pool.canonical_scale,
        canonical_level=tv_pool.canonical_level,
    )


def _convert_mask_head(tv_head: nn.Module, in_channels: int) -> MaskHead:
    """torchvision's ``MaskRCNNHeads`` (conv [+ BatchNorm] + ReLU blocks) -> :class:`MaskHead`."""
    if not isinstance(tv_head, TVMaskRCNNHeads):
        raise ValueError(f"from_torchvision: unsupported mask head {type(tv_head).__name__}")
    convs = [m for m in tv_head.modules() if isinstance(m, nn.Conv2d)]
    if any(conv.kernel_size != (3, 3) or conv.dilation != (1, 1) for conv in convs):
        raise ValueError("from_torchvision: mask head convolutions must be 3x3, undilated")
    norms = {type(m) for m in tv_head.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}
    if norms - {nn.BatchNorm2d}:
        raise ValueError(f"from_torchvision: unsupported mask head norm {sorted(map(str, norms))}")
    norm_layer = nn.BatchNorm2d if norms else None
    return MaskHead(in_channels, [conv.out_channels for conv in convs], norm_layer=norm_layer)


# ============================================================================================
# Semantic segmentation: torchvision's FCN-ResNet and DeepLabV3 -> DilatedSegmenter
# ============================================================================================
#
# torchvision's segmentation models take *normalised* images; ours take [0, 1] images and
# normalise with ImageNet's mean/std (what torchvision's weights and references assume), so
# ``ours(x)[i]["semantic_logits"]`` equals ``tv((x - mean) / std)["out"][i]``. Parameter names
# map one to one: the backbone's keys are equal, the heads' are renamed below.

_SEGMENTATION_RESNET_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def _convert_dilated_segmenter(tv: TVSegmentationFCN | TVDeepLabV3) -> DilatedSegmenter:
    """torchvision ``FCN``/``DeepLabV3`` over a ResNet -> :class:`DilatedSegmenter`."""
    backbone = _convert_segmentation_backbone(tv.backbone, aux=tv.aux_classifier is not None)
    renames = {"backbone.": "backbone."}
    classifier = _convert_segmentation_head(tv.classifier, "classifier", renames)
    aux_classifier = None
    if tv.aux_classifier is not None:
        aux_classifier = _convert_segmentation_head(tv.aux_classifier, "aux_classifier", renames)
    model = DilatedSegmenter(
        backbone=backbone,
        classifier=classifier,
        aux_classifier=aux_classifier,
        num_classes=classifier.score.out_channels,
    )
    _load_renamed_segmenter(model, tv, renames)
    return model


def _convert_segmentation_backbone(tv_backbone: nn.Module, *, aux: bool) -> nn.Module:
    """A :func:`dilated_resnet_backbone` with the layout (depth, dilation, norm) of torchvision's
    ``IntermediateLayerGetter`` over a ResNet returning ``{"layer4": "out", "layer3": "aux"}``."""
    if not all(hasattr(tv_backbone, f"layer{i}") for i in range(1, 5)):
        raise ValueError(
            "from_torchvision: only segmentation models over a ResNet backbone are supported "
            f"(got a backbone with modules {list(dict(tv_backbone.named_children()))})"
        )
    expected_layers = {"layer4": "out", **({"layer3": "aux"} if aux else {})}
    if dict(tv_backbone.return_layers) != expected_layers:
        raise ValueError(
            f"from_torchvision: backbone return_layers must be {expected_layers}, "
            f"got {dict(tv_backbone.return_layers)}"
        )
    stages = [getattr(tv_backbone, f"layer{i}") for i in range(1, 5)]
    depth = _SEGMENTATION_RESNET_DEPTHS.get(tuple(len(stage) for stage in stages))
    if depth is None or not isinstance(stages[0][0], Bottleneck):
        raise ValueError(
            "from_torchvision: unsupported segmentation ResNet (blocks "
            f"{[len(stage) for stage in stages]}, {type(stages[0][0]).__name__}); "
            f"supported: Bottleneck ResNet-{sorted(_SEGMENTATION_RESNET_DEPTHS.values())}"
        )
    # a stage whose first shortcut is not strided traded its stride for dilation
    dilated = tuple(stage[0].downsample[0].stride[0] == 1 for stage in stages[1:])
    backbone = dilated_resnet_backbone(
        depth,
        replace_stride_with_dilation=dilated,
        norm=_norm_name(tv_backbone.bn1),
        trainable_layers=5,
        returned_layers=(3, 4) if aux else (4,),
    )
    tv_convs = [(m.stride, m.padding, m.dilation) for m in tv_backbone.modules() if _is_conv(m)]
    our_convs = [(m.stride, m.padding, m.dilation) for m in backbone.modules() if _is_conv(m)]
    if tv_convs != our_convs:
        raise ValueError("from_torchvision: the ResNet's convolution strides/dilations differ")
    return backbone


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d)


def _convert_segmentation_head(
    tv_head: nn.Module, prefix: str, renames: dict[str, str]
) -> FCNHead | DeepLabHead:
    """Our head with ``tv_head``'s hyper-parameters; adds its key renames (torchvision module
    path -> ours, both under ``prefix``) to ``renames``."""
    if isinstance(tv_head, TVFCNHead):
        conv, dropout, score = tv_head[0], tv_head[3], tv_head[4]
        head = FCNHead(
            conv.in_channels,
            score.out_channels,
            hidden_channels=conv.out_channels,
            dropout=dropout.p,
        )
        renames.update(
            {f"{prefix}.0.": f"{prefix}.block.conv.", f"{prefix}.1.": f"{prefix}.block.bn."}
        )
        renames[f"{prefix}.4."] = f"{prefix}.score."
        return head
    if isinstance(tv_head, TVDeepLabHead):
        tv_aspp, score = tv_head[0], tv_head[4]
        atrous_rates = [branch[0].dilation[0] for branch in tv_aspp.convs[1:-1]]
        head = DeepLabHead(
            tv_aspp.convs[0][0].in_channels,
            score.out_channels,
            atrous_rates=atrous_rates,
            aspp_channels=tv_aspp.project[0].out_channels,
            aspp_dropout=tv_aspp.project[3].p,
        )
        tv_branches, ours = f"{prefix}.0.convs.", f"{prefix}.aspp."
        # ASPP branches in torchvision: convs[0] = 1x1 (conv, bn, relu), convs[1 .. R] atrous
        # (conv, bn, relu), convs[R + 1] pooling (pool, conv, bn, relu); then project.
        renames[f"{tv_branches}0.0."] = f"{ours}conv1x1.conv."
        renames[f"{tv_branches}0.1."] = f"{ours}conv1x1.bn."
        for index in range(len(atrous_rates)):
            renames[f"{tv_branches}{index + 1}.0."] = f"{ours}atrous.{index}.conv."
            renames[f"{tv_branches}{index + 1}.1."] = f"{ours}atrous.{index}.bn."
        pooling = f"{tv_branches}{len(atrous_rates) + 1}."
        renames[f"{pooling}1."] = f"{ours}pooling.conv."
        renames[f"{pooling}2."] = f"{ours}pooling.bn."
        renames[f"{prefix}.0.project.0."] = f"{ours}project.conv."
        renames[f"{prefix}.0.project.1."] = f"{ours}project.bn."
        renames[f"{prefix}.1."] = f"{prefix}.block.conv."
        renames[f"{prefix}.2."] = f"{prefix}.block.bn."
        renames[f"{prefix}.4."] = f"{prefix}.score."
        return head
    raise ValueError(
        f"from_torchvision: unsupported segmentation head {type(tv_head).__name__} at {prefix!r}"
    )


def _load_renamed_segmenter(model: nn.Module, tv: nn.Module, renames: dict[str, str]) -> None:
    """Copy ``tv``'s weights (strict) and ``requires_grad`` flags into ``model``, renaming each
    key by its longest matching prefix in ``renames``."""

    def rename(name: str) -> str:
        matches = [prefix for prefix in renames if name.startswith(prefix)]
        if not matches:
            raise ValueError(f"from_torchvision: no counterpart for torchvision's {name!r}")
        prefix = max(matches, key=len)
        return renames[prefix] + name.removeprefix(prefix)

    state = OrderedDict((rename(key), value) for key, value in tv.state_dict().items())
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            "from_torchvision: converted segmentation weights do not fit; missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    ours = dict(model.named_parameters())
    for name, parameter in tv.named_parameters():
        ours[rename(name)].requires_grad_(parameter.requires_grad)


# ---------------------------------------------------------------------------------------------
# Fine-tuning from torchvision's COCO-trained detectors


def _tv_detection_builder(
    model: nn.Module, state_dict: dict[str, Tensor]
) -> Callable[..., nn.Module]:
    """The torchvision builder whose state dict ``state_dict`` is, for a model like ``model``."""
    import torchvision.models.detection as tvd

    from structvision.models.detection import KeypointRCNN, MaskRCNN

    v2 = "backbone.fpn.inner_blocks.0.1.running_mean" in state_dict  # v2 normalises its FPN
    if isinstance(model, KeypointRCNN):
        return tvd.keypointrcnn_resnet50_fpn
    if isinstance(model, MaskRCNN):
        return tvd.maskrcnn_resnet50_fpn_v2 if v2 else tvd.maskrcnn_resnet50_fpn
    return tvd.fasterrcnn_resnet50_fpn_v2 if v2 else tvd.fasterrcnn_resnet50_fpn


def read_state_dict_file(path: str | os.PathLike, *, what: str = "model.init") -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (loaded with
    ``weights_only=True``; a ``{"model": state_dict}`` training checkpoint, as torchvision's
    reference scripts write, is unwrapped). Errors name ``what`` and the file."""
    from safetensors.torch import load_file

    from structvision.safeload import load_tensors_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except Exception as error:  # safetensors' own error types
            raise ValueError(
                f"{what} {path} is not a readable safetensors file ({error})"
            ) from None
    else:
        state = load_tensors_file(path, what=what)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{what} {path} must hold a state dict (names to tensors)")
    return state


def init_from_torchvision_detection(
    model: nn.Module, state_dict: dict[str, Tensor], *, source: str = "model.init"
) -> list[str]:
    """Start ``model`` (a ResNet-50-FPN Faster, Mask or Keypoint R-CNN of structvision) from a
    torchvision COCO-trained state dict, e.g. what
    ``torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="DEFAULT")`` downloads.

    The state dict is loaded into the matching torchvision model (its class and keypoint counts
    read off the state dict), converted with `from_torchvision`, and every converted tensor
    whose name and shape ``model`` shares is copied in. The layers that depend on the classes
    (or keypoints) of the data — the box classifier and regressor, the mask predictor, the
    keypoint predictor — keep their fresh initialisation when ``model`` predicts another set.

    Returns:
        The names of ``model``'s tensors that were not taken from ``state_dict``.

    Raises:
        ValueError: ``state_dict`` is not a torchvision detector of that kind, or it leaves
            more than the class-specific layers of ``model`` unset (another architecture).
    """
    builder = _tv_detection_builder(model, state_dict)
    name = builder.__name__
    try:
        kwargs: dict[str, int] = {
            "num_classes": int(state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0])
        }
        if name.startswith("keypoint"):
            kwargs["num_keypoints"] = int(
                state_dict["roi_heads.keypoint_predictor.kps_score_lowres.weight"].shape[1]
            )
    except KeyError as error:
        raise ValueError(f"{source}: not a torchvision {name} state dict (no {error})") from None
    tv_model = builder(weights=None, weights_backbone=None, **kwargs)
    missing, unexpected = tv_model.load_state_dict(state_dict, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{source}: not a torchvision {name} state dict: {len(missing)} missing key(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    converted = from_torchvision(tv_model.eval()).state_dict()
    target = model.state_dict()
    taken = {k: v for k, v in converted.items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(taken, strict=False)
    left = sorted(key for key in target if key not in taken)
    foreign = [key for key in left if "predictor" not in key]
    if foreign:
        raise ValueError(
            f"{source}: the {name} weights do not fit this model beyond its class-specific "
            f"layers ({len(foreign)} tensors, first {foreign[:3]}); use model.arch="
            f"{'resnet50_fpn_v2' if name.endswith('_v2') else 'resnet50_fpn'}"
        )
    return left
