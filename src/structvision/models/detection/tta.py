"""Horizontal-flip test-time augmentation for the R-CNN detectors.

The image and its mirror image go through the backbone and the RPN separately. Their
proposals (the mirrored ones flipped back) are pooled and thinned by NMS, and every remaining
proposal is classified twice: on the image's features and, flipped, on the mirror image's. The
two softmax score vectors and the two sets of decoded class boxes are averaged per proposal
*before* the per-class NMS, so that a proposal's class is decided by both views (as in
MMDetection's two-stage ``aug_test``; Detectron2's ``GeneralizedRCNNWithTTA`` instead merges
finished detections, which keeps a wrong-class detection that either view makes). Masks, and
keypoint heatmaps with their left/right channels swapped, are averaged the same way on the
merged boxes.

    image -----> backbone -> RPN -> proposals ----------+-> NMS = P -> box head(features, P)   -+
    mirrored --> backbone -> RPN -> proposals, flipped -+             box head(features', P') -+
                                                                      -> mean -> per-class NMS

Works on :class:`FasterRCNN`, :class:`MaskRCNN` and :class:`KeypointRCNN` in eval mode; the
output has the model's own contract. It costs two passes of everything: 2.0x the single pass
of the small conv-head Faster R-CNN on a CPU (3.9x with ``merge_proposals="concat"``, which
classifies both views' proposals unthinned; ``benchmarks/bench_tta.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from structvision.data.transforms import keypoint_flip_order
from structvision.models.detection.faster_rcnn import FasterRCNN, check_detection_inputs
from structvision.models.detection.keypoint_rcnn import KeypointRCNN, add_decoded_keypoints
from structvision.models.detection.mask_rcnn import (
    MaskRCNN,
    paste_detection_masks,
    select_class_masks,
)
from structvision.models.detection.roi_heads import decode_box_predictions, select_box_detections
from structvision.ops import nms

__all__ = ["MERGE_PROPOSALS", "FlipTTA", "flip_boxes", "mirrored_mask_box"]

#: Ways `FlipTTA` merges the proposals of the image and its mirror image.
MERGE_PROPOSALS = ("concat", "nms")


def flip_boxes(boxes: Tensor, width: float) -> Tensor:
    """Mirror ``(..., 4)`` ``xyxy`` boxes of an image ``width`` pixels wide: ``x -> width - x``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((width - x2, y1, width - x1, y2), dim=-1)


