"""Progress bar for training and evaluation (rich), shown on rank 0 only."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn


class ProgressBar:
    """``description  ━━━━━━  step/total  loss 0.123  elapsed  ETA``; a no-op when disabled.

    Works when the output is not a terminal (rich then prints the final state only).
    """

    def __init__(
        self, *, description: str, total: int, completed: int = 0, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task(
            description, total=total, completed=completed, status=""
        )

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, *, completed: int, status: str = "", total: int | None = None) -> None:
        """Set the number of completed units and the status text (e.g. ``loss 0.123``), and
        the total where it was only an estimate."""
        self._progress.update(self._task, completed=completed, status=status, total=total)

    def print(self, message: str) -> None:
        """Print a line above the bar (or plainly when the bar is disabled)."""
        if self.enabled:
            self._progress.console.print(message)


def _format_duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class TrainingProgress:
    """How training shows its progress on rank 0.

    * In a terminal (stdout and stderr both), a bar on stderr whose status shows the latest
      loss and learning rate at every step, with the ETA.
    * Otherwise (a file, nohup, a batch scheduler, CI), one plain line per log interval on
      stdout, flushed at once: step, loss, learning rate, images per second and ETA.
    * Nothing when disabled (``progress=False`` or not rank 0).
    """

    def __init__(self, *, total: int, completed: int = 0, enabled: bool = True) -> None:
        terminal = sys.stdout.isatty() and sys.stderr.isatty()
        self.mode = "off" if not enabled else "bar" if terminal else "lines"
        self.total = total
        self.first_step = completed
        self.started = time.perf_counter()
        self._bar = ProgressBar(
            description="train", total=total, completed=completed, enabled=self.mode == "bar"
        )

    @property
    def wants_every_step(self) -> bool:
        """Whether `step` should be called at every step (it needs the loss as a number)."""
        return self.mode == "bar"

    def __enter__(self) -> TrainingProgress:
        self._bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._bar.__exit__(exc_type, exc, traceback)

    def eta(self, step: int) -> float:
        """Seconds left, from the mean time per step since this session started."""
        done = step - self.first_step
        elapsed = time.perf_counter() - self.started
        return elapsed / done * (self.total - step) if done > 0 else 0.0

    def step(self, *, step: int, loss: float, lr: float) -> None:
        """The bar's state after ``step``."""
        self._bar.update(completed=step, status=f"loss {loss:.4f}  lr {lr:.3g}")

    def log(self, record: dict) -> None:
        """A log interval ended (``record`` as written to ``metrics.jsonl``)."""
        if self.mode != "lines":
            return
        step = record["step"]
        print(
            f"step {step}/{self.total}  loss {record['total_loss']:.4f}  lr {record['lr']:.3g}  "
            f"{record['samples_per_sec']:.1f} img/s  ETA {_format_duration(self.eta(step))}",
            flush=True,
        )

    def print(self, message: str) -> None:
        """A line above the bar, or a plain flushed line."""
        if self.mode == "bar":
            self._bar.print(message)
        elif self.mode == "lines":
            print(message, flush=True)


def print_start_summary(
    *,
    model: nn.Module,
    model_config: dict[str, Any],
    config: Any,
    fabric: Any,
    train_size: int,
    val_size: int | None,
    run_dir: Path,
    start_step: int,
    resumed_from: Path | None,
) -> None:
    """What is about to run, in a few plain lines (rank 0 prints it; flushed)."""
    from structvision.engine.schedule import effective_warmup_steps

    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    recipe = model_config.get("recipe") if isinstance(model_config, dict) else None
    device = fabric.device
    processes = fabric.world_size
    per_step = config.batch_size * config.grad_accum_steps * processes
    warmup = effective_warmup_steps(config)
    start = f"resuming at step {start_step} from {resumed_from}" if resumed_from else "from step 0"
    lines = [
        f"train {recipe or type(model).__name__}: {type(model).__name__}, "
        f"{parameters:,} parameters ({trainable:,} trainable)",
        f"  device {device} ({torch.get_num_threads()} threads), {processes} process(es), "
        f"precision {config.precision}",
        f"  data {train_size} training images"
        + (f", {val_size} validation images" if val_size is not None else ""),
        f"  steps {config.max_steps} ({start}), {per_step} images per step "
        f"(batch {config.batch_size} x {config.grad_accum_steps} accumulated x {processes})",
        f"  {config.optimizer} lr {config.lr:g}, {config.schedule} schedule, warm-up {warmup} steps",
        f"  output {run_dir}, seed {config.seed}",
    ]
    if warmup < config.warmup_steps:
        lines.append(
            f"  note: warmup_steps={config.warmup_steps} is more than a quarter of the run; "
            f"warming up for {warmup} steps instead"
        )
    print("\n".join(lines), flush=True)
