import math

import pytest
import torch

from structvision.engine import TrainConfig, lr_factor
from structvision.engine.schedule import build_lr_scheduler, effective_warmup_steps


def test_linear_warmup_then_step_decay():
    kwargs = dict(
        schedule="step",
        max_steps=100,
        warmup_steps=10,
        warmup_factor=0.1,
        milestones=[40, 70],
        gamma=0.5,
    )
    assert lr_factor(0, **kwargs) == pytest.approx(0.1)
    assert lr_factor(5, **kwargs) == pytest.approx(0.1 * 0.5 + 0.5)  # alpha = 0.5
    assert lr_factor(10, **kwargs) == pytest.approx(1.0)
    assert lr_factor(39, **kwargs) == pytest.approx(1.0)
    assert lr_factor(40, **kwargs) == pytest.approx(0.5)
    assert lr_factor(69, **kwargs) == pytest.approx(0.5)
    assert lr_factor(70, **kwargs) == pytest.approx(0.25)
    assert lr_factor(99, **kwargs) == pytest.approx(0.25)


def test_cosine_halfway_and_end():
    kwargs = dict(schedule="cosine", max_steps=100)
    assert lr_factor(0, **kwargs) == pytest.approx(1.0)
    assert lr_factor(50, **kwargs) == pytest.approx(0.5)
    assert lr_factor(25, **kwargs) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(100, **kwargs) == pytest.approx(0.0, abs=1e-12)
    # warm-up multiplies the cosine: step 2 of 4 warm-up steps from factor 0
    warm = lr_factor(2, schedule="cosine", max_steps=100, warmup_steps=4, warmup_factor=0.0)
    assert warm == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.02)) / 2)


def test_constant():
    assert lr_factor(7, schedule="constant", max_steps=10) == 1.0


def test_scheduler_sets_optimizer_lr_per_step():
    config = TrainConfig(
        max_steps=20,
        lr=0.2,
        schedule="step",
        step_milestones=[3],
        gamma=0.1,
        warmup_steps=2,
        warmup_factor=0.5,
    )
    param = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([param], lr=config.lr)
    scheduler = build_lr_scheduler(optimizer=optimizer, config=config)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.1, 0.15, 0.2, 0.02, 0.02])


def test_warmup_is_bounded_by_a_quarter_of_the_run():
    # Before: warmup_steps=200 with max_steps=8 kept the whole run in warm-up.
    config = TrainConfig(max_steps=8, lr=0.2, warmup_steps=200, warmup_factor=0.0)
    param = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([param], lr=config.lr)
    scheduler = build_lr_scheduler(optimizer=optimizer, config=config)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.2])  # warm-up of 8 // 4 = 2 steps
    long_run = TrainConfig(max_steps=3000, warmup_steps=200)
    assert effective_warmup_steps(long_run) == 200
