"""Box RoI heads of Fast / Faster R-CNN: RoI pooling, box head, predictor, sampling, loss.

Boxes are ``xyxy`` float tensors in pixels of the *network input* (the resized, unpadded image
of :class:`~structvision.models.detection.image_batch.ImageBatch`); ``image_sizes`` are the
``(H, W)`` of those images. Labels are int64: ``0`` is background, ``1..K`` the classes, ``-1``
(during training only) an ignored proposal that is never sampled.

The arithmetic mirrors torchvision's ``models.detection.roi_heads`` operation by operation so
that, with converted weights, the detections are equal to torchvision's. Differences (results
unchanged): the post-processing is batched over all images except the per-image NMS, and
Fast R-CNN's ``bg_iou_low`` rule (background only from IoU ``[bg_iou_low, bg_iou_thresh)``) is
available (off by default).

Parameter names equal torchvision's (``fc6``/``fc7``, ``cls_score``/``bbox_pred`` and the
``nn.Sequential`` layout of ``FastRCNNConvFCHead``) so converted state dicts map one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.ops import (
    batched_nms,
    batched_soft_nms,
    roi_align,
    roi_pool,
    roi_spatial_pyramid_pool,
)
from structvision.structures import (
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
    box_iou,
    remove_small_boxes,
)

__all__ = [
    "ConvFCHead",
    "FastRCNNPredictor",
    "RoIHeads",
    "SingleLevelRoIPool",
    "TwoMLPHead",
    "assign_proposals_to_gt",
    "decode_box_predictions",
    "fastrcnn_loss",
    "postprocess_box_detections",
    "rerank_detections",
    "select_box_detections",
    "select_positive_samples",
]

POOL_KINDS = ("roi_pool", "roi_align", "spp")

#: Boxes narrower or lower than this many pixels are dropped after decoding (torchvision's 1e-2).
MIN_DETECTION_SIZE = 1e-2


# --------------------------------------------------------------------------- box heads


class TwoMLPHead(nn.Module):
    """Two fully connected layers with ReLU over flattened pooled RoI features (FPN box head).

    Args:
        in_channels: length of one flattened pooled feature, e.g. ``256 * 7 * 7``.
        representation_size: width of both layers (1024 in torchvision).
    """

    def __init__(self, in_channels: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, roi_features: Tensor) -> Tensor:
        """``(K, C, h, w)`` or ``(K, in_channels)`` features -> ``(K, representation_size)``."""
        x = roi_features.flatten(start_dim=1)  # (K, C * h * w)
        x = F.relu(self.fc6(x))
        return F.relu(self.fc7(x))


def _conv_norm_relu(
    in_channels: int, out_channels: int, norm_layer: Callable[[int], nn.Module] | None
) -> nn.Sequential:
    """3x3 convolution (bias only without norm), optional norm, ReLU: keys ``0.*``, ``1.*``."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm_layer is None)
    layers: list[nn.Module] = [conv]
    if norm_layer is not None:
        layers.append(norm_layer(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ConvFCHead(nn.Sequential):
    """Convolutions then fully connected layers over pooled RoI features (Faster R-CNN v2).

    Layout (and state-dict keys) equal torchvision's ``FastRCNNConvFCHead``: one
    ``conv3x3 [+ norm] + ReLU`` block per entry of ``conv_layers``, a ``Flatten``, then
    ``Linear + ReLU`` per entry of ``fc_layers``.

    Args:
        input_size: ``(C, h, w)`` of one pooled RoI feature.
        conv_layers: output channels of each convolution.
        fc_layers: output width of each fully connected layer.
        norm_layer: e.g. ``nn.BatchNorm2d``; ``None`` for convolutions with bias and no norm.
    """

    def __init__(
        self,
        input_size: tuple[int, int, int],
        conv_layers: Sequence[int],
        fc_layers: Sequence[int],
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        if len(input_size) != 3:
            raise ValueError(f"input_size must be (C, h, w), got {input_size!r}")
        in_channels, in_height, in_width = (int(s) for s in input_size)
        blocks: list[nn.Module] = []
        previous = in_channels
        for channels in conv_layers:
            blocks.append(_conv_norm_relu(previous, channels, norm_layer))
            previous = channels
        blocks.append(nn.Flatten())
        previous = previous * in_height * in_width
        for width in fc_layers:
            blocks.extend((nn.Linear(previous, width), nn.ReLU(inplace=True)))
            previous = width
        super().__init__(*blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class FastRCNNPredictor(nn.Module):
    """Class scores and class-specific box deltas from each RoI's representation.

    Args:
        in_channels: width of the box head's output.
        num_classes: number of classes *including* background.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, roi_features: Tensor) -> tuple[Tensor, Tensor]:
        """``(K, D)`` or ``(K, D, 1, 1)`` -> ``(K, num_classes)`` logits, ``(K, 4 * num_classes)``
        deltas (class ``c`` in columns ``4c .. 4c + 3``, weighted as the box coder expects)."""
        if roi_features.ndim == 4 and tuple(roi_features.shape[2:]) != (1, 1):
            raise ValueError(
                f"roi_features must have shape (K, D) or (K, D, 1, 1), "
                f"got {tuple(roi_features.shape)}"
            )
        x = roi_features.flatten(start_dim=1)  # (K, D)
        return self.cls_score(x), self.bbox_pred(x)


# --------------------------------------------------------------------------- single-level pooling


class SingleLevelRoIPool(nn.Module):
    """Pool each proposal from one named feature map (Fast R-CNN / SPPnet / C4 models).

    Called as ``(features, proposals, image_sizes)`` like ``MultiScaleRoIAlign``.

    Args:
        kind: ``"roi_pool"`` (Fast R-CNN max pooling), ``"roi_align"`` (bilinear) or ``"spp"``
            (SPPnet spatial pyramid of max pools, flat output).
        output_size: ``(h, w)`` bins, or one int for both (ignored by ``"spp"``).
        featmap_name: key of the feature map in the features dict.
        spatial_scale: feature cells per input pixel (``1 / stride``); ``None`` infers
            ``2 ** round(log2(H_feature / max image height))`` at each call, as
            ``MultiScaleRoIAlign`` does.
        sampling_ratio: RoIAlign samples per bin and axis (``<= 0``: adaptive).
        spp_levels: pyramid grid sizes for ``"spp"``.
        aligned: RoIAlign's half-pixel shift.
    """

    def __init__(
        self,
        *,
        kind: str,
        output_size: int | tuple[int, int],
        featmap_name: str,
        spatial_scale: float | None = None,
        sampling_ratio: int = 2,
        spp_levels: Sequence[int] = (1, 2, 4),
        aligned: bool = False,
    ) -> None:
        super().__init__()
        if kind not in POOL_KINDS:
            raise ValueError(f"kind must be one of {POOL_KINDS}, got {kind!r}")
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if len(output_size) != 2 or min(output_size) <= 0:
            raise ValueError(f"output_size must be a positive int or (h, w), got {output_size!r}")
        if spatial_scale is not None and spatial_scale <= 0:
            raise ValueError(f"spatial_scale must be > 0 or None, got {spatial_scale}")
        self.kind = kind
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.featmap_name = featmap_name
        self.spatial_scale = None if spatial_scale is None else float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.spp_levels = tuple(int(level) for level in spp_levels)
        self.aligned = bool(aligned)

    def flat_size(self, channels: int) -> int:
        """Length of one pooled RoI feature once flattened, for ``channels`` input channels."""
        if self.kind == "spp":
            return channels * sum(level * level for level in self.spp_levels)
        return channels * self.output_size[0] * self.output_size[1]

    def output_channels_flat(self, channels: int) -> int:
        """Alias of :meth:`flat_size`."""
        return self.flat_size(channels)

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> Tensor:
        """Pool ``B`` lists of ``(N_i, 4)`` boxes from ``features[featmap_name]`` ``(B, C, H, W)``.

        Returns:
            ``(K, C, h, w)`` for ``roi_pool``/``roi_align``, ``(K, C * sum(l * l))`` for
            ``spp``; ``K = sum(N_i)``, image by image.
        """
        if self.featmap_name not in features:
            raise ValueError(
                f"features has no map {self.featmap_name!r}; it has keys {list(features.keys())}"
            )
        feature_map = features[self.featmap_name]  # (B, C, H, W)
        scale = self.spatial_scale
        if scale is None:
            scale = infer_spatial_scale(feature_map, image_sizes)
        if self.kind == "roi_pool":
            return roi_pool(feature_map, proposals, self.output_size, spatial_scale=scale)
        if self.kind == "roi_align":
            return roi_align(
                feature_map,
                proposals,
                self.output_size,
                spatial_scale=scale,
                sampling_ratio=self.sampling_ratio,
                aligned=self.aligned,
            )
        return roi_spatial_pyramid_pool(
            feature_map, proposals, levels=self.spp_levels, spatial_scale=scale, mode="max"
        )

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, output_size={self.output_size}, "
            f"featmap_name={self.featmap_name!r}, spatial_scale={self.spatial_scale}"
        )


def infer_spatial_scale(feature_map: Tensor, image_sizes: list[tuple[int, int]]) -> float:
    """``2 ** round(log2(H_feature / max image height))``: feature cells per input pixel."""
    if not isinstance(feature_map, Tensor) or feature_map.ndim != 4:
        shape = getattr(feature_map, "shape", type(feature_map).__name__)
        raise ValueError(f"feature map must have shape (B, C, H, W), got {tuple(shape)}")
    if len(image_sizes) == 0:
        raise ValueError("image_sizes must hold one (H, W) per image, got an empty list")
    max_image_h = max(int(size[0]) for size in image_sizes)
    # float32 log2, round half to even: as torchvision's MultiScaleRoIAlign
    ratio = torch.tensor(float(feature_map.shape[-2]) / float(max_image_h))
    return 2.0 ** float(ratio.log2().round())


# --------------------------------------------------------------------------- training targets


def assign_proposals_to_gt(
    proposal_boxes: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    *,
    matcher: Matcher,
    bg_iou_low: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Match one image's proposals to its ground truth and label them.

    A proposal is foreground (its ground truth's label) when its best IoU is ``>=
    matcher.high_threshold``, background (``0``) when it is in ``[bg_iou_low,
    matcher.low_threshold)``, and ignored (``-1``) between the thresholds or below
    ``bg_iou_low``. With no ground truth every proposal is background (``bg_iou_low`` does not
    apply: the image would otherwise contribute nothing).

    Args:
        proposal_boxes: ``(N, 4)`` ``xyxy`` proposals (ground truth already appended).
        gt_boxes: ``(M, 4)`` ``xyxy`` ground-truth boxes, ``M >= 0``.
        gt_labels: ``(M,)`` int64 labels in ``1..K``.
        matcher: decides foreground / background / in-between from the IoU matrix.
        bg_iou_low: proposals whose best IoU is below this are ignored (Fast R-CNN: 0.1).

    Returns:
        ``(matched_idxs, labels)``: ``(N,)`` int64 index of the matched ground truth (clamped to
        ``>= 0``, meaningful only for foreground) and ``(N,)`` int64 labels in ``{-1, 0, 1..K}``.
    """
    num_proposals = proposal_boxes.shape[0]
    device = proposal_boxes.device
    if gt_boxes.shape[0] == 0:
        zeros = torch.zeros((num_proposals,), dtype=torch.int64, device=device)
        return zeros, zeros.clone()
    iou = box_iou(gt_boxes, proposal_boxes)  # (M, N)
    matcher_idxs = matcher(iou)  # (N,) gt index or a negative code
    matched_idxs = matcher_idxs.clamp(min=0)
    labels = gt_labels[matched_idxs].to(torch.int64)  # (N,)
    labels[matcher_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0
    labels[matcher_idxs == Matcher.BETWEEN_THRESHOLDS] = -1
    if bg_iou_low > 0.0:
        best_iou = iou.max(dim=0).values  # (N,)
        labels[best_iou < bg_iou_low] = -1
    return matched_idxs, labels


def select_positive_samples(
    sampled_proposals: list[Tensor], matched_idxs: list[Tensor], labels: list[Tensor]
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Keep the foreground RoIs of a training sample (the RoIs the mask and keypoint heads see).

    Args:
        sampled_proposals: ``B`` tensors ``(S_i, 4)`` ``xyxy`` sampled RoIs.
        matched_idxs: ``B`` tensors ``(S_i,)`` int64 matched ground-truth indices.
        labels: ``B`` tensors ``(S_i,)`` int64 labels, ``0`` for background.

    Returns:
        ``(positive_boxes, positive_matched_idxs, positive_labels)``: ``B`` tensors each,
        ``(P_i, 4)``, ``(P_i,)`` and ``(P_i,)``, in sample order (``P_i = 0`` for an image
        without objects).
    """
    positive_boxes, positive_matched_idxs, positive_labels = [], [], []
    for boxes, idxs, image_labels in zip(sampled_proposals, matched_idxs, labels, strict=True):
        positive = torch.where(image_labels > 0)[0]  # (P_i,)
        positive_boxes.append(boxes[positive])
        positive_matched_idxs.append(idxs[positive])
        positive_labels.append(image_labels[positive])
    return positive_boxes, positive_matched_idxs, positive_labels


# --------------------------------------------------------------------------- loss


def fastrcnn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor | list[Tensor],
    regression_targets: Tensor | list[Tensor],
) -> tuple[Tensor, Tensor]:
    """Fast R-CNN classification and box-regression losses over the sampled RoIs.

    ``loss_classifier`` is the mean cross-entropy over all RoIs; ``loss_box_reg`` the smooth-L1
    loss (``beta = 1 / 9``) between the foreground RoIs' deltas *for their own class* and their
    targets, summed and divided by the number of RoIs (background included), as torchvision does.

    Args:
        class_logits: ``(K, C)`` logits, ``C`` classes including background.
        box_regression: ``(K, 4 * C)`` class-specific deltas.
        labels: ``(K,)`` int64 labels in ``0..C-1``, or one tensor per image to concatenate.
        regression_targets: ``(K, 4)`` encoded targets, or one tensor per image.

    Returns:
        ``(loss_classifier, loss_box_reg)`` scalars; both ``0`` (attached to the graph) when
        ``K == 0``.
    """
    if isinstance(labels, (list, tuple)):
        labels = torch.cat(labels, dim=0)
    if isinstance(regression_targets, (list, tuple)):
        regression_targets = torch.cat(regression_targets, dim=0)
    num_rois, num_classes = class_logits.shape
    if box_regression.shape != (num_rois, 4 * num_classes):
        raise ValueError(
            f"box_regression must have shape ({num_rois}, {4 * num_classes}), "
            f"got {tuple(box_regression.shape)}"
        )
    if labels.shape != (num_rois,) or regression_targets.shape != (num_rois, 4):
        raise ValueError(
            f"labels and regression_targets must have shapes ({num_rois},) and ({num_rois}, 4), "
            f"got {tuple(labels.shape)} and {tuple(regression_targets.shape)}"
        )
    if num_rois == 0:
        return class_logits.sum() * 0.0, box_regression.sum() * 0.0
    loss_classifier = F.cross_entropy(class_logits, labels)
    fg_idxs = torch.where(labels > 0)[0]  # (P,)
    deltas_per_class = box_regression.reshape(num_rois, num_classes, 4)  # (K, C, 4)
    loss_box_reg = F.smooth_l1_loss(
        deltas_per_class[fg_idxs, labels[fg_idxs]],  # (P, 4)
        regression_targets[fg_idxs],
        beta=1 / 9,
        reduction="sum",
    )
    return loss_classifier, loss_box_reg / labels.numel()


# --------------------------------------------------------------------------- inference


def postprocess_box_detections(
    class_logits: Tensor,
    box_regression: Tensor,
    proposal_boxes: list[Tensor],
    image_sizes: list[tuple[int, int]],
    *,
    box_coder: BoxCoder,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    soft_nms_sigma: float = 0.0,
) -> list[dict[str, Tensor]]:
    """Turn the predictor's outputs into per-image detections.

    Softmax scores; class-specific boxes decoded from the proposals and clipped to the image;
    each (RoI, foreground class) pair becomes a candidate; candidates with score ``<=
    score_thresh`` or a side below 0.01 px are dropped; NMS per class; the best
    ``detections_per_img`` remain. Everything up to NMS is computed once for all images; NMS
    runs per image because mixing images in one ``batched_nms`` would shift the boxes by
    other offsets and could change float32 IoUs at the threshold.

    Args:
        class_logits: ``(K, C)`` logits for all images' RoIs, image by image.
        box_regression: ``(K, 4 * C)`` class-specific deltas.
        proposal_boxes: ``B`` tensors ``(N_i, 4)``, ``sum(N_i) == K``.
        image_sizes: ``B`` ``(H, W)`` input image sizes, for clipping.
        box_coder: decodes the deltas.
        score_thresh: minimum class probability (exclusive).
        nms_thresh: IoU above which a lower-scoring box of the same class is suppressed.
        detections_per_img: maximum detections per image.
        soft_nms_sigma: if positive, Gaussian soft-NMS of that width per class instead of NMS
            (:func:`~structvision.ops.batched_soft_nms`; ``nms_thresh`` is then unused).

    Returns:
        ``B`` dicts with ``boxes (D, 4)`` ``xyxy`` input pixels, ``labels (D,)`` int64 in
        ``1..C-1`` and ``scores (D,)``, by decreasing score.
    """
    scores, boxes = decode_box_predictions(
        class_logits, box_regression, proposal_boxes, image_sizes, box_coder=box_coder
    )
    return select_box_detections(
        scores,
        boxes,
        [len(proposals) for proposals in proposal_boxes],
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        soft_nms_sigma=soft_nms_sigma,
    )


def decode_box_predictions(
    class_logits: Tensor,
    box_regression: Tensor,
    proposal_boxes: list[Tensor],
    image_sizes: list[tuple[int, int]],
    *,
    box_coder: BoxCoder,
) -> tuple[Tensor, Tensor]:
    """``(K, C)`` softmax scores and ``(K, C, 4)`` class-specific boxes decoded from the
    proposals and clipped to each RoI's image (the first half of
    :func:`postprocess_box_detections`)."""
    num_rois, num_classes = class_logits.shape
    device = class_logits.device
    rois_per_image = torch.tensor([boxes.shape[0] for boxes in proposal_boxes], device=device)
    roi_image_idxs = torch.repeat_interleave(
        torch.arange(len(proposal_boxes), device=device), rois_per_image
    )  # (K,)
    all_proposals = torch.cat(proposal_boxes, dim=0)  # (K, 4)
    pred_boxes = box_coder.decode(box_regression, all_proposals)  # (K, C, 4)
    pred_boxes = pred_boxes.reshape(num_rois, num_classes, 4)
    pred_boxes = _clip_per_roi(pred_boxes, image_sizes, roi_image_idxs)
    return F.softmax(class_logits, dim=-1), pred_boxes


def select_box_detections(
    pred_scores: Tensor,
    pred_boxes: Tensor,
    rois_per_image: list[int],
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    soft_nms_sigma: float = 0.0,
) -> list[dict[str, Tensor]]:
    """Detections from ``(K, C)`` class scores and ``(K, C, 4)`` boxes of ``K`` RoIs, image by
    image (``rois_per_image`` of them each): the second half of
    :func:`postprocess_box_detections`."""
    num_rois, num_classes = pred_scores.shape
    device = pred_scores.device
    roi_image_idxs = torch.repeat_interleave(
        torch.arange(len(rois_per_image), device=device),
        torch.tensor(rois_per_image, device=device, dtype=torch.long),
    )  # (K,)

    # drop the background column; every (RoI, class) pair is a candidate, row-major
    fg_boxes = pred_boxes[:, 1:].reshape(-1, 4)  # (K * (C - 1), 4)
    fg_scores = pred_scores[:, 1:].reshape(-1)
    fg_labels = torch.arange(1, num_classes, device=device).repeat(num_rois)
    fg_image_idxs = roi_image_idxs.repeat_interleave(num_classes - 1)

    keep = torch.where(fg_scores > score_thresh)[0]
    keep = keep[remove_small_boxes(fg_boxes[keep], MIN_DETECTION_SIZE)]
    candidates_per_image = torch.bincount(fg_image_idxs[keep], minlength=len(rois_per_image))
    detections = []
    for image_keep in keep.split(candidates_per_image.tolist()):
        boxes, scores, labels = fg_boxes[image_keep], fg_scores[image_keep], fg_labels[image_keep]
        if soft_nms_sigma > 0:
            kept, scores = batched_soft_nms(
                boxes, scores, labels, soft_nms_sigma, max_kept=detections_per_img
            )
        else:
            kept = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
            scores = scores[kept]
        detections.append({"boxes": boxes[kept], "labels": labels[kept], "scores": scores})
    return detections


def rerank_detections(detection: dict[str, Tensor], quality: Tensor) -> dict[str, Tensor]:
    """``detection`` with ``scores`` multiplied by a per-detection ``quality (D,)`` (a mask's or
    a pose's confidence), every per-detection tensor re-sorted by the new score, and the box
    scores kept as ``box_scores``."""
    box_scores = detection["scores"]
    scores = box_scores * quality.to(box_scores.dtype)
    order = scores.argsort(descending=True)
    count = len(order)
    return {
        key: value[order]
        if torch.is_tensor(value) and value.ndim and len(value) == count
        else value
        for key, value in {**detection, "box_scores": box_scores, "scores": scores}.items()
    }


def _clip_per_roi(
    pred_boxes: Tensor, image_sizes: list[tuple[int, int]], roi_image_idxs: Tensor
) -> Tensor:
    """Clamp ``(K, C, 4)`` boxes to ``[0, W] x [0, H]`` of each RoI's own image."""
    sizes = torch.tensor(image_sizes, dtype=pred_boxes.dtype, device=pred_boxes.device)  # (B, 2)
    roi_sizes = sizes[roi_image_idxs]  # (K, 2) as (H, W)
    widths = roi_sizes[:, 1, None, None]  # (K, 1, 1)
    heights = roi_sizes[:, 0, None, None]
    xs = torch.minimum(pred_boxes[..., 0::2].clamp(min=0), widths)  # (K, C, 2)
    ys = torch.minimum(pred_boxes[..., 1::2].clamp(min=0), heights)
    return torch.stack((xs, ys), dim=-1).reshape(pred_boxes.shape)  # (K, C, 4)


# --------------------------------------------------------------------------- module


class RoIHeads(nn.Module):
    """Fast R-CNN box branch on top of proposals: pool, box head, predictor, loss or detections.

    Training: the ground-truth boxes are appended to each image's proposals, proposals are
    matched and labelled (:func:`assign_proposals_to_gt`), ``batch_size_per_image`` of them are
    sampled with at most ``positive_fraction`` foreground, and :func:`fastrcnn_loss` is computed
    on those. Inference: :func:`postprocess_box_detections`.

    Args:
        box_roi_pool: callable ``(features, proposals, image_sizes) -> (K, ...)``, e.g.
            ``MultiScaleRoIAlign`` or :class:`SingleLevelRoIPool`.
        box_head: ``(K, ...) -> (K, D)`` (:class:`TwoMLPHead`, :class:`ConvFCHead`).
        box_predictor: ``(K, D) -> ((K, C), (K, 4 * C))`` (:class:`FastRCNNPredictor`).
        fg_iou_thresh: IoU at or above which a proposal is foreground.
        bg_iou_thresh: IoU below which a proposal is background (``<= fg_iou_thresh``).
        bg_iou_low: IoU below which a proposal is ignored (Fast R-CNN: 0.1; 0 = never).
        batch_size_per_image: RoIs sampled per image in training.
        positive_fraction: largest foreground share of the sampled RoIs.
        bbox_reg_weights: ``(wx, wy, ww, wh)`` of the box coder.
        score_thresh: minimum class probability of a detection (exclusive).
        nms_thresh: per-class NMS IoU threshold.
        detections_per_img: maximum detections per image.
        soft_nms_sigma: if positive, Gaussian soft-NMS of that width instead of NMS (0:
            torchvision's NMS).
    """

    def __init__(
        self,
        *,
        box_roi_pool: Callable[..., Tensor],
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        bg_iou_low: float = 0.0,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        soft_nms_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(soft_nms_sigma, int | float) or soft_nms_sigma < 0:
            raise ValueError(
                f"soft_nms_sigma must be a number >= 0 (0: NMS), got {soft_nms_sigma!r}"
            )
        if not 0.0 <= bg_iou_low <= bg_iou_thresh:
            raise ValueError(
                f"bg_iou_low must be in [0, bg_iou_thresh={bg_iou_thresh}], got {bg_iou_low}"
            )
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.proposal_matcher = Matcher(
            fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False
        )
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.bg_iou_low = float(bg_iou_low)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.soft_nms_sigma = float(soft_nms_sigma)

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Losses in training mode, detections in eval mode.

        Args:
            features: ``{name: (B, C, H_l, W_l)}`` backbone feature maps.
            proposals: ``B`` tensors ``(N_i, 4)`` ``xyxy`` in input pixels.
            image_sizes: ``B`` ``(H, W)`` sizes of the input images (before padding).
            targets: ``B`` dicts with ``boxes (M_i, 4)`` float and ``labels (M_i,)`` int64;
                required in training.

        Returns:
            ``(detections, losses)``: in training ``([], {"loss_classifier", "loss_box_reg"})``;
            in eval ``(B dicts with boxes, labels, scores, {})``.
        """
        self._check_inputs(proposals, image_sizes, targets)
        if self.training:
            if targets is None:
                raise ValueError("targets must be given in training mode")
            losses, _ = self.forward_train(features, proposals, image_sizes, targets)
            return [], losses
        return self.detect(features, proposals, image_sizes), {}

    def forward_train(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> tuple[dict[str, Tensor], tuple[list[Tensor], list[Tensor], list[Tensor]]]:
        """Sample RoIs and compute the box losses; also return the sampled RoIs.

        The mask and keypoint branches train on the foreground RoIs of the same sample
        (:func:`select_positive_samples`), as in torchvision.

        Args:
            features: ``{name: (B, C, H_l, W_l)}`` backbone feature maps.
            proposals: ``B`` tensors ``(N_i, 4)`` ``xyxy`` in input pixels.
            image_sizes: ``B`` ``(H, W)`` input image sizes.
            targets: ``B`` dicts with ``boxes (M_i, 4)`` float and ``labels (M_i,)`` int64.

        Returns:
            ``(losses, (sampled_proposals, matched_idxs, labels))``: ``{"loss_classifier",
            "loss_box_reg"}`` and, per image, the sampled RoIs ``(S_i, 4)``, their matched
            ground-truth index ``(S_i,)`` and label ``(S_i,)`` (see
            :meth:`select_training_samples`).
        """
        self._check_inputs(proposals, image_sizes, targets)
        sampled_proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
            proposals, targets
        )
        class_logits, box_regression = self._predict(features, sampled_proposals, image_sizes)
        loss_classifier, loss_box_reg = fastrcnn_loss(
            class_logits, box_regression, labels, regression_targets
        )
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        return losses, (sampled_proposals, matched_idxs, labels)

    def detect(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Detections from proposals: :func:`postprocess_box_detections` of the predictions.

        Returns:
            ``B`` dicts with ``boxes (D_i, 4)`` ``xyxy`` input pixels, ``labels (D_i,)`` and
            ``scores (D_i,)``.
        """
        class_logits, box_regression = self._predict(features, proposals, image_sizes)
        return postprocess_box_detections(
            class_logits,
            box_regression,
            proposals,
            image_sizes,
            box_coder=self.box_coder,
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img,
            soft_nms_sigma=self.soft_nms_sigma,
        )

    def _predict(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> tuple[Tensor, Tensor]:
        """``(K, C)`` class logits and ``(K, 4 * C)`` deltas for all proposals."""
        roi_features = self.box_roi_pool(features, proposals, image_sizes)  # (K, ...)
        return self.box_predictor(self.box_head(roi_features))

    def select_training_samples(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Append ground truth, label, sample and encode targets, per image.

        Uses the global torch RNG (through the sampler), with the same draws as torchvision.

        Returns:
            Four lists of ``B`` tensors over the sampled RoIs of each image (``S_i`` of them, in
            increasing proposal index): ``proposal_boxes (S_i, 4)``, ``matched_idxs (S_i,)``
            (ground-truth index, meaningful for foreground), ``labels (S_i,)`` in ``0..K`` and
            ``regression_targets (S_i, 4)`` (zero for background RoIs).
        """
        dtype = proposals[0].dtype
        gt_boxes = [target["boxes"].to(dtype) for target in targets]
        gt_labels = [target["labels"] for target in targets]
        proposals = [torch.cat((p, g)) for p, g in zip(proposals, gt_boxes, strict=True)]

        matched_idxs, labels = [], []
        for image_proposals, image_gt_boxes, image_gt_labels in zip(
            proposals, gt_boxes, gt_labels, strict=True
        ):
            image_matched_idxs, image_labels = assign_proposals_to_gt(
                image_proposals,
                image_gt_boxes,
                image_gt_labels,
                matcher=self.proposal_matcher,
                bg_iou_low=self.bg_iou_low,
            )
            matched_idxs.append(image_matched_idxs)
            labels.append(image_labels)

        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        sampled = [torch.where(pos | neg)[0] for pos, neg in zip(pos_masks, neg_masks, strict=True)]
        proposals = [p[idxs] for p, idxs in zip(proposals, sampled, strict=True)]
        matched_idxs = [m[idxs] for m, idxs in zip(matched_idxs, sampled, strict=True)]
        labels = [lab[idxs] for lab, idxs in zip(labels, sampled, strict=True)]
        regression_targets = [
            self._encode_targets(p, g, m, lab)
            for p, g, m, lab in zip(proposals, gt_boxes, matched_idxs, labels, strict=True)
        ]
        return proposals, matched_idxs, labels, regression_targets

    def _encode_targets(
        self, proposal_boxes: Tensor, gt_boxes: Tensor, matched_idxs: Tensor, labels: Tensor
    ) -> Tensor:
        """``(S, 4)`` deltas from each sampled proposal to its ground truth; 0 for background."""
        if gt_boxes.shape[0] == 0:
            return torch.zeros_like(proposal_boxes)
        targets = self.box_coder.encode(gt_boxes[matched_idxs], proposal_boxes)  # (S, 4)
        return torch.where((labels > 0)[:, None], targets, torch.zeros_like(targets))

    @staticmethod
    def _check_inputs(
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None,
    ) -> None:
        if len(proposals) == 0 or len(proposals) != len(image_sizes):
            raise ValueError(
                f"proposals and image_sizes must hold one entry per image (at least one), got "
                f"{len(proposals)} and {len(image_sizes)}"
            )
        for image_idx, boxes in enumerate(proposals):
            if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
                shape = getattr(boxes, "shape", type(boxes).__name__)
                raise ValueError(
                    f"proposals[{image_idx}] must have shape (N, 4), got {tuple(shape)}"
                )
        if targets is None:
            return
        if len(targets) != len(proposals):
            raise ValueError(f"targets must hold {len(proposals)} dicts, got {len(targets)}")
        for image_idx, target in enumerate(targets):
            _check_target(target, image_idx)


def _check_target(target: dict[str, Tensor], image_idx: int) -> None:
    """Raise ``ValueError`` unless ``target`` has float ``boxes (M, 4)``, int64 ``labels (M,)``."""
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"targets[{image_idx}] must have 'boxes' and 'labels', got {list(target)}")
    boxes, labels = target["boxes"], target["labels"]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        raise ValueError(
            f"targets[{image_idx}]['boxes'] must be a float (M, 4) tensor, "
            f"got {boxes.dtype} {tuple(boxes.shape)}"
        )
    if labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
        raise ValueError(
            f"targets[{image_idx}]['labels'] must be int64 of shape ({boxes.shape[0]},), "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
