"""Flip test-time augmentation: mirror equivariance for boxes, masks and keypoints, and errors."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from structvision.models.detection import (
    faster_rcnn_small_fpn,
    keypoint_rcnn_small_fpn,
    mask_rcnn_small_fpn,
)
from structvision.models.detection.mask_rcnn import mask_targets
from structvision.models.detection.tta import FlipTTA, flip_boxes, mirrored_mask_box

# the module, not the `mask_rcnn` builder that the package exports under the same name
mask_rcnn_module = importlib.import_module("structvision.models.detection.mask_rcnn")
SMALL = {"width": 8, "fpn_channels": 16}
PAIRS = [(1, 2), (3, 4)]  # keypoints 1 <-> 2 and 3 <-> 4 trade places in a mirror image


def test_flip_boxes_hand_case_and_involution():
    boxes = torch.tensor([[10.0, 5.0, 30.0, 20.0], [0.0, 0.0, 100.0, 1.0]])
    flipped = flip_boxes(boxes, 100.0)
    assert torch.equal(flipped, torch.tensor([[70.0, 5.0, 90.0, 20.0], [0.0, 0.0, 100.0, 1.0]]))
    assert torch.equal(flip_boxes(flipped, 100.0), boxes)


def _tta(kind: str, merge_proposals: str = "concat") -> FlipTTA:
    torch.manual_seed(0)
    if kind == "boxes":
        model = faster_rcnn_small_fpn(num_classes=4, **SMALL)
    elif kind == "masks":
        model = mask_rcnn_small_fpn(num_classes=4, **SMALL)
    else:
        model = keypoint_rcnn_small_fpn(num_classes=2, num_keypoints=5, **SMALL)
    model.roi_heads.score_thresh = 0.0  # an untrained model's scores are low: keep them all
    pairs = PAIRS if kind == "keypoints" else None
    return FlipTTA(model, keypoint_flip_pairs=pairs, merge_proposals=merge_proposals)


@pytest.mark.parametrize(
    ("kind", "merge"),
    [
        ("boxes", "concat"),
        ("masks", "concat"),
        ("keypoints", "concat"),
        ("boxes", "nms"),
        ("masks", "nms"),
        ("keypoints", "nms"),
    ],
)
def test_flip_tta_of_mirrored_images_is_the_mirrored_result(kind, merge, monkeypatch):
    # The mirrored batch's two views are the batch's two views with their roles swapped, so
    # everything the wrapper flips back (boxes, masks, heatmaps with left/right swapped) must
    # come out mirrored. Images of two sizes check that each is flipped at its own width.
    # Masks are compared in box coordinates: pasting rounds box corners, which is not mirror
    # symmetric.
    monkeypatch.setattr(mask_rcnn_module, "paste_masks_in_image", lambda masks, boxes, size: masks)
    tta = _tta(kind, merge)
    if kind == "masks":  # mirror symmetric sampling (targets are not: see the test below)
        tta.model.mask_branch.paste = "torchvision"
    generator = torch.Generator().manual_seed(1)
    images = [
        torch.rand(3, 90, 120, generator=generator),
        torch.rand(3, 80, 72, generator=generator),
    ]
    results = tta(images)
    mirrored = tta([image.flip(-1) for image in images])
    for image, own, other in zip(images, results, mirrored, strict=True):
        width = float(image.shape[-1])
        assert len(own["boxes"]) > 10
        assert torch.equal(own["labels"], other["labels"])
        torch.testing.assert_close(own["scores"], other["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            flip_boxes(other["boxes"], width), own["boxes"], atol=1e-3, rtol=0
        )
        if kind == "masks":
            assert own["masks"].shape == (len(own["boxes"]), 1, 28, 28)
            torch.testing.assert_close(other["masks"].flip(-1), own["masks"], atol=1e-4, rtol=0)
        if kind == "keypoints":
            swapped = other["keypoints"][:, [0, 2, 1, 4, 3]]  # (D, 5, 3)
            back = torch.stack((width - swapped[..., 0], swapped[..., 1]), dim=-1)
            torch.testing.assert_close(back, own["keypoints"][..., :2], atol=1e-2, rtol=0)
            swapped_scores = other["keypoints_scores"][:, [0, 2, 1, 4, 3]]
            torch.testing.assert_close(swapped_scores, own["keypoints_scores"], atol=1e-4, rtol=0)


def test_mirrored_mask_box_samples_the_mirror_image_as_the_image_cell_for_cell():
    generator = torch.Generator().manual_seed(4)
    masks = (torch.rand(3, 20, 26, generator=generator) > 0.5).to(torch.uint8)
    boxes = torch.tensor([[2.0, 3.0, 11.0, 9.0], [0.5, 1.5, 25.0, 19.0], [14.2, 6.7, 21.9, 18.3]])
    index = torch.arange(3)
    own = mask_targets(masks, boxes, index, 28)
    mirror = mask_targets(masks.flip(-1), mirrored_mask_box(flip_boxes(boxes, 26.0)), index, 28)
    torch.testing.assert_close(mirror.flip(-1), own, atol=1e-5, rtol=0)
    unshifted = mask_targets(masks.flip(-1), flip_boxes(boxes, 26.0), index, 28)
    assert (unshifted.flip(-1) - own).abs().max() > 0.1


def test_flip_tta_differs_from_one_view_and_keeps_the_output_contract():
    tta = _tta("masks")
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        single = tta.model([image])[0]
    averaged = tta([image])[0]
    fields = {"boxes", "labels", "scores", "masks", "box_scores"}  # the small model rescores
    assert set(averaged) == set(single) == fields
    assert averaged["masks"].shape == (len(averaged["boxes"]), 1, 64, 80)
    assert not torch.allclose(averaged["scores"][:10], single["scores"][:10])
    assert (averaged["boxes"][:, 2:] <= torch.tensor([80.0, 64.0])).all()


def test_merged_proposals_are_both_views_or_their_nms_at_the_rpn_count(monkeypatch):
    counts = {}
    for merge in ("concat", "nms"):
        tta = _tta("boxes", merge)
        sizes = []
        original = FlipTTA._classify

        def spy(self, features, proposals, image_sizes, sizes=sizes, original=original):
            sizes.append([len(p) for p in proposals])
            return original(self, features, proposals, image_sizes)

        monkeypatch.setattr(FlipTTA, "_classify", spy)
        tta([torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(3))])
        counts[merge] = sizes
    limit = tta.model.rpn.post_nms_top_n["testing"]
    assert counts["concat"][0] == counts["concat"][1]  # the same boxes, classified on both views
    assert counts["concat"][0][0] > limit  # both views' proposals: more than one RPN keeps
    assert 0 < counts["nms"][0][0] <= limit < counts["concat"][0][0]


def test_flip_tta_refuses_what_it_cannot_mirror():
    with pytest.raises(TypeError, match="FasterRCNN, MaskRCNN or KeypointRCNN"):
        FlipTTA(nn.Conv2d(3, 3, 1))
    keypoints = keypoint_rcnn_small_fpn(num_classes=2, num_keypoints=5, **SMALL)
    with pytest.raises(ValueError, match="keypoint_flip_pairs is required"):
        FlipTTA(keypoints)
    for pairs in ([(1, 5)], [(1, 1)], [(1, 2), (2, 3)], [(1, 2, 3)]):
        with pytest.raises(ValueError, match="keypoint flip pair"):
            FlipTTA(keypoints, keypoint_flip_pairs=pairs)
    with pytest.raises(ValueError, match="merge_proposals must be one of"):
        FlipTTA(keypoints, keypoint_flip_pairs=[], merge_proposals="mean")
    tta = FlipTTA(keypoints, keypoint_flip_pairs=[])
    tta.train()
    with pytest.raises(RuntimeError, match="inference only"):
        tta([torch.rand(3, 32, 32)])
