"""Tests of the Fast R-CNN box RoI heads against torchvision and hand-computed cases."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torchvision.models.detection.faster_rcnn as tv_faster_rcnn
import torchvision.models.detection.roi_heads as tv_roi_heads
import torchvision.ops
from torch import nn

from structvision.models.detection.roi_heads import (
    ConvFCHead,
    FastRCNNPredictor,
    RoIHeads,
    SingleLevelRoIPool,
    TwoMLPHead,
    assign_proposals_to_gt,
    fastrcnn_loss,
    select_box_detections,
)
from structvision.ops import (
    MultiScaleRoIAlign,
    roi_align,
    roi_pool,
    roi_spatial_pyramid_pool,
)
from structvision.structures import Matcher

CHANNELS = 8
NUM_CLASSES = 5
REPRESENTATION = 32
IMAGE_SIZES = [(60, 50), (48, 64)]  # (H, W), padded to 64 x 64


def random_boxes(num: int, image_size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """``(num, 4)`` xyxy boxes inside an ``(H, W)`` image, sides 4 to 36 px."""
    height, width = image_size
    sizes = 4 + 32 * torch.rand(num, 2, generator=generator)
    x1 = torch.rand(num, generator=generator) * (width - sizes[:, 0])
    y1 = torch.rand(num, generator=generator) * (height - sizes[:, 1])
    return torch.stack((x1, y1, x1 + sizes[:, 0], y1 + sizes[:, 1]), dim=1)


def fpn_features(generator: torch.Generator) -> OrderedDict[str, torch.Tensor]:
    """Two pyramid levels (strides 4 and 8) for a padded 64 x 64 batch of two images."""
    return OrderedDict(
        [
            ("0", torch.randn(2, CHANNELS, 16, 16, generator=generator)),
            ("1", torch.randn(2, CHANNELS, 8, 8, generator=generator)),
        ]
    )


def make_pair(**settings) -> tuple[RoIHeads, tv_roi_heads.RoIHeads]:
    """Our RoIHeads and torchvision's with equal settings and weights."""
    defaults = {
        "fg_iou_thresh": 0.5,
        "bg_iou_thresh": 0.5,
        "batch_size_per_image": 512,
        "positive_fraction": 0.25,
        "score_thresh": 0.05,
        "nms_thresh": 0.5,
        "detections_per_img": 100,
    }
    defaults.update(settings)
    tv_heads = tv_roi_heads.RoIHeads(
        torchvision.ops.MultiScaleRoIAlign(["0", "1"], 7, 2),
        tv_faster_rcnn.TwoMLPHead(CHANNELS * 49, REPRESENTATION),
        tv_faster_rcnn.FastRCNNPredictor(REPRESENTATION, NUM_CLASSES),
        bbox_reg_weights=None,
        **defaults,
    )
    ours = RoIHeads(
        box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
        box_head=TwoMLPHead(CHANNELS * 49, REPRESENTATION),
        box_predictor=FastRCNNPredictor(REPRESENTATION, NUM_CLASSES),
        **defaults,
    )
    ours.load_state_dict(tv_heads.state_dict())
    # larger logits and deltas than the default init, so that scores and boxes spread out
    with torch.no_grad():
        for param in ours.box_predictor.parameters():
            param.mul_(8.0)
        for param in tv_heads.box_predictor.parameters():
            param.mul_(8.0)
    return ours, tv_heads


