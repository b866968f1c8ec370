"""Keypoint R-CNN (He et al. 2017, section 5): Faster R-CNN plus one heatmap per keypoint.

    images -> DetectionTransform -> backbone (+ FPN) -> RPN -> proposals -> RoIHeads -> boxes
                                      features + boxes -> KeypointBranch -> (K_roi, K, 56, 56)

The keypoint branch pools each RoI (``MultiScaleRoIAlign``, 14 x 14), runs eight
``3x3 conv 512 + ReLU`` layers (:class:`KeypointHead`), then a stride-2 transposed convolution
to ``28 x 28`` and a 2x bilinear upsampling to ``56 x 56`` logit maps, one per keypoint type
(:class:`KeypointPredictor`).

Training (positive RoIs only, from the box head's sample): each labelled keypoint of the RoI's
matched ground truth that falls inside the RoI is a one-hot target over the ``56 * 56`` cells
(:func:`~structvision.structures.keypoints_to_heatmap_targets`), or with ``target_sigma`` a
Gaussian distribution centred exactly on it
(:func:`~structvision.structures.keypoints_to_heatmap_distributions`); the loss is the
cross-entropy over those cells, averaged over the valid (RoI, keypoint) pairs
(:func:`keypoint_rcnn_loss`).

Inference: :func:`~structvision.structures.heatmaps_to_keypoints` decodes each detection's maps
into ``keypoints (D, K, 3)`` ``(x, y, 1)`` and ``keypoints_scores (D, K)`` (heatmap logits at
the chosen points), mapped to input-image pixels like the boxes, as torchvision returns them.

Names inside :class:`KeypointHead` and :class:`KeypointPredictor` equal torchvision's
(``KeypointRCNNHeads``: ``0.weight, 2.weight, ...``; ``KeypointRCNNPredictor``:
``kps_score_lowres``), and the arithmetic follows its ``keypointrcnn_loss`` /
``keypointrcnn_inference``, so converted torchvision weights give the same keypoints.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
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
    RoIHeads,
    rerank_detections,
    select_positive_samples,
)
from structvision.models.detection.rpn import RegionProposalNetwork
from structvision.models.detection.transform import DetectionTransform
from structvision.models.fpn import BackboneWithFPN, FeaturePyramidNetwork
from structvision.ops import MultiScaleRoIAlign
from structvision.structures import (
    heatmaps_to_keypoints,
    keypoints_to_heatmap_distributions,
    keypoints_to_heatmap_targets,
    scale_boxes,
)

__all__ = [
    "KeypointBranch",
    "KeypointHead",
    "KeypointPredictor",
    "KeypointRCNN",
    "keypoint_rcnn",
    "keypoint_rcnn_loss",
    "keypoint_rcnn_resnet50_fpn",
    "keypoint_rcnn_small_fpn",
]

FPN_LEVELS = ["p2", "p3", "p4", "p5"]

#: torchvision's training sizes for Keypoint R-CNN (one drawn per image; evaluation uses 800).
KEYPOINT_MIN_SIZES = (640, 672, 704, 736, 768, 800)


# --------------------------------------------------------------------------- network


class KeypointHead(nn.Sequential):
    """Stacked ``3x3 conv + ReLU`` layers over pooled RoI features (no norm).

    Args:
        in_channels: channels of the pooled features (the FPN width).
        layers: output channels of each convolution (torchvision: eight of 512).
    """

    def __init__(self, in_channels: int, layers: Sequence[int]) -> None:
        widths = list(layers) if isinstance(layers, (list, tuple)) else None
        if not widths or not all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in widths
        ):
            raise ValueError(
                "keypoint head layers must list one or more convolution widths (positive "
                f"integers), got {layers!r}"
            )
        modules: list[nn.Module] = []
        previous = in_channels
        for channels in layers:
            modules.append(nn.Conv2d(previous, int(channels), 3, stride=1, padding=1))
            modules.append(nn.ReLU(inplace=True))
            previous = int(channels)
        super().__init__(*modules)
        self.out_channels = previous
        for module in self.children():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)


class KeypointPredictor(nn.Module):
    """``4x4`` stride-2 transposed conv to one map per keypoint, then 2x bilinear upsampling.

    ``(R, in_channels, S, S) -> (R, num_keypoints, 4S, 4S)`` logits (``S = 14``: 56 x 56).

    Args:
        in_channels: channels of the keypoint head's output.
        num_keypoints: ``K``, keypoint types (COCO persons: 17).
    """

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        if num_keypoints <= 0:
            raise ValueError(f"num_keypoints must be positive, got {num_keypoints}")
        self.kps_score_lowres = nn.ConvTranspose2d(
            in_channels, num_keypoints, 4, stride=2, padding=1
        )
        nn.init.kaiming_normal_(self.kps_score_lowres.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.kps_score_lowres.bias)
        self.num_keypoints = num_keypoints
        self.up_scale = 2

    def forward(self, features: Tensor) -> Tensor:
        """``(R, C, S, S)`` -> ``(R, K, 4S, 4S)`` heatmap logits."""
        lowres = self.kps_score_lowres(features)  # (R, K, 2S, 2S)
        return F.interpolate(
            lowres,
            scale_factor=float(self.up_scale),
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )


class KeypointBranch(nn.Module):
    """RoI pooling, :class:`KeypointHead` and :class:`KeypointPredictor`: boxes -> heatmaps.

    Args:
        roi_pool: ``(features, boxes, image_sizes) -> (R, C, S, S)``, e.g.
            ``MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 14, 2)``.
        head: ``(R, C, S, S) -> (R, D, S, S)``.
        predictor: ``(R, D, S, S) -> (R, K, 4S, 4S)``.
        roi_expansion: the heatmaps cover each box grown by this factor about its centre
            (``>= 1``; 1 is torchvision's). A box that cuts off a wrist or ankle still lets the
            heatmap reach it, as top-down pose estimators do with their 1.25x person boxes.
        rescore: rank detections by their pose, not their box alone (see
            :func:`add_decoded_keypoints`; ``False`` is torchvision's).
        subpixel: place each keypoint between pixels at its heatmap peak's parabola vertex
            (:func:`~structvision.structures.heatmaps_to_keypoints`; ``False`` is
            torchvision's).
        target_sigma: train on Gaussian target distributions of this standard deviation in
            heatmap cells, centred exactly on each keypoint
            (:func:`~structvision.structures.keypoints_to_heatmap_distributions`); 0 trains on
            the one-hot cell of each keypoint, as torchvision does.
    """

    def __init__(
        self,
        *,
        roi_pool: nn.Module,
        head: nn.Module,
        predictor: nn.Module,
        roi_expansion: float = 1.0,
        rescore: bool = False,
        subpixel: bool = False,
        target_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        is_number = isinstance(roi_expansion, (int, float)) and not isinstance(roi_expansion, bool)
        if not (is_number and 1.0 <= roi_expansion < math.inf):
            raise ValueError(f"roi_expansion must be a finite number >= 1, got {roi_expansion!r}")
        self.roi_pool = roi_pool
        self.head = head
        self.predictor = predictor
        self.roi_expansion = float(roi_expansion)
        self.rescore = bool(rescore)
        self.subpixel = bool(subpixel)
        if not (isinstance(target_sigma, (int, float)) and 0 <= target_sigma < math.inf):
            raise ValueError(f"target_sigma must be a finite number >= 0, got {target_sigma!r}")
        self.target_sigma = float(target_sigma)

    def rois(self, boxes: list[Tensor]) -> list[Tensor]:
        """The regions the heatmaps cover: ``boxes`` grown by ``roi_expansion``."""
        if self.roi_expansion == 1.0:
            return boxes
        return [scale_boxes(image_boxes, self.roi_expansion) for image_boxes in boxes]

    def forward(
        self,
        features: dict[str, Tensor],
        rois: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> Tensor:
        """``B`` lists of ``(N_i, 4)`` ``xyxy`` input-pixel RoIs (see :meth:`rois`) ->
        ``(R, K, 56, 56)`` heatmap logits over them, ``R = sum(N_i)``, image by image."""
        roi_features = self.roi_pool(features, rois, image_sizes)  # (R, C, S, S)
        return self.predictor(self.head(roi_features))


# --------------------------------------------------------------------------- loss


def keypoint_rcnn_loss(keypoint_logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Cross-entropy over the ``S * S`` heatmap cells, mean over the valid (RoI, keypoint) pairs.

    Args:
        keypoint_logits: ``(R, K, S, S)`` heatmap logits of the positive RoIs.
        targets: ``(R, K)`` int64 flat target cell ``row * S + col``
            (:func:`~structvision.structures.keypoints_to_heatmap_targets`, torchvision's), or
            ``(R, K, S, S)`` float target distributions
            (:func:`~structvision.structures.keypoints_to_heatmap_distributions`).
        valid: ``(R, K)`` bool, labelled keypoints inside their RoI.

    Returns:
        Scalar loss; ``0`` (attached to the graph) when nothing is valid. With distributions
        ``q`` it is ``-sum(q log softmax(logits))``, whose minimum is ``q``'s entropy, not 0.
    """
    if keypoint_logits.ndim != 4 or keypoint_logits.shape[-1] != keypoint_logits.shape[-2]:
        raise ValueError(
            f"keypoint_logits must be (R, K, S, S), got {tuple(keypoint_logits.shape)}"
        )
    num_rois, num_keypoints, size, _ = keypoint_logits.shape
    soft = targets.is_floating_point()
    expected = (num_rois, num_keypoints, size, size) if soft else (num_rois, num_keypoints)
    if targets.shape != expected or valid.shape != (num_rois, num_keypoints):
        raise ValueError(
            f"targets must have shape {expected} and valid ({num_rois}, {num_keypoints}), got "
            f"{tuple(targets.shape)} and {tuple(valid.shape)}"
        )
    valid_pairs = torch.where(valid.reshape(-1))[0]  # (V,)
    if valid_pairs.numel() == 0:
        return keypoint_logits.sum() * 0.0
    flat_logits = keypoint_logits.reshape(num_rois * num_keypoints, size * size)[valid_pairs]
    if soft:
        flat_targets = targets.reshape(num_rois * num_keypoints, size * size)[valid_pairs]
        return -(flat_targets * flat_logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    return F.cross_entropy(flat_logits, targets.reshape(-1)[valid_pairs])


# --------------------------------------------------------------------------- model


class KeypointRCNN(nn.Module):
    """Faster R-CNN's transform, backbone, RPN and box heads plus a :class:`KeypointBranch`.

    Training: ``model(images, targets)`` with ``keypoints (N_i, K, 3)`` float ``(x, y,
    visibility)`` in every target returns ``loss_objectness``, ``loss_rpn_box_reg``,
    ``loss_classifier``, ``loss_box_reg`` and ``loss_keypoint``. Eval: ``model(images)`` returns
    per image ``boxes (D, 4)``, ``labels (D,)``, ``scores (D,)``, ``keypoints (D, K, 3)`` as
    ``(x, y, 1)`` and ``keypoints_scores (D, K)``, in input-image pixels; with the keypoint
    branch's ``rescore`` the scores are box scores times pose confidence and ``box_scores
    (D,)`` holds the box scores (:func:`add_decoded_keypoints`).
    """

    def __init__(
        self,
        *,
        transform: DetectionTransform,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        keypoint_branch: KeypointBranch,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.keypoint_branch = keypoint_branch

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_detection_inputs(images, targets, training=self.training)
        if self.training:
            _check_keypoint_targets(targets)
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
            loss_keypoint = self._keypoint_loss(features, batch.image_sizes, targets, *samples)
            return {**rpn_losses, **box_losses, "loss_keypoint": loss_keypoint}
        detections, _ = self.roi_heads(features, proposals, batch.image_sizes)
        detections = self._predict_keypoints(features, batch.image_sizes, detections)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def _keypoint_loss(
        self,
        features: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
        sampled_proposals: list[Tensor],
        matched_idxs: list[Tensor],
        labels: list[Tensor],
    ) -> Tensor:
        """``loss_keypoint`` over the positive RoIs of the box head's sample."""
        positive_boxes, positive_idxs, _ = select_positive_samples(
            sampled_proposals, matched_idxs, labels
        )
        rois = self.keypoint_branch.rois(positive_boxes)
        keypoint_logits = self.keypoint_branch(features, rois, image_sizes)
        heatmap_size = keypoint_logits.shape[-1]
        sigma = self.keypoint_branch.target_sigma
        encoded = [
            keypoints_to_heatmap_distributions(
                target["keypoints"][idxs], image_rois, heatmap_size, sigma
            )
            if sigma > 0
            else keypoints_to_heatmap_targets(target["keypoints"][idxs], image_rois, heatmap_size)
            for target, image_rois, idxs in zip(targets, rois, positive_idxs, strict=True)
        ]  # per image: targets (P_i, K) or (P_i, K, S, S), valid (P_i, K)
        heatmap_targets = torch.cat([image_targets for image_targets, _ in encoded])
        valid = torch.cat([image_valid for _, image_valid in encoded])
        return keypoint_rcnn_loss(keypoint_logits, heatmap_targets, valid)

    def _predict_keypoints(
        self,
        features: dict[str, Tensor],
        image_sizes: list[tuple[int, int]],
        detections: list[dict[str, Tensor]],
    ) -> list[dict[str, Tensor]]:
        """Add ``keypoints (D_i, K, 3)`` and ``keypoints_scores (D_i, K)`` in input pixels."""
        rois = self.keypoint_branch.rois([detection["boxes"] for detection in detections])
        keypoint_logits = self.keypoint_branch(features, rois, image_sizes)  # (D, K, S, S)
        branch = self.keypoint_branch
        return add_decoded_keypoints(
            detections, rois, keypoint_logits, rescore=branch.rescore, subpixel=branch.subpixel
        )


def add_decoded_keypoints(
    detections: list[dict[str, Tensor]],
    rois: list[Tensor],
    keypoint_logits: Tensor,
    *,
    rescore: bool = False,
    subpixel: bool = False,
) -> list[dict[str, Tensor]]:
    """``detections`` with ``keypoints (D_i, K, 3)`` and ``keypoints_scores (D_i, K)`` decoded
    from ``(D, K, S, S)`` heatmap logits over each image's ``rois`` (image by image), to a
    fraction of a pixel with ``subpixel`` (:func:`~structvision.structures.heatmaps_to_keypoints`).

    With ``rescore`` each detection's ``scores`` becomes its box score times its pose
    confidence, the mean over keypoints of the heatmap's peak probability (softmax over the
    ``S * S`` cells), and the detections are re-sorted by it; ``box_scores`` keeps the box
    score. A confident box around a figure whose joints the heatmaps cannot place (a crowded or
    cut-off figure) then ranks below a well-posed one, which is what keypoint AP rewards
    (top-down pose estimators rescore their person boxes the same way)."""
    results = []
    for detection, image_rois, image_logits in zip(
        detections, rois, keypoint_logits.split([len(r) for r in rois]), strict=True
    ):
        keypoints, scores = heatmaps_to_keypoints(image_logits, image_rois, subpixel=subpixel)
        result = {**detection, "keypoints": keypoints, "keypoints_scores": scores}
        if rescore:
            confidence = image_logits.flatten(2).softmax(dim=-1).amax(dim=-1).mean(dim=1)
            result = rerank_detections(result, confidence)
        results.append(result)
    return results


def _check_keypoint_targets(targets: list[dict[str, Tensor]] | None) -> None:
    """Every target needs float ``keypoints (N, K, 3)``, one set per box."""
    for index, target in enumerate(targets or []):
        keypoints = target.get("keypoints")
        num_boxes = target["boxes"].shape[0]
        if (
            keypoints is None
            or keypoints.ndim != 3
            or keypoints.shape[0] != num_boxes
            or keypoints.shape[2] != 3
            or not keypoints.is_floating_point()
        ):
            got = None if keypoints is None else f"{keypoints.dtype} {tuple(keypoints.shape)}"
            raise ValueError(
                f"targets[{index}]['keypoints'] must be a float ({num_boxes}, K, 3) tensor of "
                f"(x, y, visibility), got {got}"
            )


# --------------------------------------------------------------------------- builders


def keypoint_rcnn(
    *,
    out_channels: int,
    num_classes: int,
    num_keypoints: int,
    keypoint_roi_pool: nn.Module,
    keypoint_layers: Sequence[int] = (512,) * 8,
    keypoint_roi_expansion: float = 1.0,
    keypoint_rescoring: bool = False,
    keypoint_subpixel: bool = False,
    keypoint_target_sigma: float = 0.0,
    **detector_settings,
) -> KeypointRCNN:
    """Assemble a Keypoint R-CNN: `faster_rcnn`'s detector plus a keypoint branch.

    Args:
        out_channels: channels of the backbone's feature maps.
        num_classes: classes including the background (COCO persons: 2).
        num_keypoints: ``K``, keypoint types (COCO persons: 17).
        keypoint_roi_pool: pooler of the keypoint branch (``(R, out_channels, 14, 14)``).
        keypoint_layers: widths of :class:`KeypointHead`'s convolutions.
        keypoint_roi_expansion: the keypoint heatmaps cover each box grown by this factor
            (:class:`KeypointBranch`'s ``roi_expansion``; 1 is torchvision's).
        keypoint_rescoring: detection scores times the pose confidence
            (:func:`add_decoded_keypoints`; ``False`` is torchvision's).
        keypoint_subpixel: keypoints refined between pixels (:class:`KeypointBranch`'s
            ``subpixel``; ``False`` is torchvision's).
        keypoint_target_sigma: train on Gaussian heatmap targets of this width in cells
            (:class:`KeypointBranch`'s ``target_sigma``; 0, one-hot cells, is torchvision's).
        **detector_settings: every other argument of
            :func:`~structvision.models.detection.faster_rcnn` (``backbone``, anchors,
            ``box_roi_pool``, thresholds, transform sizes, ...).
    """
    detector = faster_rcnn(out_channels=out_channels, num_classes=num_classes, **detector_settings)
    head = KeypointHead(out_channels, keypoint_layers)
    keypoint_branch = KeypointBranch(
        roi_pool=keypoint_roi_pool,
        head=head,
        predictor=KeypointPredictor(head.out_channels, num_keypoints),
        roi_expansion=keypoint_roi_expansion,
        rescore=keypoint_rescoring,
        subpixel=keypoint_subpixel,
        target_sigma=keypoint_target_sigma,
    )
    return KeypointRCNN(
        transform=detector.transform,
        backbone=detector.backbone,
        rpn=detector.rpn,
        roi_heads=detector.roi_heads,
        keypoint_branch=keypoint_branch,
    )


def keypoint_rcnn_resnet50_fpn(
    *,
    num_classes: int = 2,
    num_keypoints: int = 17,
    norm: str = "frozen",
    trainable_layers: int = 3,
    weights_path: str | Path | None = None,
    **overrides,
) -> KeypointRCNN:
    """torchvision's ``keypointrcnn_resnet50_fpn``: ResNet-50 FPN, TwoMLPHead, 8 x 512 keypoint
    head, training sizes 640..800.

    ``num_classes`` counts the background too (COCO persons: 2). ``weights_path`` loads an
    ImageNet ResNet-50 state dict from a local file. Other keyword arguments override
    :func:`keypoint_rcnn`'s.
    """
    body = resnet_backbone(
        50, norm=norm, trainable_layers=trainable_layers, weights_path=weights_path
    )
    fpn = FeaturePyramidNetwork(list(body.out_channels.values()), 256, extra_block="maxpool")
    settings = {
        "min_size": KEYPOINT_MIN_SIZES,
        "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "box_roi_pool": MultiScaleRoIAlign(FPN_LEVELS, 7, 2),
        "keypoint_roi_pool": MultiScaleRoIAlign(FPN_LEVELS, 14, 2),
        **overrides,
    }
    return keypoint_rcnn(
        backbone=BackboneWithFPN(body, fpn),
        out_channels=256,
        num_classes=num_classes,
        num_keypoints=num_keypoints,
        **settings,
    )


def keypoint_rcnn_small_fpn(
    *,
    num_classes: int,
    num_keypoints: int,
    width: int = 32,
    norm: str = "group",
    fpn_channels: int = 64,
    roi_canonical_scale: int = 224,
    box_head: str | nn.Module = "mlp",
    keypoint_rescoring: bool = True,
    keypoint_subpixel: bool = True,
    box_soft_nms_sigma: float = 0.5,
    **overrides,
) -> KeypointRCNN:
    """A small Keypoint R-CNN with FPN that trains from scratch on a CPU
    (cf. `faster_rcnn_small_fpn`); the keypoint head has four convolutions of ``2 *
    fpn_channels`` channels. ``roi_canonical_scale`` is the box side (pixels) that both poolers
    assign to ``p4``. Unlike torchvision's model it ranks detections by box score times pose
    confidence (``keypoint_rescoring``, :func:`add_decoded_keypoints`), places keypoints
    between pixels (``keypoint_subpixel``) and selects detections by Gaussian soft-NMS
    (``box_soft_nms_sigma``; 0 gives torchvision's NMS)."""
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
        "box_head": head,
        "box_roi_pool": MultiScaleRoIAlign(FPN_LEVELS, 7, 2, canonical_scale=roi_canonical_scale),
        "keypoint_roi_pool": MultiScaleRoIAlign(
            FPN_LEVELS, 14, 2, canonical_scale=roi_canonical_scale
        ),
        "keypoint_layers": (2 * fpn_channels,) * 4,
        "keypoint_rescoring": keypoint_rescoring,
        "keypoint_subpixel": keypoint_subpixel,
        "box_soft_nms_sigma": box_soft_nms_sigma,
        **overrides,
    }
    return keypoint_rcnn(
        backbone=BackboneWithFPN(body, fpn),
        out_channels=fpn_channels,
        num_classes=num_classes,
        num_keypoints=num_keypoints,
        **settings,
    )
