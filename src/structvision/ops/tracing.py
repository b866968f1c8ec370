"""Whether the model is being traced for export or compiled, for code with an eager-only path.

Some eager paths are faster than their plain form but would be wrong or unwanted in a traced
graph: a tensor made from a shape freezes a symbolic size into a constant
(:mod:`structvision.models.flow.raft`), and a thread pool is not an operator
(:mod:`structvision.ops.roi`). Those paths check :func:`is_tracing` and take the plain form
while ``torch.export`` (and the ONNX exporter on it), ``torch.jit.trace`` or ``torch.compile``
records.
"""

from __future__ import annotations

import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True while ``torch.jit.trace``, ``torch.export`` or ``torch.compile`` records."""
    compiler = getattr(torch, "compiler", None)
    exporting = getattr(compiler, "is_exporting", None)  # torch >= 2.6
    compiling = getattr(compiler, "is_compiling", None)
    return bool(
        torch.jit.is_tracing()
        or (exporting is not None and exporting())
        or (compiling is not None and compiling())
    )
