"""Tracking metrics against hand-computed curves (got10k's conventions)."""

from __future__ import annotations

import math

import pytest
import torch

from structvision.evaluation.tracking import (
    TrackingEvaluator,
    center_errors,
    paired_iou,
    sequence_curves,
)

TRUTH = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)


def _predicted():
    boxes = TRUTH.clone()
    boxes[0] = torch.tensor([50.0, 50.0, 60.0, 60.0])  # frame 0 is replaced by the truth
    boxes[2] += torch.tensor([5.0, 0.0, 5.0, 0.0])  # IoU 50 / 150, centre 5 px off
    return boxes


def test_iou_and_centre_errors_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [float("nan"), 0.0, 1.0, 1.0]])
    assert paired_iou(a, b).tolist() == pytest.approx([1 / 7, 0.0])
    assert center_errors(b, a).tolist() == [pytest.approx(math.sqrt(2)), math.inf]
    assert center_errors(a[:1], torch.tensor([[1.0, 0.0, 5.0, 2.0]]), normalized=True).item() == (
        pytest.approx(2 / 4)
    )


def test_one_sequence_by_hand():
    curves = sequence_curves(_predicted(), TRUTH)
    success = curves["success"]
    # IoUs 1, 1, 1/3 against thresholds 0, 0.05, ..., 1 (strictly greater)
    assert (
        success[:7].tolist() == [1.0] * 7 and success[7:20].tolist() == [pytest.approx(2 / 3)] * 13
    )
    assert success[20] == 0.0
    assert success.mean().item() == pytest.approx((7 + 13 * 2 / 3) / 21)
    assert curves["precision"][4] == pytest.approx(2 / 3) and curves["precision"][5] == 1.0
    assert curves["norm_precision"].mean().item() == pytest.approx((50 * 2 / 3 + 1) / 51)
    assert (curves["ao"], curves["sr50"], curves["sr75"]) == (pytest.approx(2 / 3), 0.5, 0.5)


def test_invisible_frames_and_lost_targets():
    visible = torch.tensor([True, True, False])
    curves = sequence_curves(_predicted(), TRUTH, visible)
    assert curves["success"].mean().item() == pytest.approx(20 / 21) and curves["frames"] == 2
    assert curves["ao"] == 1.0
    lost = TRUTH.clone()
    lost[1:] = float("nan")
    curves = sequence_curves(lost, TRUTH)
    assert curves["success"][0] == pytest.approx(1 / 3) and curves["precision"][
        50
    ] == pytest.approx(1 / 3)
    assert curves["ao"] == 0.0


def test_sequences_count_once_and_attributes_split_them():
    evaluator = TrackingEvaluator()
    long_truth = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 9)
    evaluator.update(
        [
            {"boxes": TRUTH, "attributes": ["OCC"], "name": "a"},
            {"boxes": long_truth, "attributes": ["OCC", "SV"], "name": "b"},
        ],
        [
            {"boxes": _predicted(), "seconds_per_frame": 0.02},
            {"boxes": long_truth.clone(), "seconds_per_frame": 0.06},
        ],
    )
    metrics = evaluator.compute()
    first = (7 + 13 * 2 / 3) / 21
    assert metrics["success_auc"] == pytest.approx((first + 20 / 21) / 2)
    assert metrics["success_auc/SV"] == pytest.approx(20 / 21)
    assert metrics["success_auc/OCC"] == pytest.approx(metrics["success_auc"])
    assert metrics["sequences/OCC"] == 2 and metrics["fps"] == pytest.approx(2 / 0.08)
    assert metrics["precision"] == 1.0 and metrics["ao"] == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(ValueError, match="2 predicted boxes for a sequence of 3 frames"):
        evaluator.update([{"boxes": TRUTH}], [{"boxes": TRUTH[:2]}])


def test_success_and_precision_plots(tmp_path):
    from PIL import Image

    from structvision.viz import plot_tracking_curves

    evaluator = TrackingEvaluator()
    evaluator.update([{"boxes": TRUTH}], [{"boxes": _predicted()}])
    curves = evaluator.curves()
    assert curves["success"].shape == (21,) and curves["precision"].shape == (51,)
    path = plot_tracking_curves({"a": curves, "b": curves}, tmp_path / "ope.png", title="test")
    with Image.open(path) as image:
        assert image.size == (1000, 400)
    with pytest.raises(ValueError, match="no sequence with OCC"):
        evaluator.curves("OCC")
