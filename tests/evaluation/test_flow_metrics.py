"""Flow metrics on hand-computed cases, and the two pooling conventions."""

from __future__ import annotations

import math

import pytest
import torch

from structvision.evaluation.flow import FlowEvaluator, flow_errors


def _case():
    # four pixels (1 x 4); true flow (10, 0) everywhere; errors 0, 2, 4 (and 5 outside GT)
    gt = torch.zeros(2, 1, 4)
    gt[0] = 10.0
    pred = gt.clone()
    pred[0, 0, 1] += 2.0  # error 2
    pred[0, 0, 2] += 3.0
    pred[1, 0, 2] += math.sqrt(7.0)  # error sqrt(9 + 7) = 4
    pred[1, 0, 3] += 5.0  # error 5, but no ground truth there
    valid = torch.tensor([[True, True, True, False]])
    noc = torch.tensor([[True, True, False, True]])
    return pred, gt, valid, noc


def test_flow_errors_by_hand():
    pred, gt, valid, noc = _case()
    metrics = flow_errors(pred, gt, valid, noc)
    assert metrics["epe"] == pytest.approx((0 + 2 + 4) / 3)
    assert metrics["epe_noc"] == pytest.approx(1.0) and metrics["epe_occ"] == pytest.approx(4.0)
    assert metrics["px1"] == pytest.approx(1 / 3)
    assert metrics["px3"] == pytest.approx(2 / 3) and metrics["px5"] == pytest.approx(1.0)
    # outlier: error > 3 px and > 5% of |gt| = 0.5 px: only the 4-px pixel
    assert metrics["fl_all"] == pytest.approx(100 / 3)


def test_fl_all_needs_both_conditions():
    gt = torch.zeros(2, 1, 2)
    gt[0, 0, 0] = 100.0  # 5% of 100 = 5 px: a 4-px error is no outlier
    gt[0, 0, 1] = 20.0  # 5% of 20 = 1 px: a 4-px error is one
    pred = gt.clone()
    pred[1] += 4.0
    assert flow_errors(pred, gt)["fl_all"] == pytest.approx(50.0)


def test_non_finite_ground_truth_is_unknown_and_sizes_must_match():
    gt = torch.zeros(2, 2, 2)
    gt[:, 0, 0] = float("nan")
    pred = torch.ones(2, 2, 2)
    assert flow_errors(pred, gt)["epe"] == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="ground truth's resolution"):
        flow_errors(torch.zeros(2, 4, 4), gt)


def test_pixels_and_images_conventions_differ_as_documented():
    small_gt = torch.zeros(2, 1, 1)
    small_pred = small_gt + torch.tensor([3.0, 4.0])[:, None, None]  # one pixel, error 5
    big_gt = torch.zeros(2, 1, 4)  # four pixels, error 0
    targets = [{"flow": small_gt, "image_id": 0}, {"flow": big_gt, "image_id": 1}]
    predictions = [{"flow": small_pred}, {"flow": big_gt.clone()}]
    pooled, per_image = FlowEvaluator(), FlowEvaluator(convention="images", prefix="flow/")
    for evaluator in (pooled, per_image):
        evaluator.update(targets, predictions)
    assert pooled.compute()["epe"] == pytest.approx(5 / 5)
    assert per_image.compute()["flow/epe"] == pytest.approx((5 + 0) / 2)
    assert "epe_noc" not in pooled.compute()  # no visibility masks in these targets


def test_evaluator_reads_world_flow_style_targets():
    pred, gt, _, noc = _case()
    evaluator = FlowEvaluator()
    evaluator.update([{"flow": gt, "valid": noc}], [{"flow": pred}])
    metrics = evaluator.compute()
    assert metrics["epe"] == pytest.approx((0 + 2 + 4 + 5) / 4)  # ground truth everywhere
    assert metrics["epe_noc"] == pytest.approx((0 + 2 + 5) / 3)
    assert metrics["epe_occ"] == pytest.approx(4.0)
    assert list(metrics)[:3] == ["epe", "epe_noc", "epe_occ"]
    with pytest.raises(ValueError, match="no images"):
        FlowEvaluator().compute()
