"""Seeding and capture/restore of the random generators (torch, CUDA, numpy, python).

States are stored as plain tensors, lists and numbers so that a checkpoint holding them loads
with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 (global RNG on purpose)
    torch.manual_seed(seed)


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """The current state of every generator this process uses; CUDA only for ``device``."""
    python_version, python_internal, python_gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 (global RNG on purpose)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [python_version, list(python_internal), python_gauss],
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Set every generator to ``state`` as returned by `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (global RNG on purpose)
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run a block without disturbing any generator: states are restored afterwards.

    Used around evaluation, so that evaluating during training does not change what training
    draws next.
    """
    state = capture_rng_state(device)
    try:
        yield
    finally:
        restore_rng_state(state, device)