def gt_targets(generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Image 0 has three objects, image 1 none."""
    boxes = torch.tensor(
        [[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 45.0, 30.0], [5.0, 35.0, 25.0, 55.0]]
    )
    return [
        {"boxes": boxes, "labels": torch.tensor([1, 3, 4])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


def jittered(boxes: torch.Tensor, copies: int, generator: torch.Generator) -> torch.Tensor:
    """``copies`` noisy versions of each box (some above 0.5 IoU, some below)."""
    repeated = boxes.repeat(copies, 1)
    return (repeated + 4 * torch.randn(repeated.shape, generator=generator)).clamp(min=0)


# --------------------------------------------------------------------------- heads


def test_two_mlp_head_and_predictor_equal_torchvision() -> None:
    generator = torch.Generator().manual_seed(0)
    tv_head = tv_faster_rcnn.TwoMLPHead(CHANNELS * 49, REPRESENTATION)
    tv_predictor = tv_faster_rcnn.FastRCNNPredictor(REPRESENTATION, NUM_CLASSES)
    head = TwoMLPHead(CHANNELS * 49, REPRESENTATION)
    predictor = FastRCNNPredictor(REPRESENTATION, NUM_CLASSES)
    head.load_state_dict(tv_head.state_dict())
    predictor.load_state_dict(tv_predictor.state_dict())
    x = torch.randn(6, CHANNELS, 7, 7, generator=generator)
    ours = predictor(head(x))
    theirs = tv_predictor(tv_head(x))
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)
    assert ours[1].shape == (6, 4 * NUM_CLASSES)
    with pytest.raises(ValueError, match="roi_features"):
        predictor(torch.randn(2, REPRESENTATION, 2, 2))


@pytest.mark.parametrize("norm_layer", [None, nn.BatchNorm2d])
def test_conv_fc_head_equals_torchvision(norm_layer) -> None:
    torch.manual_seed(0)
    tv_head = tv_faster_rcnn.FastRCNNConvFCHead((CHANNELS, 7, 7), [6, 6], [16], norm_layer)
    head = ConvFCHead((CHANNELS, 7, 7), [6, 6], [16], norm_layer=norm_layer)
    assert list(head.state_dict().keys()) == list(tv_head.state_dict().keys())
    if norm_layer is not None:
        with torch.no_grad():  # non-trivial running statistics
            for module in tv_head.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-1, 1)
                    module.running_var.uniform_(0.5, 2)
    head.load_state_dict(tv_head.state_dict())
    head.eval()
    tv_head.eval()
    x = torch.randn(5, CHANNELS, 7, 7)
    torch.testing.assert_close(head(x), tv_head(x), rtol=0, atol=0)
    assert head(x).shape == (5, 16)


# --------------------------------------------------------------------------- loss


def test_fastrcnn_loss_hand_computed() -> None:
    # 3 RoIs, 3 classes (0 = background); RoI 0 is class 2, RoI 1 background, RoI 2 class 1
    class_logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.5, 0.5, -0.5]])
    box_regression = torch.zeros(3, 12)
    box_regression[0, 8:12] = torch.tensor([0.1, -0.05, 1.0, 0.0])  # class 2 deltas of RoI 0
    box_regression[2, 4:8] = torch.tensor([0.0, 0.0, 0.0, 0.2])  # class 1 deltas of RoI 2
    box_regression[1, 4:8] = 100.0  # background RoI: never in the box loss
    labels = torch.tensor([2, 0, 1])
    regression_targets = torch.zeros(3, 4)

    loss_classifier, loss_box_reg = fastrcnn_loss(
        class_logits, box_regression, labels, regression_targets
    )

    def nll(logits: list[float], label: int) -> float:
        return math.log(sum(math.exp(v) for v in logits)) - logits[label]

    expected_ce = (nll([0, 1, 2], 2) + nll([1, 0, 0], 0) + nll([0.5, 0.5, -0.5], 1)) / 3
    beta = 1 / 9

    def smooth_l1(d: float) -> float:
        return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta

    box_sum = sum(smooth_l1(d) for d in (0.1, -0.05, 1.0, 0.0, 0.0, 0.0, 0.0, 0.2))
    assert loss_classifier.item() == pytest.approx(expected_ce, rel=1e-6)
    assert loss_box_reg.item() == pytest.approx(box_sum / 3, rel=1e-6)


def test_fastrcnn_loss_equals_torchvision_and_handles_empty() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(20, NUM_CLASSES, generator=generator)
    deltas = torch.randn(20, 4 * NUM_CLASSES, generator=generator)
    labels = [torch.randint(0, NUM_CLASSES, (12,), generator=generator), torch.zeros(8).long()]
    targets = [torch.randn(12, 4, generator=generator), torch.randn(8, 4, generator=generator)]
    ours = fastrcnn_loss(logits, deltas, labels, targets)
    theirs = tv_roi_heads.fastrcnn_loss(logits, deltas, labels, targets)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

    empty_logits = torch.zeros(0, NUM_CLASSES, requires_grad=True)
    empty_deltas = torch.zeros(0, 4 * NUM_CLASSES, requires_grad=True)
    loss_cls, loss_box = fastrcnn_loss(
        empty_logits, empty_deltas, torch.zeros(0).long(), torch.zeros(0, 4)
    )
    assert loss_cls.item() == 0.0 and loss_box.item() == 0.0
    (loss_cls + loss_box).backward()
    with pytest.raises(ValueError, match="box_regression"):
        fastrcnn_loss(logits, deltas[:, :4], labels, targets)


# --------------------------------------------------------------------------- vs torchvision


@pytest.mark.parametrize(("seed", "detections_per_img"), [(0, 100), (1, 100), (2, 15)])
def test_inference_equals_torchvision(seed: int, detections_per_img: int) -> None:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    ours, tv_heads = make_pair(detections_per_img=detections_per_img)
    ours.eval()
    tv_heads.eval()
    features = fpn_features(generator)
    proposals = [
        random_boxes(40, IMAGE_SIZES[0], generator),
        random_boxes(30, IMAGE_SIZES[1], generator),
    ]
    with torch.no_grad():
        detections, losses = ours(features, proposals, IMAGE_SIZES)
        expected, _ = tv_heads(features, proposals, IMAGE_SIZES)
    assert losses == {}
    assert len(detections) == 2
    total = 0
    for ours_image, tv_image in zip(detections, expected, strict=True):
        assert ours_image["labels"].dtype == torch.int64
        torch.testing.assert_close(ours_image["labels"], tv_image["labels"], rtol=0, atol=0)
        torch.testing.assert_close(ours_image["boxes"], tv_image["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(ours_image["scores"], tv_image["scores"], rtol=0, atol=1e-5)
        assert len(ours_image["scores"]) <= detections_per_img
        total += len(ours_image["scores"])
    assert total > 20  # enough detections for the comparison to mean something


def test_inference_with_an_image_without_proposals() -> None:
    generator = torch.Generator().manual_seed(3)
    ours, tv_heads = make_pair()
    ours.eval()
    tv_heads.eval()
    features = fpn_features(generator)
    proposals = [torch.zeros(0, 4), random_boxes(25, IMAGE_SIZES[1], generator)]
    with torch.no_grad():
        detections, _ = ours(features, proposals, IMAGE_SIZES)
        expected, _ = tv_heads(features, proposals, IMAGE_SIZES)
    assert detections[0]["boxes"].shape == (0, 4)
    torch.testing.assert_close(detections[1]["boxes"], expected[1]["boxes"], rtol=0, atol=1e-4)
    torch.testing.assert_close(detections[1]["labels"], expected[1]["labels"], rtol=0, atol=0)


def test_training_losses_equal_torchvision() -> None:
    generator = torch.Generator().manual_seed(4)
    ours, tv_heads = make_pair(batch_size_per_image=16)
    ours.train()
    tv_heads.train()
    features = fpn_features(generator)
    targets = gt_targets(generator)
    proposals = [
        torch.cat(
            (jittered(targets[0]["boxes"], 6, generator), random_boxes(30, (60, 50), generator))
        ),
        random_boxes(20, IMAGE_SIZES[1], generator),
    ]
    torch.manual_seed(123)
    _, losses = ours(features, [p.clone() for p in proposals], IMAGE_SIZES, targets)
    torch.manual_seed(123)
    _, expected = tv_heads(features, [p.clone() for p in proposals], IMAGE_SIZES, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert losses["loss_box_reg"].item() > 0
    for name in expected:
        torch.testing.assert_close(losses[name], expected[name], rtol=0, atol=1e-6)
    sum(losses.values()).backward()
    assert ours.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- training targets


def test_sampler_keeps_at_most_a_quarter_foreground() -> None:
    generator = torch.Generator().manual_seed(5)
    heads, _ = make_pair()
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    near = gt + 1.5 * torch.rand(300, 4, generator=generator)  # IoU > 0.8: foreground
    far = torch.tensor([[44.0, 44.0, 60.0, 60.0]]).repeat(1000, 1)  # IoU 0: background
    targets = [{"boxes": gt, "labels": torch.tensor([2])}]

    _, _, labels, _ = heads.select_training_samples([torch.cat((near, far))], targets)
    assert labels[0].numel() == 512
    assert int((labels[0] > 0).sum()) == 128  # int(512 * 0.25)
    assert int((labels[0] == 0).sum()) == 384

    _, _, labels, _ = heads.select_training_samples([torch.cat((near[:10], far))], targets)
    assert int((labels[0] > 0).sum()) == 11  # 10 near boxes + the appended ground truth
    assert int((labels[0] == 0).sum()) == 512 - 11


def test_bg_iou_low_ignores_proposals_far_from_objects() -> None:
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    proposal_boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 8.0],  # IoU 0.8 -> foreground
            [0.0, 0.0, 10.0, 3.0],  # IoU 0.3 -> background
            [0.0, 0.0, 10.0, 0.5],  # IoU 0.05 -> ignored with bg_iou_low = 0.1
            [20.0, 20.0, 30.0, 30.0],  # IoU 0 -> ignored with bg_iou_low = 0.1
        ]
    )
    matcher = Matcher(0.5, 0.5)
    gt_labels = torch.tensor([3])
    _, labels = assign_proposals_to_gt(proposal_boxes, gt_boxes, gt_labels, matcher=matcher)
    assert labels.tolist() == [3, 0, 0, 0]
    _, labels = assign_proposals_to_gt(
        proposal_boxes, gt_boxes, gt_labels, matcher=matcher, bg_iou_low=0.1
    )
    assert labels.tolist() == [3, 0, -1, -1]

    heads = RoIHeads(
        box_roi_pool=SingleLevelRoIPool(kind="roi_pool", output_size=2, featmap_name="c4"),
        box_head=TwoMLPHead(CHANNELS * 4, REPRESENTATION),
        box_predictor=FastRCNNPredictor(REPRESENTATION, NUM_CLASSES),
        bg_iou_low=0.1,
    )
    targets = [{"boxes": gt_boxes, "labels": gt_labels}]
    sampled_boxes, _, labels, _ = heads.select_training_samples([proposal_boxes], targets)
    # the two ignored proposals are never sampled; the appended ground truth is
    torch.testing.assert_close(sampled_boxes[0], torch.cat((proposal_boxes[:2], gt_boxes)))
    assert labels[0].tolist() == [3, 0, 3]
    with pytest.raises(ValueError, match="bg_iou_low"):
        RoIHeads(
            box_roi_pool=heads.box_roi_pool,
            box_head=nn.Identity(),
            box_predictor=nn.Identity(),
            bg_iou_low=0.6,
        )


def test_gt_boxes_appended_and_regression_targets_hand_case() -> None:
    heads, _ = make_pair()
    gt_boxes = torch.tensor([[1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 10.0, 10.0]])
    proposal_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0]])
    targets = [{"boxes": gt_boxes[:1], "labels": torch.tensor([2])}]
    # proposal 0 vs gt (1, 1, 11, 11): IoU 81 / 119 -> foreground; proposal 1: IoU 81 / 219
    boxes, matched_idxs, labels, regression_targets = heads.select_training_samples(
        [proposal_boxes], targets
    )
    torch.testing.assert_close(boxes[0], torch.cat((proposal_boxes, gt_boxes[:1])))
    assert labels[0].tolist() == [2, 0, 2]
    assert matched_idxs[0].tolist()[0] == 0 and matched_idxs[0].tolist()[2] == 0
    # weights (10, 10, 5, 5): centres move by (1, 1) px on a 10 px box, same size
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(regression_targets[0], expected)

    # a proposal twice as tall as its object: dy = 10 * (5 - 10) / 20, dh = 5 * log(1 / 2)
    targets = [{"boxes": gt_boxes[1:], "labels": torch.tensor([1])}]
    _, _, labels, regression_targets = heads.select_training_samples([proposal_boxes[1:]], targets)
    assert labels[0].tolist() == [1, 1]  # IoU 0.5 counts as foreground
    torch.testing.assert_close(
        regression_targets[0][0], torch.tensor([0.0, -2.5, 0.0, 5 * math.log(0.5)])
    )


def test_training_with_images_without_objects() -> None:
    generator = torch.Generator().manual_seed(6)
    heads, _ = make_pair(batch_size_per_image=32)
    heads.train()
    features = fpn_features(generator)
    proposals = [random_boxes(20, size, generator) for size in IMAGE_SIZES]
    targets = gt_targets(generator)

    sampled_boxes, _, labels, regression_targets = heads.select_training_samples(proposals, targets)
    assert sampled_boxes[1].shape == (20, 4)  # nothing appended, all background
    assert labels[1].tolist() == [0] * 20
    assert torch.equal(regression_targets[1], torch.zeros(20, 4))
    assert int((labels[0] > 0).sum()) >= 3  # the appended ground truth

    empty = [targets[1], targets[1]]
    _, losses = heads(features, proposals, IMAGE_SIZES, empty)
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_classifier"]) and losses["loss_classifier"].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(heads.box_predictor.cls_score.weight.grad).all()


def test_bad_inputs_are_named() -> None:
    heads, _ = make_pair()
    features = fpn_features(torch.Generator().manual_seed(0))
    proposals = [torch.zeros(3, 4), torch.zeros(2, 4)]
    with pytest.raises(ValueError, match=r"proposals\[1\]"):
        heads(features, [proposals[0], torch.zeros(2, 5)], IMAGE_SIZES)
    with pytest.raises(ValueError, match="targets must be given"):
        heads(features, proposals, IMAGE_SIZES)
    bad = [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.int32)}] * 2
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]"):
        heads(features, proposals, IMAGE_SIZES, bad)


# --------------------------------------------------------------------------- single-level pooling


@pytest.mark.parametrize("kind", ["roi_pool", "roi_align", "spp"])
def test_single_level_pool_matches_direct_ops(kind: str) -> None:
    generator = torch.Generator().manual_seed(7)
    features = {"c4": torch.randn(2, CHANNELS, 4, 4, generator=generator)}  # stride 16
    image_sizes = [(60, 64), (50, 40)]
    proposals = [random_boxes(5, image_sizes[0], generator), random_boxes(3, (50, 40), generator)]
    pool = SingleLevelRoIPool(kind=kind, output_size=3, featmap_name="c4", spp_levels=(1, 2))
    pooled = pool(features, proposals, image_sizes)

    scale = 1 / 16  # 2 ** round(log2(4 / 60))
    if kind == "roi_pool":
        expected = roi_pool(features["c4"], proposals, 3, spatial_scale=scale)
    elif kind == "roi_align":
        expected = roi_align(features["c4"], proposals, 3, spatial_scale=scale, sampling_ratio=2)
    else:
        expected = roi_spatial_pyramid_pool(
            features["c4"], proposals, levels=(1, 2), spatial_scale=scale
        )
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0)
    assert pooled.flatten(1).shape == (8, pool.flat_size(CHANNELS))
    assert pool.output_channels_flat(CHANNELS) == pool.flat_size(CHANNELS)

    wrong_scale = SingleLevelRoIPool(
        kind=kind, output_size=3, featmap_name="c4", spatial_scale=1 / 8, spp_levels=(1, 2)
    )
    assert not torch.equal(wrong_scale(features, proposals, image_sizes), pooled)


def test_single_level_pool_settings() -> None:
    pool = SingleLevelRoIPool(kind="spp", output_size=7, featmap_name="c4")
    assert pool.flat_size(10) == 10 * (1 + 4 + 16)
    assert (
        SingleLevelRoIPool(kind="roi_align", output_size=(7, 5), featmap_name="c4").flat_size(2)
        == 70
    )
    with pytest.raises(ValueError, match="kind"):
        SingleLevelRoIPool(kind="max", output_size=7, featmap_name="c4")
    with pytest.raises(ValueError, match="c5"):
        SingleLevelRoIPool(kind="roi_pool", output_size=7, featmap_name="c5")(
            {"c4": torch.zeros(1, 1, 4, 4)}, [torch.zeros(0, 4)], [(64, 64)]
        )
    # aligned RoIAlign through the pooler equals the op with aligned=True
    features = {"c4": torch.randn(1, 2, 8, 8)}
    boxes = [torch.tensor([[3.0, 5.0, 20.0, 27.0]])]
    aligned = SingleLevelRoIPool(kind="roi_align", output_size=2, featmap_name="c4", aligned=True)
    expected = roi_align(
        features["c4"], boxes, 2, spatial_scale=0.25, sampling_ratio=2, aligned=True
    )
    torch.testing.assert_close(aligned(features, boxes, [(32, 32)]), expected, rtol=0, atol=0)


def test_fast_rcnn_style_heads_train_on_a_single_level_pool() -> None:
    # Fast R-CNN (roi_pool) box branch: one step of SGD lowers the loss on a fixed batch
    torch.manual_seed(8)
    generator = torch.Generator().manual_seed(8)
    heads = RoIHeads(
        box_roi_pool=SingleLevelRoIPool(kind="roi_pool", output_size=2, featmap_name="c4"),
        box_head=TwoMLPHead(CHANNELS * 4, REPRESENTATION),
        box_predictor=FastRCNNPredictor(REPRESENTATION, NUM_CLASSES),
        bg_iou_low=0.1,
        batch_size_per_image=64,
    )
    features = {"c4": torch.randn(2, CHANNELS, 4, 4, generator=generator)}
    targets = gt_targets(generator)
    targets[1] = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([2])}
    proposals = [jittered(t["boxes"], 8, generator) for t in targets]
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.1)
    history = []
    for _ in range(2):
        torch.manual_seed(0)
        _, losses = heads(features, proposals, IMAGE_SIZES, targets)
        loss = sum(losses.values())
        history.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert history[1] < history[0]


def test_soft_nms_keeps_what_nms_removes_with_lowered_scores() -> None:
    # two RoIs on one object, one on another; class 1 everywhere
    scores = torch.tensor([[0.05, 0.9, 0.05], [0.15, 0.8, 0.05], [0.25, 0.7, 0.05]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0]])[
        :, None
    ].expand(3, 3, 4)
    settings = {"score_thresh": 0.05, "nms_thresh": 0.4, "detections_per_img": 100}
    [hard] = select_box_detections(scores, boxes, [3], **settings)
    [soft] = select_box_detections(scores, boxes, [3], soft_nms_sigma=0.5, **settings)
    assert hard["scores"].tolist() == pytest.approx([0.9, 0.7])  # IoU 0.5 > 0.4: removed
    # soft-NMS keeps it at 0.8 * exp(-0.5**2 / 0.5), below the other object's 0.7
    assert soft["scores"].tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-0.5)])
    assert soft["boxes"][2].tolist() == [0.0, 0.0, 10.0, 5.0]
    assert soft["labels"].tolist() == [1, 1, 1]
    for bad in (-1.0, "abc"):  # e.g. --set model.box_soft_nms_sigma=abc
        with pytest.raises(ValueError, match="soft_nms_sigma must be a number >= 0"):
            RoIHeads(
                box_roi_pool=nn.Identity(),
                box_head=nn.Identity(),
                box_predictor=nn.Identity(),
                soft_nms_sigma=bad,
            )


def test_small_detectors_use_soft_nms_torchvision_layouts_do_not() -> None:
    from structvision.models.detection import (
        faster_rcnn_resnet50_fpn,
        faster_rcnn_small_fpn,
        keypoint_rcnn_resnet50_fpn,
        keypoint_rcnn_small_fpn,
        mask_rcnn_resnet50_fpn,
        mask_rcnn_small_fpn,
    )

    small = {"num_classes": 3, "width": 8, "fpn_channels": 16}
    for model in (
        faster_rcnn_small_fpn(**small),
        mask_rcnn_small_fpn(**small),
        keypoint_rcnn_small_fpn(num_keypoints=5, **small),
    ):
        assert model.roi_heads.soft_nms_sigma == 0.5
    # Fast R-CNN keeps NMS (its rows were measured so) and takes the option like the others
    from structvision.models.detection import fast_rcnn_small

    assert fast_rcnn_small(num_classes=3, width=8).roi_heads.soft_nms_sigma == 0.0
    soft = fast_rcnn_small(num_classes=3, width=8, box_soft_nms_sigma=0.5)
    assert soft.roi_heads.soft_nms_sigma == 0.5
    for model in (
        faster_rcnn_resnet50_fpn(num_classes=3),
        mask_rcnn_resnet50_fpn(num_classes=3),
        keypoint_rcnn_resnet50_fpn(num_classes=2),
    ):
        assert model.roi_heads.soft_nms_sigma == 0.0
