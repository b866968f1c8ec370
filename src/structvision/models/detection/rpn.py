"""Region Proposal Network (Faster R-CNN): objectness and box deltas per anchor -> proposals.

The head predicts, at every location of every feature level, one objectness logit and four box
deltas per anchor. Proposals are the anchors moved by their deltas, selected per level by
objectness, clipped, filtered and de-duplicated by NMS. Training assigns anchors to ground-truth
boxes (:func:`assign_anchors_to_gt`) and computes the two RPN losses (:func:`rpn_loss`).

Every step follows torchvision's ``models.detection.rpn`` operation by operation (same anchor
order, top-k per level, ``>=`` score threshold, NMS per level, sampling draws), so that
converted torchvision weights produce equal proposals and losses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.detection.anchors import AnchorGenerator
from structvision.models.detection.image_batch import ImageBatch
from structvision.ops import batched_nms
from structvision.structures import (
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)

__all__ = [
    "RPNHead",
    "RegionProposalNetwork",
    "assign_anchors_to_gt",
    "flatten_rpn_outputs",
    "rpn_loss",
    "select_proposals",
]


def _conv3x3_block(channels: int, norm_layer: Callable[[int], nn.Module] | None) -> nn.Sequential:
    """3x3 conv (+ norm) + ReLU; indices 0/1 match torchvision's ``Conv2dNormActivation``."""
    layers: list[nn.Module] = [
        nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=norm_layer is None)
    ]
    if norm_layer is not None:
        layers.append(norm_layer(channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RPNHead(nn.Module):
    """Shared 3x3 conv tower, then 1x1 convs for objectness logits and box deltas.

    Parameter names equal torchvision's ``RPNHead`` (``conv.{i}.0.weight``, ``cls_logits``,
    ``bbox_pred``), so its state dicts load directly. torchvision's Faster R-CNN v1 uses
    ``conv_depth=1`` and v2 ``conv_depth=2``, both without normalisation; with ``norm_layer``
    the convs have no bias and the norm is ``conv.{i}.1``.

    Args:
        in_channels: channels of every feature level.
        num_anchors: anchors per location (``AnchorGenerator.num_anchors_per_location()[0]``).
        conv_depth: number of 3x3 conv blocks in the shared tower.
        norm_layer: optional normalisation module factory ``channels -> nn.Module``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        *,
        conv_depth: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if conv_depth < 1:
            raise ValueError(f"conv_depth must be >= 1, got {conv_depth}")
        self.conv = nn.Sequential(
            *(_conv3x3_block(in_channels, norm_layer) for _ in range(conv_depth))
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0.0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``(B, C, H, W)`` features -> ``(B, A, H, W)`` logits, ``(B, 4A, H, W)`` deltas."""
        objectness, deltas = [], []
        for feature in features:
            hidden = self.conv(feature)
            objectness.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return objectness, deltas


def flatten_rpn_outputs(
    objectness: list[Tensor], pred_deltas: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Bring per-level head outputs into the anchor order (level, y, x, anchor).

    Args:
        objectness: per level ``(B, A_l, H_l, W_l)`` logits.
        pred_deltas: per level ``(B, 4 * A_l, H_l, W_l)`` deltas (anchor-major: anchor ``a`` in
            channels ``4a .. 4a + 3``).

    Returns:
        ``(B, R)`` logits and ``(B, R, 4)`` deltas with ``R = sum_l H_l * W_l * A_l``.
    """
    flat_objectness, flat_deltas = [], []
    for level_objectness, level_deltas in zip(objectness, pred_deltas, strict=True):
        batch, num_anchors, height, width = level_objectness.shape
        if level_deltas.shape != (batch, 4 * num_anchors, height, width):
            raise ValueError(
                f"pred_deltas must have shape {(batch, 4 * num_anchors, height, width)} to match "
                f"objectness {tuple(level_objectness.shape)}, got {tuple(level_deltas.shape)}"
            )
        # (B, A, H, W) -> (B, H, W, A) -> (B, H * W * A)
        flat_objectness.append(level_objectness.permute(0, 2, 3, 1).reshape(batch, -1))
        # (B, A, 4, H, W) -> (B, H, W, A, 4) -> (B, H * W * A, 4)
        level_deltas = level_deltas.view(batch, num_anchors, 4, height, width)
        flat_deltas.append(level_deltas.permute(0, 3, 4, 1, 2).reshape(batch, -1, 4))
    return torch.cat(flat_objectness, dim=1), torch.cat(flat_deltas, dim=1)


def select_proposals(
    *,
    proposal_boxes: Tensor,
    objectness: Tensor,
    image_sizes: list[tuple[int, int]],
    num_anchors_per_level: list[int],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    score_thresh: float,
    min_size: float,
) -> tuple[list[Tensor], list[Tensor]]:
    """Choose each image's proposals from its decoded anchors.

    Steps: keep the ``pre_nms_top_n`` highest logits of every level (batched over images);
    objectness probability = sigmoid(logit); per image, clip to the image, drop boxes with a
    side ``< min_size``, drop probabilities ``< score_thresh``, NMS at ``nms_thresh`` within
    each level, and keep the ``post_nms_top_n`` best.

    Args:
        proposal_boxes: ``(B, R, 4)`` ``xyxy`` decoded anchors in padded-image pixels.
        objectness: ``(B, R)`` logits (not back-propagated through).
        image_sizes: ``(h, w)`` per image, for clipping.
        num_anchors_per_level: ``R_l`` per level, summing to ``R``.
        pre_nms_top_n: proposals kept per level and image before NMS.
        post_nms_top_n: proposals kept per image after NMS.
        nms_thresh: IoU above which NMS suppresses a box.
        score_thresh: smallest kept objectness probability.
        min_size: smallest kept box side, in pixels.

    Returns:
        ``(boxes, scores)``: per image ``(N_i, 4)`` proposals and ``(N_i,)`` probabilities in
        decreasing order of probability.
    """
    num_images = proposal_boxes.shape[0]
    objectness = objectness.detach().reshape(num_images, -1)  # (B, R)
    device = objectness.device
    levels = torch.cat(
        [
            torch.full((n,), level, dtype=torch.int64, device=device)
            for level, n in enumerate(num_anchors_per_level)
        ]
    )  # (R,)

    top_idxs, offset = [], 0
    for level_objectness in objectness.split(num_anchors_per_level, dim=1):
        k = min(pre_nms_top_n, level_objectness.shape[1])
        top_idxs.append(level_objectness.topk(k, dim=1).indices + offset)  # (B, k)
        offset += level_objectness.shape[1]
    top_idxs = torch.cat(top_idxs, dim=1)  # (B, K)

    image_idxs = torch.arange(num_images, device=device)[:, None]  # (B, 1)
    top_probs = torch.sigmoid(objectness[image_idxs, top_idxs])  # (B, K)
    top_levels = levels[top_idxs]  # (B, K)
    top_boxes = proposal_boxes[image_idxs, top_idxs]  # (B, K, 4)

    final_boxes, final_scores = [], []
    for boxes, probs, box_levels, image_size in zip(
        top_boxes, top_probs, top_levels, image_sizes, strict=True
    ):
        boxes = clip_boxes_to_image(boxes, image_size)
        keep = remove_small_boxes(boxes, min_size)
        boxes, probs, box_levels = boxes[keep], probs[keep], box_levels[keep]
        keep = torch.where(probs >= score_thresh)[0]
        boxes, probs, box_levels = boxes[keep], probs[keep], box_levels[keep]
        keep = batched_nms(boxes, probs, box_levels, nms_thresh)[:post_nms_top_n]
        final_boxes.append(boxes[keep])
        final_scores.append(probs[keep])
    return final_boxes, final_scores


def assign_anchors_to_gt(
    *, anchors: Tensor, gt_boxes: Tensor, matcher: Matcher
) -> tuple[Tensor, Tensor]:
    """Label one image's anchors by their IoU with its ground-truth boxes.

    Args:
        anchors: ``(A, 4)`` ``xyxy`` anchors.
        gt_boxes: ``(M, 4)`` ``xyxy`` ground-truth boxes, possibly ``M == 0``.
        matcher: IoU matcher, typically ``Matcher(0.7, 0.3, allow_low_quality_matches=True)``.

    Returns:
        ``(labels, matched_gt_boxes)``: ``(A,)`` float32 labels, ``1.0`` foreground (IoU at or
        above the high threshold, or the best anchor of some ground truth), ``0.0`` background
        (IoU below the low threshold, or no ground truth at all), ``-1.0`` ignored (in
        between); and ``(A, 4)`` the matched ground-truth box of each anchor (box 0 for
        non-foreground anchors; zeros when ``M == 0``).
    """
    if gt_boxes.numel() == 0:
        labels = torch.zeros((anchors.shape[0],), dtype=torch.float32, device=anchors.device)
        matched_gt_boxes = torch.zeros(anchors.shape, dtype=torch.float32, device=anchors.device)
        return labels, matched_gt_boxes
    matched_idxs = matcher(box_iou(gt_boxes, anchors))  # (A,)
    matched_gt_boxes = gt_boxes[matched_idxs.clamp(min=0)]  # (A, 4)
    labels = (matched_idxs >= 0).to(dtype=torch.float32)  # (A,)
    labels[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0.0
    labels[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1.0
    return labels, matched_gt_boxes


def rpn_loss(
    *,
    objectness: Tensor,
    pred_deltas: Tensor,
    labels: list[Tensor],
    regression_targets: Tensor,
    sampler: BalancedPositiveNegativeSampler,
) -> tuple[Tensor, Tensor]:
    """Objectness and box-regression losses over a balanced sample of anchors.

    The sampler draws positives and negatives per image (torch's default generator);
    ``loss_objectness`` is the mean binary cross-entropy over the sampled anchors and
    ``loss_rpn_box_reg`` the smooth-L1 (``beta = 1/9``) sum over sampled positives divided by the
    number of sampled anchors.

    Args:
        objectness: ``(B * R,)`` (or ``(B, R)``) logits, images concatenated.
        pred_deltas: ``(B * R, 4)`` predicted deltas.
        labels: per image ``(R,)`` float labels ``1`` / ``0`` / ``-1`` (ignored).
        regression_targets: ``(B * R, 4)`` encoded matched ground-truth boxes.
        sampler: the anchor sampler.

    Returns:
        ``(loss_objectness, loss_rpn_box_reg)`` scalars.
    """
    pos_masks, neg_masks = sampler(labels)
    sampled_pos_idxs = torch.where(torch.cat(pos_masks))[0]
    sampled_neg_idxs = torch.where(torch.cat(neg_masks))[0]
    sampled_idxs = torch.cat([sampled_pos_idxs, sampled_neg_idxs])
    objectness = objectness.flatten()
    all_labels = torch.cat(labels)
    if objectness.shape[0] != all_labels.shape[0] or pred_deltas.shape != (
        all_labels.shape[0],
        4,
    ):
        raise ValueError(
            f"objectness must be ({all_labels.shape[0]},) and pred_deltas "
            f"({all_labels.shape[0]}, 4), got {tuple(objectness.shape)} and "
            f"{tuple(pred_deltas.shape)}"
        )
    box_loss = (
        F.smooth_l1_loss(
            pred_deltas[sampled_pos_idxs],
            regression_targets[sampled_pos_idxs],
            beta=1 / 9,
            reduction="sum",
        )
        / sampled_idxs.numel()
    )
    objectness_loss = F.binary_cross_entropy_with_logits(
        objectness[sampled_idxs], all_labels[sampled_idxs]
    )
    return objectness_loss, box_loss


def _check_top_n(value: Mapping[str, int], name: str) -> dict[str, int]:
    if not isinstance(value, Mapping) or set(value) != {"training", "testing"}:
        raise ValueError(f"{name} must be a dict with keys 'training' and 'testing', got {value!r}")
    return {"training": int(value["training"]), "testing": int(value["testing"])}


class RegionProposalNetwork(nn.Module):
    """Proposals from anchors, objectness and box deltas; RPN losses in training.

    Args:
        anchor_generator: anchors for the feature levels.
        head: module ``list[(B, C, H, W)] -> (list[(B, A, H, W)], list[(B, 4A, H, W)])``.
        fg_iou_thresh: IoU at or above which an anchor is foreground (training).
        bg_iou_thresh: IoU below which an anchor is background (training).
        batch_size_per_image: anchors sampled per image for the losses.
        positive_fraction: largest share of foreground anchors in the sample.
        pre_nms_top_n: ``{"training": n, "testing": n}`` proposals kept per level before NMS.
        post_nms_top_n: ``{"training": n, "testing": n}`` proposals kept per image after NMS.
        nms_thresh: NMS IoU threshold.
        score_thresh: smallest kept objectness probability.
        min_size: smallest kept proposal side, in pixels.
    """

    def __init__(
        self,
        *,
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: Mapping[str, int],
        post_nms_top_n: Mapping[str, int],
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        min_size: float = 1e-3,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(
            fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True
        )
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self.pre_nms_top_n = _check_top_n(pre_nms_top_n, "pre_nms_top_n")
        self.post_nms_top_n = _check_top_n(post_nms_top_n, "post_nms_top_n")
        self.nms_thresh = float(nms_thresh)
        self.score_thresh = float(score_thresh)
        self.min_size = float(min_size)

    def forward(
        self,
        images: ImageBatch,
        features: OrderedDict[str, Tensor] | Mapping[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Propose boxes (and compute losses in training).

        Args:
            images: the padded image batch (sizes for anchors and clipping).
            features: ``(B, C, H_l, W_l)`` feature maps, one per anchor level, in level order.
            targets: per image a dict with ``boxes (M_i, 4)`` ``xyxy`` in resized-image pixels;
                required in training.

        Returns:
            ``(proposal_boxes, losses)``: per image ``(N_i, 4)`` ``xyxy`` proposals (detached),
            and ``{"loss_objectness", "loss_rpn_box_reg"}`` in training, ``{}`` otherwise.
        """
        boxes, _, (objectness, pred_deltas, anchors) = self._propose(images, features)
        num_images = len(anchors)
        all_anchors = torch.cat(anchors)  # (B * R, 4)
        if not self.training:
            return boxes, {}
        if targets is None or len(targets) != num_images:
            got = None if targets is None else f"{len(targets)} dicts"
            raise ValueError(f"targets must have one dict per image ({num_images}), got {got}")
        labels, matched_gt_boxes = [], []
        for image_idx, (image_anchors, target) in enumerate(zip(anchors, targets, strict=True)):
            gt_boxes = target.get("boxes")
            if not isinstance(gt_boxes, Tensor) or gt_boxes.ndim != 2 or gt_boxes.shape[1] != 4:
                shape = tuple(gt_boxes.shape) if isinstance(gt_boxes, Tensor) else gt_boxes
                raise ValueError(f"targets[{image_idx}]['boxes'] must be (M, 4), got {shape}")
            image_labels, image_matched = assign_anchors_to_gt(
                anchors=image_anchors, gt_boxes=gt_boxes, matcher=self.proposal_matcher
            )
            labels.append(image_labels)
            matched_gt_boxes.append(image_matched)
        regression_targets = self.box_coder.encode(torch.cat(matched_gt_boxes), all_anchors)
        loss_objectness, loss_rpn_box_reg = rpn_loss(
            objectness=objectness,
            pred_deltas=pred_deltas,
            labels=labels,
            regression_targets=regression_targets,
            sampler=self.fg_bg_sampler,
        )
        return boxes, {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}

    def propose(
        self, images: ImageBatch, features: OrderedDict[str, Tensor] | Mapping[str, Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Proposals with their objectness: per image ``(N_i, 4)`` ``xyxy`` boxes and ``(N_i,)``
        probabilities, by decreasing probability (the boxes of :meth:`forward`)."""
        boxes, scores, _ = self._propose(images, features)
        return boxes, scores

    def _propose(
        self, images: ImageBatch, features: OrderedDict[str, Tensor] | Mapping[str, Tensor]
    ) -> tuple[list[Tensor], list[Tensor], tuple[Tensor, Tensor, list[Tensor]]]:
        """``(boxes, scores, (objectness, pred_deltas, anchors))``; the last three feed the loss."""
        feature_list = list(features.values())
        objectness_per_level, deltas_per_level = self.head(feature_list)
        anchors = self.anchor_generator(images, feature_list)  # B x (R, 4)
        num_images = len(anchors)
        num_anchors_per_level = [int(o[0].numel()) for o in objectness_per_level]
        objectness, pred_deltas = flatten_rpn_outputs(objectness_per_level, deltas_per_level)
        pred_deltas = pred_deltas.reshape(-1, 4)  # (B * R, 4)
        all_anchors = torch.cat(anchors)  # (B * R, 4)

        # Proposals do not back-propagate into the deltas (Faster R-CNN's approximate joint
        # training).
        proposal_boxes = self.box_coder.decode(pred_deltas.detach(), all_anchors)
        mode = "training" if self.training else "testing"
        boxes, scores = select_proposals(
            proposal_boxes=proposal_boxes.view(num_images, -1, 4),
            objectness=objectness,
            image_sizes=images.image_sizes,
            num_anchors_per_level=num_anchors_per_level,
            pre_nms_top_n=self.pre_nms_top_n[mode],
            post_nms_top_n=self.post_nms_top_n[mode],
            nms_thresh=self.nms_thresh,
            score_thresh=self.score_thresh,
            min_size=self.min_size,
        )
        return boxes, scores, (objectness, pred_deltas, anchors)
