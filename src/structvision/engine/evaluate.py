"""Evaluation of a model on a dataset, sharded over processes and gathered on rank 0.

An *evaluator* (see ``structvision.evaluation``) has:

* ``update(targets: list[dict], predictions: list[dict])`` — called once per batch;
* ``records: list`` — picklable per-image results accumulated by ``update``;
* ``compute() -> dict[str, float]`` — flat metrics (``bbox/AP``, ``miou``, ...) from ``records``.

Rank ``r`` of ``W`` evaluates dataset indices ``r, r + W, r + 2W, ...``; the records of all ranks
are gathered on rank 0, which computes the metrics and broadcasts them to every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from structvision.engine.data import move_to_device
from structvision.engine.distributed import broadcast_object, gather_objects, rank_and_world_size
from structvision.engine.progress import ProgressBar
from structvision.engine.rng import preserved_rng


class Evaluator(Protocol):
    """What `evaluate` needs from an evaluator."""

    records: list

    def update(self, targets: list[dict], predictions: list[dict]) -> None: ...

    def compute(self) -> dict[str, float]: ...


def shard_indices(*, dataset_size: int, rank: int, world_size: int) -> list[int]:
    """Dataset indices evaluated by ``rank``: ``rank, rank + world_size, ...``."""
    return list(range(rank, dataset_size, world_size))


def evaluate(
    *,
    model: nn.Module,
    dataset: Dataset,
    evaluator: Evaluator,
    collate_fn: Callable[[list[Any]], Any],
    fabric: Fabric | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Run ``model`` in eval mode over ``dataset`` and return ``evaluator``'s metrics.

    Args:
        model: the plain module (not DDP-wrapped); ``model(images)`` returns one prediction dict
            per image. Its train/eval mode is restored afterwards.
        dataset: map-style dataset of ``(image, target)`` samples.
        evaluator: receives CPU targets and CPU float32 predictions; on rank 0 its ``records``
            end up holding the records of every rank.
        collate_fn: turns a list of samples into ``(images, targets)``.
        fabric: gives the device, the autocast of mixed precision, rank and world size.
        device: used when ``fabric`` is None; defaults to the device of the model's parameters.
        batch_size: images per forward pass.
        num_workers: data-loading worker processes.
        progress: show a progress bar on rank 0.

    Returns:
        The metrics computed on rank 0, identical on every rank.
    """
    if fabric is not None:
        device, rank, world_size = fabric.device, fabric.global_rank, fabric.world_size
    else:
        device = _default_device(model) if device is None else torch.device(device)
        rank, world_size = rank_and_world_size()
    indices = shard_indices(dataset_size=len(dataset), rank=rank, world_size=world_size)
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_fn,
        num_workers=num_workers,
        generator=torch.Generator(),
    )
    autocast = fabric.autocast if fabric is not None else nullcontext
    was_training = model.training
    model.eval()
    try:
        with preserved_rng(device):
            _predict_into(
                model=model,
                loader=loader,
                evaluator=evaluator,
                device=device,
                autocast=autocast,
                show_progress=progress and rank == 0,
            )
    finally:
        model.train(was_training)
    return _gather_and_compute(evaluator=evaluator, rank=rank)


def _default_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _predict_into(
    *,
    model: nn.Module,
    loader: DataLoader,
    evaluator: Evaluator,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    show_progress: bool,
) -> None:
    """Feed every batch's targets and predictions to ``evaluator.update``. Mixed precision
    (``autocast``, a fresh context per batch) covers the model only: the data, which a
    generator may be rendering right now, is made in full precision."""
    cpu = torch.device("cpu")
    with (
        ProgressBar(description="eval", total=len(loader), enabled=show_progress) as bar,
        torch.no_grad(),
    ):
        for batch_index, (images, targets) in enumerate(loader):
            with autocast():
                predictions = model(move_to_device(list(images), device))
            if len(predictions) != len(targets):
                raise ValueError(
                    f"evaluate: the model returned {len(predictions)} predictions for a batch of "
                    f"{len(targets)} images"
                )
            evaluator.update(list(targets), move_to_device(list(predictions), cpu, float32=True))
            bar.update(completed=batch_index + 1)


def _gather_and_compute(*, evaluator: Evaluator, rank: int) -> dict[str, float]:
    """Concatenate every rank's records on rank 0, compute there, broadcast the metrics."""
    all_records = gather_objects(evaluator.records)
    metrics = None
    if rank == 0:
        evaluator.records = [record for records in all_records for record in records]
        metrics = {name: float(value) for name, value in evaluator.compute().items()}
    return broadcast_object(metrics)
