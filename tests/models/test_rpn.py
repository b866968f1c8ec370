import math
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from structvision.models.detection.anchors import AnchorGenerator
from structvision.models.detection.image_batch import ImageBatch
from structvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    assign_anchors_to_gt,
    rpn_loss,
)
from structvision.structures import BalancedPositiveNegativeSampler, Matcher

SIZES = ((16,), (32,))
RATIOS = ((0.5, 1.0, 2.0),) * 2
CHANNELS = 8


def build_pair(*, conv_depth: int = 1, **settings):
    """Our RPN and torchvision's with the same settings and the same head weights."""
    settings = {
        "fg_iou_thresh": 0.7,
        "bg_iou_thresh": 0.3,
        "batch_size_per_image": 32,
        "positive_fraction": 0.5,
        "pre_nms_top_n": {"training": 40, "testing": 30},
        "post_nms_top_n": {"training": 20, "testing": 15},
        "nms_thresh": 0.7,
        "score_thresh": 0.0,
    } | settings
    tv_head = TVRPNHead(CHANNELS, 3, conv_depth=conv_depth)
    for param in tv_head.parameters():  # the default init (std 0.01) makes near-equal logits
        torch.nn.init.normal_(param, std=0.3, generator=torch.Generator().manual_seed(1))
    head = RPNHead(CHANNELS, 3, conv_depth=conv_depth)
    head.load_state_dict(tv_head.state_dict())
    theirs = TVRegionProposalNetwork(TVAnchorGenerator(SIZES, RATIOS), tv_head, **settings)
    ours = RegionProposalNetwork(
        anchor_generator=AnchorGenerator(sizes=SIZES, aspect_ratios=RATIOS), head=head, **settings
    )
    return ours, theirs


def make_inputs():
    """Two images of different sizes padded to 64 x 96, two feature levels."""
    gen = torch.Generator().manual_seed(0)
    tensors = torch.rand(2, 3, 64, 96, generator=gen)
    image_sizes = [(64, 90), (50, 70)]
    features = OrderedDict(
        [
            ("p2", torch.randn(2, CHANNELS, 16, 24, generator=gen)),
            ("p3", torch.randn(2, CHANNELS, 8, 12, generator=gen)),
        ]
    )
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 30.0], [50.0, 5.0, 85.0, 60.0]])},
        {"boxes": torch.tensor([[3.0, 4.0, 20.0, 40.0]])},
    ]
    return tensors, image_sizes, features, targets


