"""`TrainConfig`: every knob of the training loop in one flat, JSON-serialisable record."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
ACCELERATORS = ("auto", "cpu", "cuda")
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")


@dataclass
class TrainConfig:
    """Settings of one training run.

    Steps count optimizer updates. One step consumes ``batch_size * grad_accum_steps`` samples on
    every process, so ``batch_size * grad_accum_steps * world_size`` samples in all.

    Attributes:
        max_steps: number of optimizer steps to train for. A run resumed with a larger value
            follows the schedule of a run of the new length from the step reached (a cosine is
            stretched to the new end).
        batch_size: images per micro-batch on each process.
        grad_accum_steps: micro-batches whose gradients are summed before one optimizer step.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adamw"``.
        lr: peak learning rate (after warm-up, before decay).
        momentum: SGD momentum; ignored by AdamW.
        weight_decay: L2 / decoupled weight decay; never applied to biases and norm parameters.
        schedule: ``"constant"``, ``"step"`` (multiply by ``gamma`` at each of
            ``step_milestones``) or ``"cosine"`` (from ``lr`` down to 0 at ``max_steps``).
        warmup_steps: steps of linear warm-up from ``lr * warmup_factor`` to ``lr``; never more
            than a quarter of ``max_steps`` (a short run is not all warm-up).
        warmup_factor: learning-rate multiplier at step 0 of the warm-up.
        step_milestones: steps at which the ``"step"`` schedule multiplies the lr by ``gamma``.
        gamma: decay factor of the ``"step"`` schedule.
        clip_grad_norm: clip the global L2 gradient norm to this value; ``None`` disables.
        precision: ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``, or ``"auto"`` (bf16/fp16
            mixed on CUDA, 32-bit on CPU).
        accelerator: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        devices: processes (devices) per machine, or ``"auto"``.
        num_nodes: machines.
        strategy: ``"auto"``, ``"ddp"`` or ``"ddp_find_unused_parameters_true"``.
        eval_every: evaluate every this many steps (0: only at the end).
        checkpoint_every: save a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: keep this many most recent checkpoints (0: keep all).
        log_every: write a line to ``metrics.jsonl`` every this many steps.
        num_workers: data-loading worker processes per training process.
        seed: seeds the model's initial weights, data order, per-sample augmentation and the
            training RNG; saved with the run.
        progress: show progress on rank 0 (a bar in a terminal, a plain line per log interval
            otherwise).
    """

    max_steps: int = 1000
    batch_size: int = 2
    grad_accum_steps: int = 1
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    step_milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    log_every: int = 20
    num_workers: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (JSON-serialisable) with every field."""
        values = dataclasses.asdict(self)
        values["step_milestones"] = list(self.step_milestones)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict such as ``to_dict()`` wrote; unknown keys are an error."""
        if not isinstance(values, dict):
            raise TypeError(f"TrainConfig.from_dict expects a dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"TrainConfig: unknown key(s) {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """Return a copy with ``changes`` applied (validated like the constructor)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


_INT_FIELDS = (
    "max_steps",
    "batch_size",
    "grad_accum_steps",
    "warmup_steps",
    "num_nodes",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "num_workers",
    "seed",
)
_FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "warmup_factor", "gamma")
_CHOICES = {
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "precision": PRECISIONS,
    "accelerator": ACCELERATORS,
    "strategy": STRATEGIES,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(config: TrainConfig) -> None:
    """Check field types; ints given for float fields are converted to float."""
    for name in _INT_FIELDS:
        value = getattr(config, name)
        if not _is_int(value):
            raise TypeError(f"TrainConfig.{name} must be an int, got {value!r}")
    for name in _FLOAT_FIELDS:
        value = getattr(config, name)
        if not (_is_int(value) or isinstance(value, float)):
            raise TypeError(f"TrainConfig.{name} must be a number, got {value!r}")
        setattr(config, name, float(value))
    if config.clip_grad_norm is not None:
        if not (_is_int(config.clip_grad_norm) or isinstance(config.clip_grad_norm, float)):
            raise TypeError(
                f"TrainConfig.clip_grad_norm must be a number or None, got {config.clip_grad_norm!r}"
            )
        config.clip_grad_norm = float(config.clip_grad_norm)
    if not isinstance(config.progress, bool):
        raise TypeError(f"TrainConfig.progress must be a bool, got {config.progress!r}")
    milestones = config.step_milestones
    if not isinstance(milestones, (list, tuple)) or not all(_is_int(m) for m in milestones):
        raise TypeError(f"TrainConfig.step_milestones must be a list of ints, got {milestones!r}")
    config.step_milestones = list(milestones)
    if not (_is_int(config.devices) or config.devices == "auto"):
        raise TypeError(f"TrainConfig.devices must be an int or 'auto', got {config.devices!r}")


def _check_values(config: TrainConfig) -> None:
    for name, choices in _CHOICES.items():
        value = getattr(config, name)
        if value not in choices:
            raise ValueError(f"TrainConfig.{name} must be one of {list(choices)}, got {value!r}")
    for name in ("max_steps", "batch_size", "grad_accum_steps", "num_nodes", "log_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(config, name)}")
    for name in ("warmup_steps", "eval_every", "checkpoint_every", "keep_checkpoints"):
        if getattr(config, name) < 0:
            raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(config, name)}")
    if config.num_workers < 0:
        raise ValueError(f"TrainConfig.num_workers must be >= 0, got {config.num_workers}")
    if _is_int(config.devices) and config.devices < 1:
        raise ValueError(f"TrainConfig.devices must be >= 1 or 'auto', got {config.devices}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {config.lr}")
    if not 0.0 <= config.warmup_factor <= 1.0:
        raise ValueError(f"TrainConfig.warmup_factor must be in [0, 1], got {config.warmup_factor}")
    if config.momentum < 0 or config.weight_decay < 0 or config.gamma <= 0:
        raise ValueError(
            "TrainConfig.momentum and weight_decay must be >= 0 and gamma > 0, got "
            f"momentum={config.momentum}, weight_decay={config.weight_decay}, gamma={config.gamma}"
        )
    if config.clip_grad_norm is not None and not config.clip_grad_norm > 0:
        raise ValueError(
            f"TrainConfig.clip_grad_norm must be > 0 or None, got {config.clip_grad_norm}"
        )
    milestones = config.step_milestones
    if any(m <= 0 for m in milestones) or milestones != sorted(set(milestones)):
        raise ValueError(
            f"TrainConfig.step_milestones must be strictly increasing positive steps, got {milestones}"
        )


def describe_settings(config: TrainConfig | None = None) -> dict[str, tuple[Any, str]]:
    """Every `TrainConfig` field: ``name -> (value in config (default: the defaults), meaning)``.

    The meanings come from the class docstring's ``Attributes`` section, so they cannot drift
    from the documentation.
    """
    config = config if config is not None else TrainConfig()
    meanings: dict[str, str] = {}
    current = None
    lines = (TrainConfig.__doc__ or "").split("Attributes:", 1)[-1].splitlines()
    for line in lines:
        stripped = line.strip()
        head, sep, rest = stripped.partition(": ")
        if sep and head.isidentifier() and len(line) - len(line.lstrip()) <= 8:
            current = head
            meanings[current] = rest
        elif current is not None and stripped:
            meanings[current] += " " + stripped
    return {
        f.name: (getattr(config, f.name), " ".join(meanings.get(f.name, "").split()))
        for f in dataclasses.fields(TrainConfig)
    }
