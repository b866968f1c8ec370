"""SINT: the contrastive loss by hand, candidate and training-box sampling, overfitting a pair,
tracking a moving textured square with the overfitted network, and the learned box head
following a stretching one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from structvision.evaluation.tracking import paired_iou
from structvision.models.tracking.sint import (
    SINTTracker,
    _apply_offsets,
    contrastive_loss,
    radius_candidates,
    ridge_fit,
    sample_training_boxes,
    sint_small,
)
from structvision.structures import box_iou


def test_contrastive_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # distance sqrt(2)
    labels = torch.tensor([1.0, 0.0])
    expected = (0.5 * 2 + 0.5 * (2 - math.sqrt(2)) ** 2) / 2
    assert contrastive_loss(a, b, labels, margin=2.0).item() == pytest.approx(expected)
    caffe = (0.5 * 2 + 0.5 * max(0.0, 2 - 2)) / 2
    assert contrastive_loss(a, b, labels, margin=2.0, caffe=True).item() == pytest.approx(caffe)


def test_radius_candidates_cover_rings_and_scales():
    box = torch.tensor([10.0, 20.0, 30.0, 60.0])  # 20 x 40, centre (20, 40)
    boxes = radius_candidates(
        box, search_radius=0.5, rings=2, points_per_ring=4, scales=(0.9, 1.0, 1.1)
    )
    assert boxes.shape == ((1 + 4 + 8) * 3, 4)
    assert torch.allclose(boxes[13], box)  # the centre at scale 1
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    reach = (centres - torch.tensor([20.0, 40.0])).norm(dim=1).max()
    assert reach.item() == pytest.approx(0.5 * math.sqrt(20 * 40), rel=1e-5)


def test_training_boxes_follow_the_iou_rule():
    box = torch.tensor([30.0, 30.0, 60.0, 70.0])
    boxes, labels = sample_training_boxes(box, torch.Generator().manual_seed(0), count=32)
    iou = box_iou(boxes, box[None])[:, 0]
    assert labels.sum() >= 8 and (1 - labels).sum() >= 8
    assert (iou[labels == 1] > 0.7).all() and (iou[labels == 0] < 0.5).all()


def _scene(frames=12, stretch=0):
    """A textured square moving over a blurred random background; ``stretch`` pixels wider
    every frame (the texture stretched with it)."""
    generator = torch.Generator().manual_seed(0)
    background = torch.rand(3, 16, 24, generator=generator) * 0.4
    background = torch.nn.functional.interpolate(background[None], size=(96, 128))[0]
    texture = torch.rand(3, 4, 4, generator=generator) * 0.5 + 0.5
    images, boxes = [], []
    for t in range(frames):
        x, y, width = 20 + 4 * t, 30 + 2 * t, 24 + stretch * t
        patch = torch.nn.functional.interpolate(texture[None], size=(24, width))[0]
        image = background.clone()
        image[:, y : y + 24, x : x + width] = patch
        images.append(image)
        boxes.append([x, y, x + width, y + 24])
    return images, torch.tensor(boxes, dtype=torch.float64)


def test_sint_overfits_and_then_tracks():
    torch.manual_seed(0)
    images, truth = _scene()
    model = sint_small(width=8, embedding=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(40):
        j = 1 + step % 6
        boxes, labels = sample_training_boxes(truth[j], generator, count=24, image_size=(96, 128))
        pair = torch.cat([images[0], images[j]])
        target = {"query_box": truth[0].float(), "boxes": boxes, "labels": labels}
        loss = model([pair], [target])["loss_contrastive"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    model.eval()
    boxes, seconds = SINTTracker(model).track(images, truth[0])
    assert paired_iou(boxes, truth)[1:].mean() > 0.5 and seconds > 0
    regressed, _ = SINTTracker(model, box_regression=True).track(images, truth[0])
    assert paired_iou(regressed, truth)[1:].mean() > 0.4
    drifting, _ = SINTTracker(model, update_query=True).track(images, truth[0])
    assert drifting.shape == (12, 4)
    sequences = [{"frames": torch.stack(images), "init_box": truth[0]}]
    with torch.no_grad():
        [prediction] = model(sequences)
    assert torch.allclose(prediction["boxes"].double(), boxes, atol=1e-4)


def test_ridge_fit_equals_the_primal_solution_with_an_unpenalised_intercept():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(12, 30, generator=generator, dtype=torch.float64)
    targets = torch.randn(12, 4, generator=generator, dtype=torch.float64)
    weights, intercept = ridge_fit(features, targets, 0.5)
    centred = features - features.mean(0)
    penalty = 0.5 * float((centred**2).sum(1).mean())
    primal = torch.linalg.solve(
        centred.T @ centred + penalty * torch.eye(30, dtype=torch.float64),
        centred.T @ (targets - targets.mean(0)),
    )
    assert torch.allclose(weights, primal, atol=1e-10)
    assert torch.allclose(intercept, targets.mean(0) - features.mean(0) @ primal, atol=1e-10)
    # a vanishing penalty interpolates the samples (n < D)
    exact_w, exact_b = ridge_fit(features, targets, 1e-9)
    assert torch.allclose(features @ exact_w + exact_b, targets, atol=1e-5)


def test_the_learned_regression_head_follows_a_stretching_object():
    torch.manual_seed(0)
    images, truth = _scene(stretch=3)
    model = sint_small(width=8, embedding=32, regression_head=True, regression_hidden=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)

    def near_boxes(box, generator):
        near, overlapping = sample_training_boxes(
            box, generator, count=32, positive_iou=0.4, image_size=(96, 128)
        )
        return near[overlapping > 0]

    box_losses = []
    for step in range(150):
        j = 1 + step % 11
        boxes, labels = sample_training_boxes(truth[j], generator, count=24, image_size=(96, 128))
        target = {
            "query_box": truth[0].float(),
            "boxes": boxes,
            "labels": labels,
            "box": truth[j].float(),
            "reg_boxes": near_boxes(truth[j], generator),
        }
        losses = model([torch.cat([images[0], images[j]])], [target])
        optimizer.zero_grad()
        (losses["loss_contrastive"] + losses["loss_box_reg"]).backward()
        optimizer.step()
        box_losses.append(losses["loss_box_reg"].item())
    assert sum(box_losses[-5:]) < 0.5 * sum(box_losses[:5])
    model.eval()
    # the head moves boxes it has not seen towards the target
    near = near_boxes(truth[9], torch.Generator().manual_seed(7))
    with torch.no_grad():
        query = model.describe(model.feature_maps(images[0][None]), [truth[0].float()[None]])
        described = model.describe(model.feature_maps(images[9][None]), [near])
        offsets = model.regress(query.expand(len(near), -1), described)
    moved = torch.stack(
        [_apply_offsets(b.double(), o.double()) for b, o in zip(near, offsets, strict=True)]
    )
    before = box_iou(near, truth[9].float()[None]).mean()
    assert box_iou(moved.float(), truth[9].float()[None]).mean() > before + 0.1
    # and a tracker refining its box follows the stretch that fixed-aspect candidates cannot
    refined, _ = SINTTracker(model).track(images, truth[0])
    plain, _ = SINTTracker(model, learned_regression=False).track(images, truth[0])
    late = slice(6, None)  # the box has grown by three quarters of its first width or more
    assert paired_iou(refined, truth)[late].mean() > paired_iou(plain, truth)[late].mean() + 0.1


def test_a_network_without_the_regression_head_cannot_regress():
    model = sint_small(width=8, embedding=32)
    assert SINTTracker(model).learned_regression is False
    with pytest.raises(RuntimeError, match="no regression head"):
        model.regress(torch.zeros(1, 8), torch.zeros(1, 8))
    headed = sint_small(width=8, embedding=32, regression_head=True)
    pair = torch.rand(6, 64, 64)
    target = {
        "query_box": torch.tensor([8.0, 8, 30, 30]),
        "boxes": torch.tensor([[8.0, 8, 30, 30]]),
        "labels": torch.ones(1),
    }
    with pytest.raises(ValueError, match="box"):
        headed([pair], [target])


def _regression_loss_backward(**settings) -> nn.Module:
    """A SINT network with a regression head after one backward pass of its regression loss."""
    model = sint_small(width=8, embedding=32, regression_head=True, **settings)
    box = torch.tensor([8.0, 8, 30, 30])
    target = {
        "query_box": box,
        "boxes": torch.tensor([[8.0, 8, 30, 30], [30.0, 30, 60, 60]]),
        "labels": torch.tensor([1.0, 0.0]),
        "box": box,
        "reg_boxes": torch.tensor([[10.0, 6, 34, 28]]),
    }
    model([torch.rand(6, 64, 64)], [target])["loss_box_reg"].backward()
    return model


def test_the_regression_loss_trains_the_head_alone():
    model = _regression_loss_backward()
    head = {id(p) for p in model.regression_head.parameters()}
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.regression_head.parameters()
    )
    assert all(p.grad is None for p in model.parameters() if id(p) not in head)


def test_the_regression_loss_may_train_the_trunk_too():
    torch.manual_seed(0)
    model = _regression_loss_backward(regression_trains_trunk=True)
    convs = [m for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.weight.grad is not None for conv in convs)
    assert convs[0].weight.grad.abs().sum() > 0  # the first layer learns where boxes lie
    assert all(p.grad.abs().sum() > 0 for p in model.fc.parameters())
    with pytest.raises(ValueError, match="regression_trains_trunk"):
        sint_small(width=8, regression_head=True, regression_trains_trunk="yes")


def test_refinement_passes_and_the_motion_penalty():
    torch.manual_seed(0)
    images, truth = _scene(frames=5)
    model = sint_small(width=8, embedding=32, regression_head=True).eval()

    def track(**settings):
        return SINTTracker(model, **settings).track(images, truth[0])[0]

    plain = SINTTracker(model, learned_regression=False).track(images, truth[0])[0]
    assert torch.equal(track(refine_steps=0), plain)  # no pass: the chosen candidate
    assert torch.equal(track(refine_steps=3, refine_limits=(0.0, 0.0)), plain)
    once, twice = track(refine_steps=1), track(refine_steps=2)
    assert not torch.allclose(once, twice)
    # a second pass starts from the first pass's box: the first frame after init by hand
    tracker = SINTTracker(model, refine_steps=1)
    tracker.init(images[0], truth[0])
    first = tracker.update(images[1])
    with torch.no_grad():
        maps = model.feature_maps(images[1][None])
        offsets = model.regress(tracker._query, model.describe(maps, [first.float()[None]]))
    assert torch.allclose(twice[1], _apply_offsets(first, offsets[0].double()), atol=1e-5)
    # an overwhelming motion penalty keeps the centre where it was
    still = track(refine_steps=0, motion_penalty=1e6)
    centres = (still[:, :2] + still[:, 2:]) / 2
    assert torch.allclose(centres, centres[:1].expand_as(centres), atol=1e-4)
    with pytest.raises(ValueError, match="must not be negative"):
        SINTTracker(model, motion_penalty=-1)


def test_boxes_stay_inside_sensible_sizes():
    from structvision.models.tracking.sint import _bounded

    box = torch.tensor([100.0, 50.0, 100.0 + 1e-9, 50.0], dtype=torch.float64)  # collapsed
    bounded = _bounded(box, (80, 120))
    assert torch.allclose(bounded, torch.tensor([98.0, 48, 102, 52], dtype=torch.float64))
    huge = _bounded(torch.tensor([-500.0, -10, 900, 30], dtype=torch.float64), (80, 120))
    # centre (200, 10) moved to the right edge, width cut to the image's
    assert torch.allclose(huge, torch.tensor([60.0, -10, 180, 30], dtype=torch.float64))
    # a tracker whose every refinement shrinks the box by the most it may
    images, truth = _scene(frames=20)
    model = sint_small(width=8, embedding=32, regression_head=True).eval()
    model.regress = lambda queries, candidates: torch.tensor([[0.0, 0.0, -1.0, -1.0]])
    tracker = SINTTracker(model, refine_steps=3, refine_limits=(0.5, 0.5))
    boxes, _ = tracker.track(images, truth[0])
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert (sizes >= 4.0 - 1e-9).all() and torch.allclose(sizes[-1], torch.full((2,), 4.0).double())


def test_top_k_takes_the_mean_of_the_best_candidates():
    from structvision.models.tracking.sint import radius_candidates

    torch.manual_seed(0)
    images, truth = _scene(frames=3)
    model = sint_small(width=8, embedding=32, regression_head=False).eval()
    assert torch.equal(
        SINTTracker(model, top_k=1).track(images, truth[0])[0],
        SINTTracker(model).track(images, truth[0])[0],
    )
    tracker = SINTTracker(model, top_k=4, motion_penalty=0.0)  # the similarities alone
    tracker.init(images[0], truth[0])
    got = tracker.update(images[1])
    # by hand: the four candidates most similar to the first frame's box, averaged
    candidates = radius_candidates(truth[0].double())
    with torch.no_grad():
        maps = model.feature_maps(images[1][None])
        scores = model.describe(maps, [candidates.float()]) @ tracker._query[0]
    want = candidates[scores.topk(4).indices].double().mean(dim=0)
    assert torch.allclose(got, want, atol=1e-4)
    with pytest.raises(ValueError, match="top_k"):
        SINTTracker(model, top_k=0)


def test_small_targets_are_tracked_on_enlarged_frames():
    import torch.nn.functional as F

    torch.manual_seed(0)
    images, truth = _scene(frames=2)  # a 24 x 24 target
    model = sint_small(width=8, embedding=32, regression_head=False).eval()
    for wanted, limit, factor in ((36, 2.0, 1.5), (100, 2.0, 2.0), (10, 2.0, 1.0), (0, 2.0, 1.0)):
        tracker = SINTTracker(model, min_target_side=wanted, max_upscale=limit)
        tracker.init(images[0], truth[0])
        assert tracker._upscale == pytest.approx(factor)
    tracker = SINTTracker(model, min_target_side=48, learned_regression=False)
    tracker.init(images[0], truth[0])
    # the query: the box, doubled, on the frame enlarged twice
    with torch.no_grad():
        enlarged = F.interpolate(images[0][None], size=(192, 256), mode="bilinear")
        want = model.describe(model.feature_maps(enlarged), [truth[0].float()[None] * 2])
    assert torch.allclose(tracker._query, want, atol=1e-5)
    # on the same frame the best candidate is the query box, returned in the frame's pixels
    assert torch.allclose(tracker.update(images[0]), truth[0], atol=1e-4)
    with pytest.raises(ValueError, match="max_upscale"):
        SINTTracker(model, max_upscale=0.5)