def test_head_state_dict_keys_match_torchvision():
    for depth in (1, 2):
        ours = RPNHead(CHANNELS, 3, conv_depth=depth).state_dict()
        theirs = TVRPNHead(CHANNELS, 3, conv_depth=depth).state_dict()
        assert list(ours) == list(theirs)
        assert all(ours[k].shape == theirs[k].shape for k in ours)
    normed = RPNHead(CHANNELS, 3, conv_depth=2, norm_layer=torch.nn.BatchNorm2d)
    assert "conv.1.1.running_mean" in normed.state_dict()
    assert normed.conv[0][0].bias is None


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"score_thresh": 0.6, "nms_thresh": 0.5},
        {"pre_nms_top_n": {"training": 5, "testing": 500}},
    ],
)
@pytest.mark.parametrize("conv_depth", [1, 2])
def test_eval_proposals_match_torchvision(settings, conv_depth):
    ours, theirs = build_pair(conv_depth=conv_depth, **settings)
    ours.eval(), theirs.eval()
    tensors, image_sizes, features, _ = make_inputs()
    with torch.no_grad():
        our_boxes, our_losses = ours(ImageBatch(tensors=tensors, image_sizes=image_sizes), features)
        tv_boxes, _ = theirs(ImageList(tensors, image_sizes), features)
    assert our_losses == {}
    assert [b.shape[0] for b in our_boxes] == [b.shape[0] for b in tv_boxes]
    assert sum(b.shape[0] for b in our_boxes) > 2
    for ours_b, tv_b in zip(our_boxes, tv_boxes, strict=True):
        assert torch.allclose(ours_b, tv_b, atol=1e-5, rtol=0)
    for boxes, (height, width) in zip(our_boxes, image_sizes, strict=True):
        assert bool((boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all())
        assert bool((boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all())
        assert bool((boxes[:, 2:] - boxes[:, :2] >= 1e-3).all())


@pytest.mark.parametrize("empty_second_image", [False, True])
def test_training_losses_match_torchvision_under_same_seed(empty_second_image):
    ours, theirs = build_pair()
    ours.train(), theirs.train()
    tensors, image_sizes, features, targets = make_inputs()
    if empty_second_image:
        targets[1] = {"boxes": torch.zeros(0, 4)}
    torch.manual_seed(3)
    our_boxes, our_losses = ours(
        ImageBatch(tensors=tensors, image_sizes=image_sizes), features, targets
    )
    torch.manual_seed(3)
    tv_boxes, tv_losses = theirs(ImageList(tensors, image_sizes), features, targets)
    assert set(our_losses) == {"loss_objectness", "loss_rpn_box_reg"}
    for key, value in tv_losses.items():
        assert torch.allclose(our_losses[key], value, atol=1e-6, rtol=0), key
    assert our_losses["loss_rpn_box_reg"] > 0
    for ours_b, tv_b in zip(our_boxes, tv_boxes, strict=True):
        assert torch.equal(ours_b, tv_b)
    sum(our_losses.values()).backward()
    assert ours.head.cls_logits.weight.grad.abs().sum() > 0


def test_training_without_any_gt_boxes_gives_zero_box_loss():
    ours, _ = build_pair()
    ours.train()
    tensors, image_sizes, features, _ = make_inputs()
    empty = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.zeros(0, 4)}]
    _, losses = ours(ImageBatch(tensors=tensors, image_sizes=image_sizes), features, empty)
    assert losses["loss_rpn_box_reg"].item() == 0.0
    assert math.isfinite(losses["loss_objectness"].item()) and losses["loss_objectness"] > 0
    with pytest.raises(ValueError, match="targets must have one dict per image"):
        ours(ImageBatch(tensors=tensors, image_sizes=image_sizes), features)


def test_assign_anchors_hand_computed():
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0 -> foreground
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 with gt 0 -> ignored (between 0.3 and 0.7)
            [20.0, 20.0, 30.0, 30.0],  # IoU 0 -> background
            [50.0, 50.0, 60.0, 55.0],  # IoU 0.5, but gt 1's best anchor -> foreground
            [55.0, 50.0, 65.0, 60.0],  # IoU 1/3 with gt 1 -> ignored
        ]
    )
    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    labels, matched = assign_anchors_to_gt(anchors=anchors, gt_boxes=gt_boxes, matcher=matcher)
    assert labels.dtype == torch.float32
    assert labels.tolist() == [1.0, -1.0, 0.0, 1.0, -1.0]
    assert torch.equal(matched[0], gt_boxes[0]) and torch.equal(matched[3], gt_boxes[1])

    labels, matched = assign_anchors_to_gt(
        anchors=anchors, gt_boxes=torch.zeros(0, 4), matcher=matcher
    )
    assert labels.tolist() == [0.0] * 5 and matched.shape == (5, 4)


def test_rpn_loss_hand_computed():
    labels = [torch.tensor([1.0, 0.0, -1.0])]
    objectness = torch.tensor([0.0, 0.0, 5.0])
    pred_deltas = torch.tensor([[0.1, 0.5, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0], [7.0, 7.0, 7.0, 7.0]])
    targets = torch.zeros(3, 4)
    loss_objectness, loss_box = rpn_loss(
        objectness=objectness,
        pred_deltas=pred_deltas,
        labels=labels,
        regression_targets=targets,
        sampler=BalancedPositiveNegativeSampler(256, 0.5),
    )
    # Two sampled anchors (the ignored one is never drawn), both with logit 0: BCE = log 2.
    assert loss_objectness.item() == pytest.approx(math.log(2.0), abs=1e-6)
    # Smooth L1 with beta 1/9: 0.5 * 0.1**2 * 9 + (0.5 - 0.5 / 9), summed, over 2 sampled.
    expected_box = (0.5 * 0.01 * 9 + (0.5 - 0.5 / 9)) / 2
    assert loss_box.item() == pytest.approx(expected_box, abs=1e-6)
