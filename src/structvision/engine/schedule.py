"""Per-step learning-rate schedules: linear warm-up times a constant, step or cosine decay."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

from structvision.engine.config import SCHEDULES, TrainConfig


def lr_factor(
    step: int,
    *,
    schedule: str,
    max_steps: int,
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate for the optimizer step with 0-based index ``step``.

    The factor is ``warmup(step) * decay(step)``:

    * ``warmup`` rises linearly from ``warmup_factor`` at step 0 to 1 at ``warmup_steps`` and
      stays 1 afterwards;
    * ``decay`` is 1 (``"constant"``), ``gamma ** (number of milestones <= step)`` (``"step"``),
      or ``(1 + cos(pi * step / max_steps)) / 2`` (``"cosine"``, 0 at ``max_steps``).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    warmup = 1.0
    if step < warmup_steps:
        alpha = step / warmup_steps
        warmup = warmup_factor * (1.0 - alpha) + alpha
    if schedule == "step":
        return warmup * gamma ** bisect.bisect_right(list(milestones), step)
    if schedule == "cosine":
        progress = min(step, max_steps) / max_steps
        return warmup * 0.5 * (1.0 + math.cos(math.pi * progress))
    return warmup


#: The warm-up never takes more than this share of a run: a short first run is not all warm-up.
MAX_WARMUP_FRACTION = 0.25


def effective_warmup_steps(config: TrainConfig) -> int:
    """``config.warmup_steps``, bounded by a quarter of ``config.max_steps``."""
    return min(config.warmup_steps, int(config.max_steps * MAX_WARMUP_FRACTION))


def build_lr_scheduler(
    *, optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` stepped once per optimizer step, following `lr_factor` for ``config``.

    The warm-up is `effective_warmup_steps`: at most a quarter of the run.
    """
    warmup_steps = effective_warmup_steps(config)

    def factor(step: int) -> float:
        return lr_factor(
            step,
            schedule=config.schedule,
            max_steps=config.max_steps,
            warmup_steps=warmup_steps,
            warmup_factor=config.warmup_factor,
            milestones=config.step_milestones,
            gamma=config.gamma,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)


def apply_schedule(
    *, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR
) -> None:
    """Set every parameter group's learning rate to the schedule's value at its current step.

    After a resume the optimizer's state carries the learning rate that the *saved* schedule
    chose for the next step; with a changed schedule (a longer ``max_steps``) that value is
    stale. This recomputes it with the schedule in use, so the first resumed step already
    follows it. With an unchanged schedule it writes the same value back.
    """
    step = scheduler.last_epoch
    lrs = [
        base_lr * factor(step)
        for base_lr, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports
