"""Depth metrics against hand-computed values, and the classical depth baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from structvision.data.synthetic.world import (
    Camera,
    WorldConfig,
    render,
    sample_world_scene,
    world_rng,
)
from structvision.evaluation import DepthEvaluator, depth_errors
from structvision.models.depth import MeanDepthBaseline, SGBMStereo


def test_depth_errors_hand_computed():
    gt = np.array([[2.0, 4.0], [10.0, 100.0]])  # 100 m lies outside (0, 80): skipped
    pred = np.array([[2.0, 5.0], [8.0, 3.0]])
    errors = depth_errors(gt, pred)
    assert errors["abs_rel"] == pytest.approx((0 + 0.25 + 0.2) / 3)
    assert errors["sq_rel"] == pytest.approx((0 + 1 / 4 + 4 / 10) / 3)
    assert errors["rmse"] == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    logs = [0.0, math.log(4 / 5), math.log(10 / 8)]
    assert errors["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 3))
    assert errors["a1"] == pytest.approx(1 / 3)  # ratios 1, 1.25, 1.25: only the first < 1.25
    assert errors["a2"] == pytest.approx(1.0)


def test_evaluator_means_over_images_and_median_scales():
    gt = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    evaluator = DepthEvaluator(median_scaling=True, prefix="depth/")
    evaluator.update(
        [{"depth": gt, "image_id": 0}, {"depth": gt, "image_id": 1}, {"depth": gt, "image_id": 1}],
        [{"depth": gt * 3}, {"depth": gt}, {"depth": gt * 7}],  # the repeated id is ignored
    )
    metrics = evaluator.compute()
    assert metrics["depth/abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["depth/num_images"] == 2
    assert metrics["depth/median_ratio_mean"] == pytest.approx((1 / 3 + 1) / 2)


def test_evaluator_refuses_an_image_without_valid_pixels():
    evaluator = DepthEvaluator()
    with pytest.raises(ValueError, match="image 7"):
        evaluator.update(
            [{"depth": torch.zeros(2, 2), "image_id": 7}], [{"depth": torch.ones(2, 2)}]
        )


def test_sgbm_recovers_the_depth_of_a_rendered_stereo_pair():
    config = WorldConfig(image_size=(96, 160), texture_strength=(1.0, 1.0))
    scene = sample_world_scene(world_rng(seed=0, split="val", index=0), config)
    left_camera = Camera.from_config(config)
    left = render(scene, left_camera)
    right = render(scene, left_camera.shifted(config.baseline))
    matcher = SGBMStereo(num_disparities=64)
    depth, valid = matcher.predict_depth(left.image, right.image, left_camera.fx, config.baseline)
    assert valid.float().mean() > 0.5
    errors = depth_errors(left.depth, depth, mask=valid)
    assert errors["a1"] > 0.85  # a constant guess of the median depth scores far lower
    constant = torch.full_like(left.depth, float(left.depth.median()))
    assert depth_errors(left.depth, constant, mask=valid)["a1"] < errors["a1"]


def test_mean_depth_baseline_predicts_the_training_mean():
    maps = [torch.full((2, 3), 2.0), torch.full((2, 3), 4.0)]
    baseline = MeanDepthBaseline().fit([{"depth": m} for m in maps])
    prediction = baseline.predict(torch.zeros(1, 3, 2, 3))[0]["depth"]
    assert torch.allclose(prediction, torch.full((2, 3), 3.0))
    restored = MeanDepthBaseline.from_dict(baseline.to_dict())
    assert torch.equal(restored.predict(torch.zeros(1, 3, 2, 3))[0]["depth"], prediction)
