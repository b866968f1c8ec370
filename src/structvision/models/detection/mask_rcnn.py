"""Mask R-CNN (He et al. 2017): Faster R-CNN plus a small FCN that predicts one mask per box.

    images -> DetectionTransform -> backbone (+ FPN) -> RPN -> proposals -> RoIHeads -> boxes
                                          features + boxes -> MaskBranch -> (K, C, 28, 28) logits

The mask branch pools each RoI (``MultiScaleRoIAlign``, 14 x 14, two samples per bin), runs four
``3x3 conv + ReLU`` layers (:class:`MaskHead`), doubles the resolution with a transposed
convolution and predicts one ``28 x 28`` mask logit map per class (:class:`MaskPredictor`).

Training (positive RoIs only, from the same sample as the box head): the target of each RoI is
its matched ground-truth mask cut out at the RoI by RoIAlign (:func:`mask_targets`), and the
loss is the mean binary cross-entropy with logits of the mask of the RoI's *own* class
(:func:`mask_rcnn_loss`): classes do not compete, the box head decides the class.

Inference: the mask of each detection's predicted class goes through a sigmoid
(:func:`select_class_masks`) and is pasted into the input image at the detection's box
(:func:`~structvision.structures.paste_masks_in_image`), giving ``masks (D, 1, H, W)``
probabilities, as torchvision returns them (threshold at 0.5 for a binary mask). With
``mask_paste="where_sampled"`` (the small models' default) the mask is placed where its
training targets were sampled instead
(:func:`~structvision.structures.paste_masks_where_sampled`): torchvision's paste moves every
mask edge by up to a pixel, which on 128-pixel images costs a third of the mask AP that
perfect masks would score (BENCHMARKS.md).

The arithmetic follows torchvision's ``roi_heads`` (``project_masks_on_boxes``,
``maskrcnn_loss``, ``maskrcnn_inference``), so converted torchvision weights give the same masks.
Module names inside :class:`MaskHead` and :class:`MaskPredictor` equal torchvision's
(``MaskRCNNHeads``: ``0.0.weight``; ``MaskRCNNPredictor``: ``conv5_mask``, ``mask_fcn_logits``).

``mask_pooler="pool"`` in the builders swaps RoIAlign for RoIPool in both the box and the mask
branch: the paper's RoIAlign ablation (Table 2c) as one flag.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.backbones import resnet_backbone, small_backbone
from structvision.models.detection.faster_rcnn import (
    SMALL_MODEL_DEFAULTS,
    check_detection_inputs,
    faster_rcnn,
    small_box_head,
)
from structvision.models.detection.roi_heads import (
    ConvFCHead,
    RoIHeads,
    _conv_norm_relu,
    rerank_detections,
    select_positive_samples,
)
from structvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from structvision.models.detection.transform import DetectionTransform
from structvision.models.fpn import BackboneWithFPN, FeaturePyramidNetwork
from structvision.ops import MultiScaleRoIAlign, MultiScaleRoIPool, roi_align
from structvision.structures import paste_masks_in_image, paste_masks_where_sampled

__all__ = [
    "MASK_PASTES",
    "MASK_POOLERS",
    "MaskBranch",
    "MaskHead",
    "MaskPredictor",
    "MaskRCNN",
    "fpn_roi_poolers",
    "mask_rcnn",
    "mask_rcnn_loss",
    "mask_rcnn_resnet50_fpn",
    "mask_rcnn_resnet50_fpn_v2",
    "mask_rcnn_small_fpn",
    "mask_targets",
    "select_class_masks",
]

#: How predicted masks are placed in the image: ``"torchvision"`` (its integer-box resizing,
#: :func:`~structvision.structures.paste_masks_in_image`) or ``"where_sampled"`` (the inverse of
#: the training targets' sampling, :func:`~structvision.structures.paste_masks_where_sampled`).
MASK_PASTES = ("torchvision", "where_sampled")

#: Values of the builders' ``mask_pooler``: RoIAlign (Mask R-CNN) or RoIPool (the ablation).
MASK_POOLERS = ("align", "pool")

FPN_LEVELS = ["p2", "p3", "p4", "p5"]


# --------------------------------------------------------------------------- network


class MaskHead(nn.Sequential):
    """Stacked ``3x3 conv [+ norm] + ReLU`` blocks over pooled RoI features (the mask FCN).

    Args:
        in_channels: channels of the pooled features (the FPN width).
        layers: output channels of each convolution (torchvision: ``(256, 256, 256, 256)``).
        norm_layer: e.g. ``nn.BatchNorm2d`` (torchvision's v2 head); ``None``: convolutions
            with bias and no norm.
    """

    def __init__(
        self,
        in_channels: int,
        layers: Sequence[int],
        *,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        if len(layers) == 0:
            raise ValueError("layers must list at least one convolution width, got none")
        blocks = []
        previous = in_channels
        for channels in layers:
            blocks.append(_conv_norm_relu(previous, int(channels), norm_layer))
            previous = int(channels)
        super().__init__(*blocks)
        self.out_channels = previous
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class MaskPredictor(nn.Sequential):
    """``2x2`` stride-2 transposed conv + ReLU, then a ``1x1`` conv: one mask logit map per class.

    ``(K, in_channels, S, S) -> (K, num_classes, 2S, 2S)`` (``S = 14``: 28 x 28 masks).

    Args:
        in_channels: channels of the mask head's output.
        dim_reduced: channels of the transposed convolution (256 in torchvision).
        num_classes: number of classes *including* background (its map is never used).
    """

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__(
            OrderedDict(
                [
                    ("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("mask_fcn_logits", nn.Conv2d(dim_reduced, num_classes, 1, 1, 0)),
                ]
            )
        )
        for name, parameter in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(parameter, mode="fan_out", nonlinearity="relu")


class MaskBranch(nn.Module):
    """RoI pooling, :class:`MaskHead` and :class:`MaskPredictor`: boxes -> mask logits.

    Args:
        roi_pool: ``(features, boxes, image_sizes) -> (K, C, S, S)``, e.g.
            ``MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 14, 2)``.
        head: ``(K, C, S, S) -> (K, D, S, S)``.
        predictor: ``(K, D, S, S) -> (K, num_classes, M, M)``.
        rescore: rank detections by their mask's confidence too (see
            :func:`paste_detection_masks`; ``False`` is torchvision's).
        paste: how masks are placed in the image, one of :data:`MASK_PASTES`.
    """

    def __init__(
        self,
        *,
        roi_pool: nn.Module,
        head: nn.Module,
        predictor: nn.Module,
        rescore: bool = False,
        paste: str = "torchvision",
    ) -> None:
        super().__init__()
        if paste not in MASK_PASTES:
            raise ValueError(f"mask paste must be one of {MASK_PASTES}, got {paste!r}")
        self.paste = paste
        self.roi_pool = roi_pool
        self.head = head
        self.predictor = predictor
        self.rescore = bool(rescore)

    def forward(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> Tensor:
        """``B`` lists of ``(N_i, 4)`` ``xyxy`` input-pixel boxes -> ``(K, num_classes, M, M)``
        mask logits, ``K = sum(N_i)``, image by image."""
        roi_features = self.roi_pool(features, boxes, image_sizes)  # (K, C, S, S)
        return self.predictor(self.head(roi_features))


# --------------------------------------------------------------------------- targets and loss


def mask_targets(
    gt_masks: Tensor, proposal_boxes: Tensor, matched_idxs: Tensor, mask_size: int
) -> Tensor:
    """Cut each RoI's matched ground-truth mask out at the RoI and resample it to ``M x M``.

    RoIAlign of the float mask with torchvision's settings (``aligned=False``, adaptive
    sampling, ``spatial_scale=1``): pixel ``(x, y)`` of the mask is read at continuous position
    ``(x, y)``, and a bin averages ``ceil(box_side / M)`` bilinear samples per axis. The targets
    are soft (fractions in ``[0, 1]`` at mask edges), not thresholded, as in torchvision.

    Args:
        gt_masks: ``(G, H, W)`` ground-truth masks of one image (uint8 or float, 1 = object),
            in the same pixels as the boxes.
        proposal_boxes: ``(P, 4)`` ``xyxy`` RoIs in image pixels.
        matched_idxs: ``(P,)`` int64 index into ``gt_masks`` of each RoI's ground truth.
        mask_size: ``M``, side of the target in cells.

    Returns:
        ``(P, M, M)`` float targets in ``[0, 1]``, in ``proposal_boxes.dtype``.
    """
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks must have shape (G, H, W), got {tuple(gt_masks.shape)}")
    if proposal_boxes.ndim != 2 or proposal_boxes.shape[1] != 4:
        raise ValueError(
            f"proposal_boxes must have shape (P, 4), got {tuple(proposal_boxes.shape)}"
        )
    if matched_idxs.shape != proposal_boxes.shape[:1]:
        raise ValueError(
            f"matched_idxs must have shape ({proposal_boxes.shape[0]},), "
            f"got {tuple(matched_idxs.shape)}"
        )
    if mask_size <= 0:
        raise ValueError(f"mask_size must be positive, got {mask_size}")
    rois = torch.cat((matched_idxs[:, None].to(proposal_boxes), proposal_boxes), dim=1)  # (P, 5)
    masks = gt_masks[:, None].to(proposal_boxes)  # (G, 1, H, W)
    return roi_align(masks, rois, mask_size, spatial_scale=1.0, sampling_ratio=-1)[:, 0]


def mask_rcnn_loss(mask_logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy with logits of each RoI's mask for its own class.

    Only the ``labels[k]`` map of RoI ``k`` enters the loss (the other classes' maps get no
    gradient); the mean runs over all RoIs and all ``M x M`` cells.

    Args:
        mask_logits: ``(P, C, M, M)`` logits of the positive RoIs.
        targets: ``(P, M, M)`` targets in ``[0, 1]`` (:func:`mask_targets`).
        labels: ``(P,)`` int64 class of each RoI, in ``1..C-1``.

    Returns:
        Scalar loss; ``0`` (attached to the graph) when ``P == 0``.
    """
    if mask_logits.ndim != 4 or mask_logits.shape[-1] != mask_logits.shape[-2]:
        raise ValueError(f"mask_logits must be (P, C, M, M), got {tuple(mask_logits.shape)}")
    num_rois, _, size, _ = mask_logits.shape
    if targets.shape != (num_rois, size, size) or labels.shape != (num_rois,):
        raise ValueError(
            f"targets and labels must have shapes ({num_rois}, {size}, {size}) and "
            f"({num_rois},), got {tuple(targets.shape)} and {tuple(labels.shape)}"
        )
    if num_rois == 0:
        return mask_logits.sum() * 0.0
    own_class_logits = mask_logits[torch.arange(num_rois, device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(own_class_logits, targets)  # mean over P * M * M


def select_class_masks(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """Probabilities of each detection's own-class mask: ``sigmoid(mask_logits[k, labels[k]])``.

    Args:
        mask_logits: ``(D, C, M, M)`` logits.
        labels: ``(D,)`` int64 predicted classes.

    Returns:
        ``(D, 1, M, M)`` probabilities in ``[0, 1]``.
    """
    if mask_logits.ndim != 4 or labels.shape != mask_logits.shape[:1]:
        raise ValueError(
            f"mask_logits must be (D, C, M, M) and labels (D,), got "
            f"{tuple(mask_logits.shape)} and {tuple(labels.shape)}"
        )
    index = torch.arange(mask_logits.shape[0], device=labels.device)
    return mask_logits[index, labels][:, None].sigmoid()


# --------------------------------------------------------------------------- model


class MaskRCNN(nn.Module):
    """Faster R-CNN's transform, backbone, RPN and box heads plus a :class:`MaskBranch`.

    Training: ``model(images, targets)`` with ``masks (N_i, H_i, W_i)`` uint8 in every target
    returns ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg`` and
    ``loss_mask``. Eval: ``model(images)`` returns per image ``boxes (D, 4)``, ``labels (D,)``,
    ``scores (D,)`` and ``masks (D, 1, H, W)`` float probabilities, in input-image pixels;
    with the mask branch's ``rescore`` the scores are box scores times maskness and
    ``box_scores (D,)`` holds the box scores (:func:`paste_detection_masks`).
    """

    def __init__(
        self,
        *,
        transform: DetectionTransform,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        mask_branch: MaskBranch,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.mask_branch = mask_branch

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_detection_inputs(images, targets, training=self.training)
        if self.training:
            _check_mask_targets(images, targets)
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, rpn_losses = self.rpn(batch, features, targets)
        if self.training:
            box_losses, samples = self.roi_heads.forward_train(
                features, proposals, batch.image_sizes, targets
            )
            loss_mask = self._mask_loss(features, batch.image_sizes, targets, *samples)
            return {**rpn_losses, **box_losses, "loss_mask": loss_mask}
        detections, _ = self.roi_heads(features, proposals, batch.image_sizes)
        detections = self._predict_masks(features, batch.image_sizes, detections)
        detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        return paste_detection_masks(
            detections,
            original_sizes,
            rescore=self.mask_branch.rescore,
            paste=self.mask_branch.paste,
            input_sizes=batch.image_sizes,
        )

    def _mask_loss(
        self,
        features: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
        sampled_proposals: list[Tensor],
        matched_idxs: list[Tensor],
        labels: list[Tensor],
    ) -> Tensor:
        """``loss_mask`` over the positive RoIs of the box head's sample."""
        positive_boxes, positive_idxs, positive_labels = select_positive_samples(
            sampled_proposals, matched_idxs, labels
        )
        mask_logits = self.mask_branch(features, positive_boxes, image_sizes)  # (P, C, M, M)
        size = mask_logits.shape[-1]
        mask_target = torch.cat(
            [
                mask_targets(target["masks"], boxes, idxs, size)
                for target, boxes, idxs in zip(targets, positive_boxes, positive_idxs, strict=True)
            ]
        )  # (P, M, M)
        return mask_rcnn_loss(mask_logits, mask_target, torch.cat(positive_labels))

    def _predict_masks(
        self,
        features: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        detections: list[dict[str, Tensor]],
    ) -> list[dict[str, Tensor]]:
        """Add ``masks (D_i, 1, M, M)`` (own-class probabilities in box coordinates)."""
        boxes = [detection["boxes"] for detection in detections]
        mask_logits = self.mask_branch(features, boxes, image_sizes)  # (D, C, M, M)
        labels = torch.cat([detection["labels"] for detection in detections])
        probabilities = select_class_masks(mask_logits, labels)  # (D, 1, M, M)
        per_image = probabilities.split([len(b) for b in boxes])
        return [
            {**detection, "masks": masks}
            for detection, masks in zip(detections, per_image, strict=True)
        ]


def paste_detection_masks(
    detections: list[dict[str, Tensor]],
    image_sizes: list[tuple[int, int]],
    *,
    rescore: bool = False,
    paste: str = "torchvision",
    input_sizes: list[tuple[int, int]] | None = None,
) -> list[dict[str, Tensor]]:
    """Paste each detection's ``(D, 1, M, M)`` box-relative mask probabilities into its image:
    ``masks (D, 1, H, W)`` at the (input-image) ``boxes``, per image.

    ``paste`` is one of :data:`MASK_PASTES`; ``"where_sampled"`` needs ``input_sizes``, each
    image's size after the detector's resize (its ``image_sizes`` are the original sizes).

    With ``rescore`` each detection's ``scores`` becomes its box score times its mask's
    "maskness" (SOLO, Wang et al. 2020): the mean probability over the pixels the mask claims
    (probability > 0.5; 0 for an empty mask), and the detections are re-sorted by it;
    ``box_scores`` keeps the box score. A confident box with a vague mask then ranks below one
    with a crisp mask, which is what mask AP rewards."""
    if paste == "where_sampled" and input_sizes is None:
        raise ValueError("paste='where_sampled' needs the input_sizes of the resized images")
    results = []
    for index, (detection, size) in enumerate(zip(detections, image_sizes, strict=True)):
        grids, boxes = detection["masks"][:, 0], detection["boxes"]
        if paste == "where_sampled":
            (input_height, input_width), (height, width) = input_sizes[index], size
            scale = (input_height / height, input_width / width)
            masks = paste_masks_where_sampled(grids, boxes, size, scale=scale)[:, None]
        else:
            masks = paste_masks_in_image(grids, boxes, size)[:, None]
        result = {**detection, "masks": masks}
        if rescore:
            probabilities = masks.flatten(1).float()
            claimed = probabilities > 0.5
            maskness = (probabilities * claimed).sum(1) / claimed.sum(1).clamp(min=1)
            result = rerank_detections(result, maskness)
        results.append(result)
    return results


def _check_mask_targets(images: list[Tensor], targets: list[dict[str, Tensor]] | None) -> None:
    """Every target needs ``masks (N, H, W)``: one per box, the image's own size."""
    for index, (image, target) in enumerate(zip(images, targets or [], strict=True)):
        masks = target.get("masks")
        expected = (target["boxes"].shape[0], *image.shape[-2:])
        if masks is None or tuple(masks.shape) != tuple(expected):
            shape = None if masks is None else tuple(masks.shape)
            raise ValueError(
                f"targets[{index}]['masks'] must have shape {tuple(expected)} (one mask per box, "
                f"the image's size), got {shape}"
            )


# --------------------------------------------------------------------------- builders


def fpn_roi_poolers(
    kind: str,
    featmap_names: Sequence[str] = FPN_LEVELS,
    *,
    box_size: int = 7,
    instance_size: int = 14,
    sampling_ratio: int = 2,
    canonical_scale: int = 224,
) -> tuple[nn.Module, nn.Module]:
    """Box and mask (or keypoint) RoI poolers over an FPN: both RoIAlign or both RoIPool.

    Args:
        kind: ``"align"`` (``MultiScaleRoIAlign``) or ``"pool"`` (``MultiScaleRoIPool``).
        featmap_names: the pyramid levels to pool from, finest first.
        box_size: output side of the box pooler (7).
        instance_size: output side of the mask pooler (14).
        sampling_ratio: RoIAlign samples per bin and axis.
        canonical_scale: box side in pixels pooled from ``p4`` (the FPN paper's 224).

    Returns:
        ``(box_roi_pool, mask_roi_pool)``.
    """
    names = list(featmap_names)
    if kind == "align":
        return (
            MultiScaleRoIAlign(names, box_size, sampling_ratio, canonical_scale=canonical_scale),
            MultiScaleRoIAlign(
                names, instance_size, sampling_ratio, canonical_scale=canonical_scale
            ),
        )
    if kind == "pool":
        return (
            MultiScaleRoIPool(names, box_size, canonical_scale=canonical_scale),
            MultiScaleRoIPool(names, instance_size, canonical_scale=canonical_scale),
        )
    raise ValueError(f"mask_pooler must be one of {MASK_POOLERS}, got {kind!r}")


def mask_rcnn(
    *,
    out_channels: int,
    num_classes: int,
    mask_roi_pool: nn.Module,
    mask_layers: Sequence[int] = (256, 256, 256, 256),
    mask_dim_reduced: int = 256,
    mask_norm_layer: Callable[[int], nn.Module] | None = None,
    mask_rescoring: bool = False,
    mask_paste: str = "torchvision",
    **detector_settings,
) -> MaskRCNN:
    """Assemble a Mask R-CNN: `faster_rcnn`'s detector plus a mask branch.

    Args:
        out_channels: channels of the backbone's feature maps.
        num_classes: classes including the background (COCO: 91).
        mask_roi_pool: pooler of the mask branch (``(K, out_channels, 14, 14)``).
        mask_layers: widths of :class:`MaskHead`'s convolutions.
        mask_dim_reduced: channels of :class:`MaskPredictor`'s transposed convolution.
        mask_norm_layer: norm of the mask head (``nn.BatchNorm2d`` in torchvision's v2).
        mask_rescoring: detection scores times the mask's maskness
            (:func:`paste_detection_masks`; ``False`` is torchvision's).
        mask_paste: how masks are placed in the image, one of :data:`MASK_PASTES`.
        **detector_settings: every other argument of
            :func:`~structvision.models.detection.faster_rcnn` (``backbone``, anchors,
            ``box_roi_pool``, thresholds, transform sizes, ...).
    """
    detector = faster_rcnn(out_channels=out_channels, num_classes=num_classes, **detector_settings)
    head = MaskHead(out_channels, mask_layers, norm_layer=mask_norm_layer)
    mask_branch = MaskBranch(
        roi_pool=mask_roi_pool,
        head=head,
        predictor=MaskPredictor(head.out_channels, mask_dim_reduced, num_classes),
        rescore=mask_rescoring,
        paste=mask_paste,
    )
    return MaskRCNN(
        transform=detector.transform,
        backbone=detector.backbone,
        rpn=detector.rpn,
        roi_heads=detector.roi_heads,
        mask_branch=mask_branch,
    )


def mask_rcnn_resnet50_fpn(
    *,
    num_classes: int = 91,
    norm: str = "frozen",
    trainable_layers: int = 3,
    weights_path: str | Path | None = None,
    mask_pooler: str = "align",
    **overrides,
) -> MaskRCNN:
    """torchvision's ``maskrcnn_resnet50_fpn``: ResNet-50 FPN, TwoMLPHead, 4 x 256 mask head.

    ``num_classes`` counts the background too (COCO: 91). ``weights_path`` loads an ImageNet
    ResNet-50 state dict from a local file. ``mask_pooler="pool"`` uses RoIPool instead of
    RoIAlign in the box and mask branches. Other keyword arguments override :func:`mask_rcnn`'s.
    """
    body = resnet_backbone(
        50, norm=norm, trainable_layers=trainable_layers, weights_path=weights_path
    )
    fpn = FeaturePyramidNetwork(list(body.out_channels.values()), 256, extra_block="maxpool")
    box_roi_pool, mask_roi_pool = fpn_roi_poolers(mask_pooler)
    settings = {
        "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "box_roi_pool": box_roi_pool,
        "mask_roi_pool": mask_roi_pool,
        **overrides,
    }
    return mask_rcnn(
        backbone=BackboneWithFPN(body, fpn), out_channels=256, num_classes=num_classes, **settings
    )


def mask_rcnn_resnet50_fpn_v2(
    *,
    num_classes: int = 91,
    trainable_layers: int = 3,
    weights_path: str | Path | None = None,
    mask_pooler: str = "align",
    **overrides,
) -> MaskRCNN:
    """torchvision's ``maskrcnn_resnet50_fpn_v2``: batch-normed FPN, 2-conv RPN head, 4-conv +
    1-FC box head and a batch-normed 4 x 256 mask head (Li et al. 2021)."""
    body = resnet_backbone(
        50, norm="batch", trainable_layers=trainable_layers, weights_path=weights_path
    )
    fpn = FeaturePyramidNetwork(
        list(body.out_channels.values()), 256, extra_block="maxpool", norm=nn.BatchNorm2d
    )
    box_roi_pool, mask_roi_pool = fpn_roi_poolers(mask_pooler)
    settings = {
        "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "box_roi_pool": box_roi_pool,
        "mask_roi_pool": mask_roi_pool,
        "rpn_head": RPNHead(256, 3, conv_depth=2),
        "box_head": ConvFCHead(
            (256, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
        ),
        "mask_norm_layer": nn.BatchNorm2d,
        **overrides,
    }
    return mask_rcnn(
        backbone=BackboneWithFPN(body, fpn), out_channels=256, num_classes=num_classes, **settings
    )


def mask_rcnn_small_fpn(
    *,
    num_classes: int,
    mask_pooler: str = "align",
    width: int = 32,
    norm: str = "group",
    fpn_channels: int = 64,
    roi_canonical_scale: int = 224,
    box_head: str | nn.Module = "mlp",
    mask_rescoring: bool = True,
    mask_paste: str = "where_sampled",
    box_soft_nms_sigma: float = 0.5,
    **overrides,
) -> MaskRCNN:
    """A small Mask R-CNN with FPN that trains from scratch on a CPU (cf. `faster_rcnn_small_fpn`).

    The mask head has four convolutions of ``fpn_channels`` channels. ``mask_pooler="pool"``
    uses RoIPool instead of RoIAlign in the box and mask branches (the RoIAlign ablation).
    ``roi_canonical_scale`` is the box side (pixels) that both poolers assign to ``p4``.
    Unlike torchvision's model it ranks detections by box score times maskness
    (``mask_rescoring``, :func:`paste_detection_masks`), places masks where their training
    targets were sampled (``mask_paste``, :data:`MASK_PASTES`) and selects detections by
    Gaussian soft-NMS (``box_soft_nms_sigma``; 0 gives torchvision's NMS).
    """
    head = small_box_head(
        box_head, channels=fpn_channels, representation_size=overrides.get("representation_size")
    )
    body = small_backbone(width=width, norm=norm)
    fpn = FeaturePyramidNetwork(
        list(body.out_channels.values()), fpn_channels, extra_block="maxpool"
    )
    box_roi_pool, mask_roi_pool = fpn_roi_poolers(mask_pooler, canonical_scale=roi_canonical_scale)
    settings = {
        **SMALL_MODEL_DEFAULTS,
        "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "box_head": head,
        "box_roi_pool": box_roi_pool,
        "mask_roi_pool": mask_roi_pool,
        "mask_layers": (fpn_channels,) * 4,
        "mask_dim_reduced": fpn_channels,
        "mask_rescoring": mask_rescoring,
        "mask_paste": mask_paste,
        "box_soft_nms_sigma": box_soft_nms_sigma,
        **overrides,
    }
    return mask_rcnn(
        backbone=BackboneWithFPN(body, fpn),
        out_channels=fpn_channels,
        num_classes=num_classes,
        **settings,
    )
