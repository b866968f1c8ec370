"""SINT: the contrastive loss by hand, candidate and training-box sampling, overfitting a pair,
and tracking a moving textured square with the overfitted network."""

from __future__ import annotations

import math

import pytest
import torch

from structvision.evaluation.tracking import paired_iou
from structvision.models.tracking.sint import (
    SINTTracker,
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


def _scene(frames=12):
    generator = torch.Generator().manual_seed(0)
    background = torch.rand(3, 16, 24, generator=generator) * 0.4
    background = torch.nn.functional.interpolate(background[None], size=(96, 128))[0]
    patch = torch.rand(3, 4, 4, generator=generator) * 0.5 + 0.5
    patch = torch.nn.functional.interpolate(patch[None], size=(24, 24))[0]
    images, boxes = [], []
    for t in range(frames):
        x, y = 20 + 4 * t, 30 + 2 * t
        image = background.clone()
        image[:, y : y + 24, x : x + 24] = patch
        images.append(image)
        boxes.append([x, y, x + 24, y + 24])
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
