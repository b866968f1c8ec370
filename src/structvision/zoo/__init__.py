"""The model zoo: trained checkpoints shipped with the package, loaded as ``zoo:NAME``.

Each entry is a folder ``structvision/zoo/weights/NAME/`` holding a checkpoint without its
training state — ``model.safetensors`` (half precision, or its large weights in int8 with a
scale per output channel, read back as float32; either only where that keeps the metrics) and
``config.json`` (how to rebuild the model) — and ``zoo.json``: the task, a description, the
metrics measured on the benchmark's held-out data, the command that trained it, and a ``check``
(a small validation SPEC, the metrics of the shipped weights on it and a tolerance) that the
test suite re-measures so that a broken conversion or preprocessing change fails CI.

``zoo:NAME`` is accepted wherever a run or checkpoint is (``eval``, ``predict``,
``structvision.load``); ``structvision zoo`` lists the entries. ``benchmarks/make_zoo.py``
makes an entry from a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ZOO_PREFIX", "ZooEntry", "is_zoo_name", "zoo_entries", "zoo_path"]

ZOO_PREFIX = "zoo:"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    """One shipped model (see the module docstring)."""

    name: str
    recipe: str
    task: str
    description: str
    metrics: dict[str, float]
    command: str
    check: dict[str, Any] = field(default_factory=dict)
    path: Path = WEIGHTS_DIR

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def zoo_entries() -> dict[str, ZooEntry]:
    """Every shipped entry, by name."""
    entries = {}
    if not WEIGHTS_DIR.is_dir():
        return entries
    for folder in sorted(p for p in WEIGHTS_DIR.iterdir() if (p / "zoo.json").is_file()):
        record = json.loads((folder / "zoo.json").read_text(encoding="utf-8"))
        entries[folder.name] = ZooEntry(
            name=folder.name,
            recipe=record["recipe"],
            task=record["task"],
            description=record["description"],
            metrics=record["metrics"],
            command=record["command"],
            check=record.get("check", {}),
            path=folder,
        )
    return entries


def is_zoo_name(path: str | Path) -> bool:
    """Whether ``path`` is written ``zoo:NAME``."""
    return str(path).startswith(ZOO_PREFIX)


def zoo_path(name: str | Path) -> Path:
    """The checkpoint folder of ``zoo:NAME`` (or ``NAME``); an unknown name raises
    ``FileNotFoundError`` listing the entries."""
    key = str(name).removeprefix(ZOO_PREFIX)
    entries = zoo_entries()
    if key not in entries:
        known = ", ".join(sorted(entries)) or "none yet"
        raise FileNotFoundError(f"zoo has no entry {key!r}; entries: {known}")
    return entries[key].path
