"""Normal and intrinsic-image metrics against hand-computed cases and direct implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from structvision.evaluation.intrinsic import (
    NormalEvaluator,
    lmse,
    normal_errors,
    sample_judgements,
    scale_invariant_mse,
    whdr,
)


def _rotated(degrees: float) -> list[float]:
    radians = math.radians(degrees)
    return [0.0, math.sin(radians), math.cos(radians)]


def test_normal_errors_by_hand():
    gt = torch.tensor([[0.0, 0.0, 1.0]] * 4).T.reshape(3, 1, 4)
    pred = torch.tensor([[0.0, 0.0, 1.0], _rotated(10), _rotated(45), [0.0, 0.0, 5.0]]).T.reshape(
        3, 1, 4
    )
    metrics = normal_errors(pred, gt)
    assert metrics["mean"] == pytest.approx((10 + 45) / 4, abs=1e-5)
    assert metrics["median"] == pytest.approx(5.0, abs=1e-5)
    assert metrics["rmse"] == pytest.approx(math.sqrt((100 + 2025) / 4), abs=1e-4)
    assert (metrics["a11"], metrics["a22"], metrics["a30"]) == (0.75, 0.75, 0.75)
    valid = torch.tensor([[True, False, True, True]])
    assert normal_errors(pred, gt, valid)["mean"] == pytest.approx(15.0, abs=1e-5)
    evaluator = NormalEvaluator()
    evaluator.update(
        [{"normals": gt}, {"normals": gt[:, :, :1]}],
        [{"normals": pred}, {"normals": pred[:, :, :1]}],
    )
    assert evaluator.compute()["mean"] == pytest.approx(55 / 5, abs=1e-5)  # pooled pixels


def _lmse_direct(correct: np.ndarray, estimate: np.ndarray, window: int, shift: int) -> float:
    """Grosse et al.'s local_error, written out for one channel."""
    ssq = total = 0.0
    rows, cols = correct.shape
    for i in range(0, rows - window + 1, shift):
        for j in range(0, cols - window + 1, shift):
            c = correct[i : i + window, j : j + window]
            e = estimate[i : i + window, j : j + window]
            alpha = (c * e).sum() / (e * e).sum() if (e * e).sum() > 0 else 0.0
            ssq += ((c - alpha * e) ** 2).sum()
            total += (c**2).sum()
    return ssq / total


def test_lmse_equals_a_direct_implementation_and_its_properties():
    generator = torch.Generator().manual_seed(0)
    albedo, shading = torch.rand(2, 1, 40, 50, generator=generator) + 0.1
    guess_a, guess_s = torch.rand(2, 1, 40, 50, generator=generator) + 0.1
    expected = (
        _lmse_direct(albedo[0].double().numpy(), guess_a[0].double().numpy(), 20, 10)
        + _lmse_direct(shading[0].double().numpy(), guess_s[0].double().numpy(), 20, 10)
    ) / 2
    assert lmse(guess_a, guess_s, albedo, shading) == pytest.approx(expected, rel=1e-9)
    assert lmse(albedo * 3, shading * 0.5, albedo, shading) == pytest.approx(0.0, abs=1e-12)
    zeros = torch.zeros_like(albedo)
    assert lmse(zeros, zeros, albedo, shading) == pytest.approx(1.0)
    assert scale_invariant_mse(albedo * 2, albedo) == pytest.approx(0.0, abs=1e-12)


def test_whdr_by_hand_and_on_sampled_judgements():
    albedo = torch.tensor([[[0.2, 0.5, 0.21]]])  # (1, 1, 3) intensities
    judgements = [
        {"x1": 0, "y1": 0, "x2": 1, "y2": 0, "darker": "1", "weight": 2.0},  # agrees (0.2 < 0.5)
        {"x1": 0, "y1": 0, "x2": 2, "y2": 0, "darker": "E", "weight": 1.0},  # agrees (5% apart)
        {"x1": 1, "y1": 0, "x2": 0, "y2": 0, "darker": "1", "weight": 1.0},  # disagrees
    ]
    assert whdr(albedo, judgements) == pytest.approx(1 / 4)
    truth = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)) + 0.05
    sampled = sample_judgements(truth, 200, torch.Generator().manual_seed(2))
    assert whdr(truth, sampled) == 0.0
    assert whdr(truth * 4, sampled) == 0.0  # ratios only
    assert whdr(torch.ones_like(truth), sampled) > 0.5  # a flat albedo says "equal" to all
