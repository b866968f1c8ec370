"""The run folder's metric files: ``metrics.jsonl`` (one line per log event), ``metrics.json``.

Each ``metrics.jsonl`` line is a JSON object with ``"kind": "train"`` (``step``, ``epoch``,
``lr``, every loss term, ``total_loss``, ``sec_per_step``, ``data_sec_per_step`` (waiting for
batches), ``samples_per_sec`` and, with
clipping, ``grad_norm``) or ``"kind": "eval"`` (``step`` and the evaluator's flat metrics).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from structvision.engine.files import write_json_atomic, write_text_atomic

METRICS_LOG_FILE = "metrics.jsonl"
FINAL_METRICS_FILE = "metrics.json"


def _json_number(value: Any) -> Any:
    """NaN/Inf are not JSON; write them as strings so the file stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends JSON lines to ``run_dir/metrics.jsonl``; a no-op when ``enabled`` is False."""

    def __init__(self, *, run_dir: str | os.PathLike, enabled: bool) -> None:
        self.path = Path(run_dir) / METRICS_LOG_FILE
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (flushed immediately, so a killed run keeps its log)."""
        if not self.enabled:
            return
        line = json.dumps({key: _json_number(value) for key, value in record.items()})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run rewrites what follows its checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))


def read_metrics_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of ``run_dir/metrics.jsonl`` in order."""
    path = Path(run_dir) / METRICS_LOG_FILE
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_final_metrics(run_dir: str | os.PathLike, metrics: dict[str, float]) -> None:
    """Write the final evaluation to ``run_dir/metrics.json`` atomically."""
    write_json_atomic(
        Path(run_dir) / FINAL_METRICS_FILE, {k: _json_number(v) for k, v in metrics.items()}
    )
