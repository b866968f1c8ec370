"""Progress bar for training and evaluation (rich), shown on rank 0 only."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


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

    def update(self, *, completed: int, status: str = "") -> None:
        """Set the number of completed units and the status text (e.g. ``loss 0.123``)."""
        self._progress.update(self._task, completed=completed, status=status)

    def print(self, message: str) -> None:
        """Print a line above the bar (or plainly when the bar is disabled)."""
        if self.enabled:
            self._progress.console.print(message)
