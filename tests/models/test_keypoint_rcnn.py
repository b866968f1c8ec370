"""Keypoint R-CNN: heatmap loss, predictor shapes, torchvision parity (eval and training
losses), images without objects and input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torchvision.models.detection import roi_heads as tv_roi_heads

from structvision.convert import from_torchvision
from structvision.models.detection import (
    KeypointHead,
    KeypointPredictor,
    KeypointRCNN,
    keypoint_rcnn_loss,
    keypoint_rcnn_resnet50_fpn,
    keypoint_rcnn_small_fpn,
)
from structvision.structures import (
    keypoints_to_heatmap_distributions,
    keypoints_to_heatmap_targets,
)

TV = torchvision.models.detection


# --------------------------------------------------------------------------- loss and predictor


def test_keypoint_loss_equals_torchvision_and_ignores_invalid_points():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 8, 8, generator=gen, requires_grad=True)
    proposals = [torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 20.0, 12.0]])] * 3
    gt_keypoints = torch.rand(2, 5, 3, generator=gen) * torch.tensor([20.0, 16.0, 2.9])
    gt_keypoints[..., 2] = gt_keypoints[..., 2].floor()  # visibility 0, 1 or 2
    matched = [torch.tensor([0, 1])] * 3
    expected = tv_roi_heads.keypointrcnn_loss(logits, proposals, [gt_keypoints] * 3, matched)

    encoded = [
        keypoints_to_heatmap_targets(gt_keypoints[m], p, 8)
        for p, m in zip(proposals, matched, strict=True)
    ]
    target_idxs = torch.cat([t for t, _ in encoded])
    valid = torch.cat([v for _, v in encoded])
    assert 0 < valid.sum() < valid.numel()
    loss = keypoint_rcnn_loss(logits, target_idxs, valid)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    used = logits.grad.abs().sum(dim=(2, 3)) > 0  # (6, 5)
    assert torch.equal(used, valid)  # invalid (RoI, keypoint) pairs get no gradient


def test_keypoint_loss_without_valid_points_is_zero_and_differentiable():
    logits = torch.randn(2, 3, 56, 56, requires_grad=True)
    valid = torch.zeros(2, 3, dtype=torch.bool)
    loss = keypoint_rcnn_loss(logits, torch.zeros(2, 3, dtype=torch.int64), valid)
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="targets must have shape"):
        keypoint_rcnn_loss(logits, torch.zeros(2, 4, dtype=torch.int64), valid)


def test_soft_keypoint_loss_is_the_cross_entropy_against_the_target_distribution():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 8, 8, generator=gen, requires_grad=True)
    rois = torch.tensor([[0.0, 0.0, 16.0, 16.0], [2.0, 2.0, 14.0, 10.0], [0.0, 0.0, 8.0, 8.0]])
    keypoints = torch.rand(3, 4, 3, generator=gen) * torch.tensor([16.0, 16.0, 2.9])
    keypoints[..., 2] = keypoints[..., 2].floor()
    targets, valid = keypoints_to_heatmap_distributions(keypoints, rois, 8, 1.0)
    assert 0 < valid.sum() < valid.numel()
    loss = keypoint_rcnn_loss(logits, targets, valid)
    # by hand: -sum q log p for each valid (RoI, keypoint), averaged
    log_p = logits.detach().flatten(2).log_softmax(dim=-1)
    by_hand = -(targets.flatten(2) * log_p).sum(dim=-1)[valid].mean()
    torch.testing.assert_close(loss.detach(), by_hand)
    loss.backward()
    assert torch.equal(logits.grad.abs().sum(dim=(2, 3)) > 0, valid)
    # the loss is smallest where the prediction is the target: there its gradient vanishes
    optimum = targets.clamp_min(1e-12).log().requires_grad_()
    keypoint_rcnn_loss(optimum, targets, valid).backward()
    assert optimum.grad.abs().max() < 1e-6
    with pytest.raises(ValueError, match="targets must have shape"):
        keypoint_rcnn_loss(logits, targets[:, :, :4, :4], valid)


def test_gaussian_targets_train_and_are_checked():
    torch.manual_seed(0)
    images = [torch.rand(3, 100, 128), torch.rand(3, 90, 110)]
    losses = {}
    for sigma in (0.0, 1.5):
        torch.manual_seed(0)
        model = keypoint_rcnn_small_fpn(
            num_classes=2,
            num_keypoints=5,
            width=8,
            min_size=96,
            max_size=128,
            keypoint_target_sigma=sigma,
        ).train()
        torch.manual_seed(1)
        losses[sigma] = model(images, _keypoint_targets(5))["loss_keypoint"]
    # the same weights and sample: only the targets differ, and the soft ones cost more
    # (their optimum is their entropy, about log(2 pi e sigma^2) = 4.1 for sigma 1.5, not 0)
    assert losses[1.5] > losses[0.0] > 0
    losses[1.5].backward()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target_sigma"):
            keypoint_rcnn_small_fpn(num_classes=2, num_keypoints=5, keypoint_target_sigma=bad)


def test_the_keypoint_head_takes_its_convolution_widths_and_refuses_bad_ones():
    head = KeypointHead(8, [16, 12, 12])
    assert head(torch.randn(2, 8, 14, 14)).shape == (2, 12, 14, 14)
    assert head.out_channels == 12
    for bad in ((), (0,), (16, -4), (16.5,), (True,), "16", 16):
        with pytest.raises(ValueError, match="keypoint head layers"):
            KeypointHead(8, bad)


@pytest.mark.parametrize("num_keypoints", [1, 5, 17])
def test_predictor_gives_56x56_heatmaps_for_any_number_of_keypoints(num_keypoints):
    predictor = KeypointPredictor(32, num_keypoints)
    assert predictor(torch.randn(3, 32, 14, 14)).shape == (3, num_keypoints, 56, 56)
    with pytest.raises(ValueError, match="num_keypoints must be positive"):
        KeypointPredictor(32, 0)


# --------------------------------------------------------------------------- torchvision parity


def _tv_keypoint_rcnn(**kwargs) -> torch.nn.Module:
    """A random torchvision Keypoint R-CNN whose heads give anchor-sized detections with
    spread-out scores (not slivers that all score the same)."""
    torch.manual_seed(0)
    settings = {"min_size": 96, "max_size": 128, "rpn_post_nms_top_n_test": 200}
    model = TV.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, **{**settings, **kwargs}
    ).eval()
    with torch.no_grad():
        model.rpn.head.cls_logits.weight.normal_(0, 0.05)
        model.rpn.head.bbox_pred.weight.normal_(0, 0.002)
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.004)
        model.roi_heads.box_predictor.bbox_pred.weight.normal_(0, 0.002)
    model.roi_heads.score_thresh = 0.0
    return model


def test_converted_keypoint_rcnn_gives_equal_detections_and_keypoints():
    tv_model = _tv_keypoint_rcnn(box_detections_per_img=4)
    ours = from_torchvision(tv_model)
    assert isinstance(ours, KeypointRCNN) and not ours.training
    assert ours.transform.min_size == (96,)
    torch.manual_seed(1)
    images = [torch.rand(3, 96, 128), torch.rand(3, 120, 100)]
    with torch.no_grad():
        mine, theirs = ours(images), tv_model(images)
    for a, b in zip(mine, theirs, strict=True):
        assert len(a["boxes"]) == len(b["boxes"]) == 4
        assert torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        assert torch.allclose(a["scores"], b["scores"], atol=1e-4, rtol=0)
        assert a["keypoints"].shape == (4, 17, 3)
        assert torch.allclose(a["keypoints"], b["keypoints"], atol=1e-2, rtol=0)
        assert torch.allclose(a["keypoints_scores"], b["keypoints_scores"], atol=1e-4, rtol=0)
        # the points spread over the boxes (not all on one spot)
        assert a["keypoints"][..., 0].std() > 1.0 and a["keypoints"][..., 1].std() > 1.0


def _keypoint_targets(num_keypoints: int) -> list[dict]:
    """Two people (some keypoints hidden or unlabelled) in one image, none in the other."""
    gen = torch.Generator().manual_seed(2)
    boxes = torch.tensor([[20.0, 10.0, 70.0, 90.0], [60.0, 30.0, 120.0, 95.0]])
    corner, size = boxes[:, None, :2], boxes[:, None, 2:] - boxes[:, None, :2]
    xy = corner + torch.rand(2, num_keypoints, 2, generator=gen) * size
    visibility = torch.randint(0, 3, (2, num_keypoints, 1), generator=gen).float()
    return [
        {
            "boxes": boxes,
            "labels": torch.tensor([1, 1]),
            "keypoints": torch.cat((xy, visibility), dim=2),
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "keypoints": torch.zeros(0, num_keypoints, 3),
        },
    ]


def test_training_losses_equal_torchvision_with_the_same_seed():
    tv_model = _tv_keypoint_rcnn(
        min_size=(80, 96), rpn_post_nms_top_n_train=100, box_batch_size_per_image=16
    ).train()
    ours = from_torchvision(tv_model)
    assert ours.training and ours.transform.min_size == (80, 96)
    images = [torch.rand(3, 100, 128), torch.rand(3, 90, 110)]
    targets = _keypoint_targets(17)
    torch.manual_seed(7)
    theirs = tv_model(images, targets)
    torch.manual_seed(7)
    mine = ours(images, targets)
    assert mine.keys() == theirs.keys()
    assert mine["loss_keypoint"] > 0
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], atol=1e-5), key


# --------------------------------------------------------------------------- small models


def test_images_without_objects_train():
    torch.manual_seed(0)
    model = keypoint_rcnn_small_fpn(
        num_classes=2, num_keypoints=5, width=8, min_size=96, max_size=128
    ).train()
    images = [torch.rand(3, 100, 128), torch.rand(3, 90, 110)]
    targets = _keypoint_targets(5)
    losses = model(images, targets)
    assert losses["loss_keypoint"] > 0
    sum(losses.values()).backward()
    assert model.keypoint_branch.predictor.kps_score_lowres.weight.grad.abs().sum() > 0

    empty_only = model(images[1:], targets[1:])
    assert empty_only["loss_keypoint"].item() == 0.0
    sum(empty_only.values()).backward()


def test_eval_outputs_and_empty_detections():
    model = keypoint_rcnn_small_fpn(num_classes=2, num_keypoints=5, width=8).eval()
    with torch.no_grad():
        (detection,) = model([torch.rand(3, 64, 80)])
        model.roi_heads.score_thresh = 1.0
        (empty,) = model([torch.rand(3, 64, 80)])
    num = detection["boxes"].shape[0]
    assert num > 0
    assert detection["keypoints"].shape == (num, 5, 3)
    assert detection["keypoints_scores"].shape == (num, 5)
    assert torch.all(detection["keypoints"][..., 2] == 1)
    # each point lies in its (slightly grown, for the +0.5 cell offset) box
    boxes = detection["boxes"][:, None]
    xy = detection["keypoints"][..., :2]
    assert torch.all((xy >= boxes[..., :2] - 1) & (xy <= boxes[..., 2:] + 1))
    assert empty["keypoints"].shape == (0, 5, 3)
    assert empty["keypoints_scores"].shape == (0, 5)


def test_roi_expansion_grows_the_heatmap_region_in_training_and_eval():
    torch.manual_seed(0)
    model = keypoint_rcnn_small_fpn(
        num_classes=2, num_keypoints=5, width=8, keypoint_roi_expansion=1.5
    )
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    (roi,) = model.keypoint_branch.rois([box])
    assert torch.equal(roi, torch.tensor([[5.0, 10.0, 35.0, 70.0]]))  # centre kept, 1.5x sides

    # training: a keypoint outside its box but inside the grown RoI is a valid target
    images = [torch.rand(3, 96, 96)]
    target = {
        "boxes": torch.tensor([[30.0, 30.0, 60.0, 70.0]]),
        "labels": torch.tensor([1]),
        "keypoints": torch.tensor([[[27.0, 40.0, 2.0]] * 5]),  # 3 px left of the box
    }
    batch, targets = model.transform(images, [target])
    features = model.backbone(batch.tensors)
    sample = ([targets[0]["boxes"]], [torch.tensor([0])], [torch.tensor([1])])  # resized
    loss = model._keypoint_loss(features, batch.image_sizes, targets, *sample)
    assert loss > 0
    model.keypoint_branch.roi_expansion = 1.0  # torchvision's: the point is outside, ignored
    assert model._keypoint_loss(features, batch.image_sizes, targets, *sample) == 0

    # eval: keypoints spread over the grown RoI, beyond the box itself
    model.keypoint_branch.roi_expansion = 1.5
    with torch.no_grad():
        (detection,) = model.eval()([torch.rand(3, 64, 80)])
    boxes, xy = detection["boxes"][:, None], detection["keypoints"][..., :2]
    grown = model.keypoint_branch.rois([detection["boxes"]])[0][:, None]
    assert len(boxes) > 0
    assert torch.all((xy >= grown[..., :2] - 1) & (xy <= grown[..., 2:] + 1))
    assert torch.any((xy < boxes[..., :2] - 1) | (xy > boxes[..., 2:] + 1))
    for bad in (0.8, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="roi_expansion must be a finite number >= 1"):
            keypoint_rcnn_small_fpn(num_classes=2, num_keypoints=5, keypoint_roi_expansion=bad)


def test_training_targets_need_keypoints():
    model = keypoint_rcnn_small_fpn(num_classes=2, num_keypoints=5, width=8).train()
    target = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    with pytest.raises(
        ValueError, match=r"targets\[0\]\['keypoints'\] must be a float \(1, K, 3\)"
    ):
        model([torch.rand(3, 64, 64)], [target])
    target["keypoints"] = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match=r"got torch.float32 \(2, 5, 3\)"):
        model([torch.rand(3, 64, 64)], [target])


def test_rescoring_ranks_by_box_score_times_pose_confidence():
    from structvision.models.detection.keypoint_rcnn import add_decoded_keypoints

    size, num_keypoints = 4, 2
    flat = torch.zeros(num_keypoints, size, size)  # peak probability 1/16 for each keypoint
    peaked = torch.zeros(num_keypoints, size, size)
    peaked[:, 1, 2] = math.log(16.0)  # peak probability 16 / (16 + 15) = 16/31
    detections = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0], [10.0, 10.0, 18.0, 18.0]]),
            "labels": torch.tensor([1, 1]),
            "scores": torch.tensor([0.9, 0.6]),
            "image_id": torch.tensor(3),  # not one value per detection: passed through
        }
    ]
    rois = [detections[0]["boxes"]]
    logits = torch.stack([flat, peaked])
    plain = add_decoded_keypoints(detections, rois, logits)[0]
    assert torch.equal(plain["scores"], detections[0]["scores"]) and "box_scores" not in plain
    ranked = add_decoded_keypoints(detections, rois, logits, rescore=True)[0]
    torch.testing.assert_close(ranked["scores"], torch.tensor([0.6 * 16 / 31, 0.9 / 16]))
    torch.testing.assert_close(ranked["box_scores"], torch.tensor([0.6, 0.9]))
    # every per-detection field follows the new order
    assert torch.equal(ranked["boxes"], detections[0]["boxes"].flip(0))
    assert torch.equal(ranked["keypoints"], plain["keypoints"].flip(0))
    assert torch.equal(ranked["keypoints_scores"], plain["keypoints_scores"].flip(0))
    assert int(ranked["image_id"]) == 3
    empty = [{k: v[:0] for k, v in detections[0].items() if v.ndim}]
    nothing = add_decoded_keypoints(empty, [rois[0][:0]], logits[:0], rescore=True)[0]
    assert nothing["scores"].shape == (0,) and nothing["keypoints"].shape == (0, 2, 3)


def test_small_model_rescores_torchvision_layout_does_not():
    small = keypoint_rcnn_small_fpn(num_classes=2, num_keypoints=3, width=8, fpn_channels=16)
    assert small.keypoint_branch.rescore and small.keypoint_branch.subpixel
    large = keypoint_rcnn_resnet50_fpn(num_classes=2, num_keypoints=3)
    assert not large.keypoint_branch.rescore and not large.keypoint_branch.subpixel