class FlipTTA(nn.Module):
    """A detector averaged over each image and its horizontal mirror image (see the module doc).

    Args:
        model: a :class:`FasterRCNN`, :class:`MaskRCNN` or :class:`KeypointRCNN`; it is used
            in eval mode.
        keypoint_flip_pairs: for a :class:`KeypointRCNN`, the ``(left, right)`` keypoint index
            pairs that trade places in a mirror image (e.g. the shoulders); required there,
            since a mirrored left wrist looks like a right wrist. ``()`` when no keypoint has a
            mirror partner.
        merge_proposals: how the two views' proposals become one set: ``"nms"`` (default)
            suppresses their union at the RPN's NMS threshold by objectness and keeps the RPN's
            own count; ``"concat"`` keeps all of them, so the box head classifies twice as many
            on each view (about twice the cost, +0.001 AP on ``shapes``; BENCHMARKS.md).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        keypoint_flip_pairs: Sequence[Sequence[int]] | None = None,
        merge_proposals: str = "nms",
    ) -> None:
        super().__init__()
        if merge_proposals not in MERGE_PROPOSALS:
            raise ValueError(
                f"merge_proposals must be one of {MERGE_PROPOSALS}, got {merge_proposals!r}"
            )
        self.merge_proposals = merge_proposals
        if not isinstance(model, (FasterRCNN, MaskRCNN, KeypointRCNN)):
            raise TypeError(
                "flip test-time augmentation needs a FasterRCNN, MaskRCNN or KeypointRCNN, got "
                f"{type(model).__name__}"
            )
        self.model = model.eval()
        self.keypoint_order: Tensor | None = None
        if isinstance(model, KeypointRCNN):
            if keypoint_flip_pairs is None:
                raise ValueError(
                    "keypoint_flip_pairs is required for a KeypointRCNN: the mirror image swaps "
                    "left and right keypoints"
                )
            num_keypoints = model.keypoint_branch.predictor.kps_score_lowres.out_channels
            order = keypoint_flip_order(keypoint_flip_pairs, num_keypoints)
            self.keypoint_order = torch.tensor(order, dtype=torch.long)
        self.eval()

    @torch.no_grad()
    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """``model(images)``'s per-image dicts, averaged over the two views."""
        model = self.model
        if self.training or model.training:
            raise RuntimeError("FlipTTA is for inference only: call .eval() (train the model)")
        check_detection_inputs(images, None, training=False)
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, _ = model.transform(images, None)
        mirrored, _ = model.transform([image.flip(-1) for image in images], None)
        sizes = batch.image_sizes
        if list(mirrored.image_sizes) != list(sizes):
            raise RuntimeError(  # resizing is symmetric; this would be a transform bug
                f"the mirror images were resized to {mirrored.image_sizes}, the images to {sizes}"
            )
        widths = [float(width) for _, width in sizes]
        features = _features(model, batch.tensors)
        features_mirrored = _features(model, mirrored.tensors)
        proposals, scores = model.rpn.propose(batch, features)
        proposals_m, scores_m = model.rpn.propose(mirrored, features_mirrored)
        proposals = [
            self._merge_proposals(own, own_scores, flip_boxes(other, width), other_scores)
            for own, own_scores, other, other_scores, width in zip(
                proposals, scores, proposals_m, scores_m, widths, strict=True
            )
        ]

        roi_heads = model.roi_heads
        scores, boxes = self._classify(features, proposals, sizes)
        scores_m, boxes_m = self._classify(features_mirrored, _flip_each(proposals, widths), sizes)
        roi_widths = torch.cat(
            [boxes.new_full((len(p), 1), w) for p, w in zip(proposals, widths, strict=True)]
        )  # (K, 1): each RoI's image width
        boxes_m = flip_boxes(boxes_m, roi_widths)  # (K, C, 4)
        detections = select_box_detections(
            (scores + scores_m) / 2,
            (boxes + boxes_m) / 2,
            [len(p) for p in proposals],
            score_thresh=roi_heads.score_thresh,
            nms_thresh=roi_heads.nms_thresh,
            detections_per_img=roi_heads.detections_per_img,
            soft_nms_sigma=roi_heads.soft_nms_sigma,
        )

        if isinstance(model, MaskRCNN):
            detections = self._add_masks(features, features_mirrored, sizes, widths, detections)
        if isinstance(model, KeypointRCNN):
            detections = self._add_keypoints(features, features_mirrored, sizes, widths, detections)
        detections = model.transform.postprocess(detections, sizes, original_sizes)
        if isinstance(model, MaskRCNN):
            detections = paste_detection_masks(
                detections,
                original_sizes,
                rescore=model.mask_branch.rescore,
                paste=model.mask_branch.paste,
                input_sizes=sizes,
            )
        return detections

    def _merge_proposals(
        self, own: Tensor, own_scores: Tensor, other: Tensor, other_scores: Tensor
    ) -> Tensor:
        """One image's proposals from both views (``other`` already flipped back)."""
        boxes = torch.cat((own, other))
        if self.merge_proposals == "concat":
            return boxes
        rpn = self.model.rpn
        keep = nms(boxes, torch.cat((own_scores, other_scores)), rpn.nms_thresh)
        return boxes[keep[: rpn.post_nms_top_n["testing"]]]

    def _classify(
        self, features: dict[str, Tensor], proposals: list[Tensor], sizes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        roi_heads = self.model.roi_heads
        class_logits, box_regression = roi_heads._predict(features, proposals, sizes)
        return decode_box_predictions(
            class_logits, box_regression, proposals, sizes, box_coder=roi_heads.box_coder
        )

    def _add_masks(
        self,
        features: dict[str, Tensor],
        features_mirrored: dict[str, Tensor],
        sizes: list[tuple[int, int]],
        widths: list[float],
        detections: list[dict[str, Tensor]],
    ) -> list[dict[str, Tensor]]:
        """``masks (D_i, 1, M, M)``: the mean of both views' own-class mask probabilities."""
        branch = self.model.mask_branch
        boxes = [detection["boxes"] for detection in detections]
        labels = torch.cat([detection["labels"] for detection in detections])
        own = select_class_masks(branch(features, boxes, sizes), labels)
        mirrored_boxes = _flip_each(boxes, widths)
        if branch.paste == "where_sampled":
            mirrored_boxes = [mirrored_mask_box(b) for b in mirrored_boxes]
        logits_mirrored = branch(features_mirrored, mirrored_boxes, sizes)
        other = select_class_masks(logits_mirrored.flip(-1), labels)
        per_image = ((own + other) / 2).split([len(b) for b in boxes])
        return [
            {**detection, "masks": masks}
            for detection, masks in zip(detections, per_image, strict=True)
        ]

    def _add_keypoints(
        self,
        features: dict[str, Tensor],
        features_mirrored: dict[str, Tensor],
        sizes: list[tuple[int, int]],
        widths: list[float],
        detections: list[dict[str, Tensor]],
    ) -> list[dict[str, Tensor]]:
        """``keypoints`` and ``keypoints_scores`` decoded from the mean of both views' heatmap
        logits (the mirrored heatmaps flipped back, left and right channels swapped)."""
        branch = self.model.keypoint_branch
        rois = branch.rois([detection["boxes"] for detection in detections])
        logits = branch(features, rois, sizes)  # (D, K, S, S)
        logits_mirrored = branch(features_mirrored, _flip_each(rois, widths), sizes)
        order = self.keypoint_order.to(logits.device)
        logits = (logits + logits_mirrored.flip(-1)[:, order]) / 2
        return add_decoded_keypoints(
            detections, rois, logits, rescore=branch.rescore, subpixel=branch.subpixel
        )


def _features(model: nn.Module, tensors: Tensor) -> dict[str, Tensor]:
    features = model.backbone(tensors)
    return OrderedDict([("0", features)]) if isinstance(features, Tensor) else features


def mirrored_mask_box(mirrored: Tensor) -> Tensor:
    """Where the mirror image's mask grid matches the image's, cell for cell (flipped), when the
    masks are sampled as Mask R-CNN's targets are (RoIAlign, ``aligned=False``): the
    ``mirrored`` boxes (``flip_boxes`` of the image's) moved one pixel left. That sampling
    reads pixel ``k`` at coordinate ``k``, and the mirror of pixel ``k`` is ``W - 1 - k``, not
    ``W - k`` (tested against :func:`~structvision.models.detection.mask_rcnn.mask_targets`)."""
    return mirrored - mirrored.new_tensor([1.0, 0.0, 1.0, 0.0])


def _flip_each(boxes: list[Tensor], widths: list[float]) -> list[Tensor]:
    return [flip_boxes(b, width) for b, width in zip(boxes, widths, strict=True)]
