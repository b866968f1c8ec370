"""Deterministic data order and per-sample seeding, so that a resumed run sees the same data.

The training stream is the concatenation of one random permutation of the dataset per epoch:
epoch ``e`` is ``torch.randperm(N, generator=torch.Generator().manual_seed(seed + e))``.
Global micro-batch ``m`` is stream positions ``[m * B * W, (m + 1) * B * W)`` for ``B`` images
per process and ``W`` processes; rank ``r`` takes ``[m * B * W + r * B, m * B * W + (r + 1) * B)``.
Batches may straddle an epoch boundary; no sample is dropped.

Each sample is loaded with every random generator seeded from ``(seed, stream position)``, so
augmentations do not depend on the number of workers or on where a run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_MASK64 = (1 << 64) - 1


def sample_seed(*, seed: int, position: int) -> int:
    """A well-mixed 63-bit seed for the sample at global stream ``position`` (splitmix64)."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


class StreamBatchSampler(Sampler):
    """Yields this rank's micro-batches of ``(dataset_index, sample_seed)`` pairs.

    Args:
        dataset_size: number of samples ``N`` in the dataset.
        batch_size: samples per micro-batch on this rank.
        world_size: number of processes ``W``.
        rank: this process's global rank.
        seed: seed of the epoch permutations and of the per-sample seeds.
        start_micro_step: index of the first global micro-batch to yield (for resuming).
        num_micro_steps: how many micro-batches to yield.
    """

    def __init__(
        self,
        *,
        dataset_size: int,
        batch_size: int,
        world_size: int,
        rank: int,
        seed: int,
        start_micro_step: int,
        num_micro_steps: int,
    ) -> None:
        if dataset_size < 1:
            raise ValueError(f"dataset_size must be >= 1, got {dataset_size} (empty dataset?)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.start_micro_step = start_micro_step
        self.num_micro_steps = num_micro_steps

    def epoch_permutation(self, epoch: int) -> torch.Tensor:
        """The order of dataset indices in ``epoch``, shape ``(N,)``."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def positions(self, micro_step: int) -> range:
        """Global stream positions read by this rank at global ``micro_step``."""
        first = (micro_step * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __len__(self) -> int:
        return self.num_micro_steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, permutation = -1, torch.empty(0, dtype=torch.int64)
        for micro_step in range(
            self.start_micro_step, self.start_micro_step + self.num_micro_steps
        ):
            batch = []
            for position in self.positions(micro_step):
                epoch, offset = divmod(position, self.dataset_size)
                if epoch != cached_epoch:
                    cached_epoch, permutation = epoch, self.epoch_permutation(epoch)
                seed = sample_seed(seed=self.seed, position=position)
                batch.append((int(permutation[offset]), seed))
            yield batch


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with torch (CPU), numpy and python RNGs seeded by ``seed``; restore after."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()  # noqa: NPY002 (global RNG on purpose)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (1 << 32))  # noqa: NPY002 (global RNG on purpose)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002 (global RNG on purpose)


class SeededDataset(Dataset):
    """Wraps a map-style dataset; item ``(index, seed)`` is ``dataset[index]`` under `seeded_rng`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_rng(seed):
            return self.dataset[index]


def build_train_loader(
    *,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], Any],
    batch_size: int,
    world_size: int,
    rank: int,
    seed: int,
    start_micro_step: int,
    num_micro_steps: int,
    num_workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """The training `DataLoader` of this rank: a `StreamBatchSampler` over a `SeededDataset`."""
    batch_sampler = StreamBatchSampler(
        dataset_size=len(dataset),
        batch_size=batch_size,
        world_size=world_size,
        rank=rank,
        seed=seed,
        start_micro_step=start_micro_step,
        num_micro_steps=num_micro_steps,
    )
    return DataLoader(
        SeededDataset(dataset),
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # A private generator: creating the loader's iterator must not draw from the global RNG,
        # whose state is part of the checkpoint.
        generator=torch.Generator().manual_seed(seed),
    )


def move_to_device(obj: Any, device: torch.device, *, float32: bool = False) -> Any:
    """Copy the tensors inside nested lists/tuples/dicts to ``device``.

    With ``float32=True``, half and bfloat16 tensors are also converted to float32 (predictions
    made under mixed precision handed to an evaluator).
    """
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=device.type == "cuda")
        if float32 and obj.dtype in (torch.float16, torch.bfloat16):
            obj = obj.float()
        return obj
    if isinstance(obj, dict):
        return {key: move_to_device(value, device, float32=float32) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(value, device, float32=float32) for value in obj)
    return obj
