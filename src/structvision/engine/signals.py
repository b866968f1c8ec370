"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a batch scheduler's stop).

The first signal only asks: the loop finishes the step it is in, writes a checkpoint (atomically,
like every checkpoint) and raises `TrainingInterrupted`, which the command line turns into the
exact resume command and exit status ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). The
first signal also puts the previous handlers back, so a second one stops the process at once;
that cannot corrupt anything either, since a checkpoint becomes visible only by a rename.

A signal the process was started with ignored stays ignored (the Unix convention): a shell
script's background job (``structvision train ... &``) inherits SIGINT ignored so that the
terminal's Ctrl-C does not reach it, and it keeps stopping cleanly on SIGTERM.

With several processes every one must stop after the same step, so the decision is a vote
carried by the all-reduce the loop already makes for its NaN/Inf check: a signal seen by any
process stops all of them after the step in which the vote counted it (no extra collective).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType

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
    ``enabled``, never over a signal that is ignored; the previous handlers are restored on
    exit and after the first signal.
    """

    def __init__(self, *, enabled: bool = True, announce: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.announce = announce
        self.signal_number: int | None = None
        self.agreed = False  # several processes: set once the vote says some process stops
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for number in _SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:
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

    def agree(self) -> None:
        """Several processes voted, and some process received a signal: all of them stop after
        this step (a process that saw none stops as for SIGINT)."""
        self.agreed = True
        if self.signal_number is None:
            self.signal_number = int(signal.SIGINT)
