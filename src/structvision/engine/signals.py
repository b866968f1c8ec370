"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a batch scheduler's stop).

The first signal only asks: the loop finishes the step it is in, writes a checkpoint (atomically,
like every checkpoint) and raises `TrainingInterrupted`, which the command line turns into the
exact resume command and exit status ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). The
first signal also puts the previous handlers back, so a second one stops the process at once;
that cannot corrupt anything either, since a checkpoint becomes visible only by a rename.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType

import torch

__all__ = ["StopSignals", "TrainingInterrupted"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing the checkpoint of ``step``.

    Attributes:
        step: the last completed optimizer step (the checkpoint's step).
        signal_number: the signal received.
        checkpoint: the checkpoint folder written for ``step``.
        exit_code: ``128 + signal_number``, the shell's convention.
    """

    def __init__(self, *, step: int, signal_number: int, checkpoint: Path) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(f"training stopped by {name} after step {step}; saved {checkpoint}")
        self.step = step
        self.signal_number = int(signal_number)
        self.checkpoint = checkpoint
        self.exit_code = 128 + int(signal_number)


class StopSignals:
    """Context manager that turns SIGINT/SIGTERM into a stop request checked once per step.

    Handlers are installed only in the main thread (Python allows no other) and when
    ``enabled``; the previous handlers are restored on exit and after the first signal.
    """

    def __init__(self, *, enabled: bool = True, announce: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.announce = announce
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for number in _SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.signal_number = number
        self._restore()  # a second signal acts at once
        if self.announce:
            name = signal.Signals(number).name
            print(
                f"\n{name} received: finishing this step and writing a checkpoint "
                "(send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def requested(self, fabric=None) -> bool:
        """Whether a stop was asked for, on this process or (with several) on any process."""
        if fabric is None or fabric.world_size == 1:
            return self.signal_number is not None
        number = torch.tensor([float(self.signal_number or 0)], device=fabric.device)
        number = fabric.all_reduce(number, reduce_op=torch.distributed.ReduceOp.MAX)
        if self.signal_number is None and int(number.item()) > 0:
            self.signal_number = int(number.item())
        return self.signal_number is not None
