"""Process topology: build the Lightning `Fabric`, detect torchrun, gather Python objects.

One process per device. ``devices`` × ``num_nodes`` processes train together with DDP; with more
than one process on CPU the gloo backend is used, on CUDA NCCL (Fabric's defaults). A script run
plainly starts the other local processes itself (``fabric.launch()`` re-runs the script with
rank variables set); a script started by ``torchrun`` uses the processes torchrun made.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from lightning_fabric import Fabric

from structvision.engine.config import TrainConfig

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (torchelastic)."""
    return dist.is_available() and dist.is_torchelastic_launched()


def resolve_accelerator(accelerator: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError("accelerator='cuda' was requested but no CUDA device is available")
    return accelerator


def resolve_precision(precision: str, *, accelerator: str) -> str:
    """``"auto"``: bf16 mixed on CUDA devices that support it, fp16 mixed on older GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    if accelerator == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def resolve_topology(config: TrainConfig) -> tuple[int | str, int, str]:
    """``(devices, num_nodes, strategy)`` for Fabric; under torchrun its environment decides."""
    if not launched_by_torchrun():
        return config.devices, config.num_nodes, config.strategy
    local_world = int(os.environ["LOCAL_WORLD_SIZE"])
    world = int(os.environ["WORLD_SIZE"])
    num_nodes = world // local_world
    if (config.devices, config.num_nodes) != (local_world, num_nodes):
        log.info(
            "launched by torchrun: using devices=%d, num_nodes=%d from the environment "
            "(config had devices=%s, num_nodes=%d)",
            local_world,
            num_nodes,
            config.devices,
            config.num_nodes,
        )
    strategy = config.strategy if config.strategy != "auto" or world == 1 else "ddp"
    return local_world, num_nodes, strategy


def build_fabric(config: TrainConfig) -> Fabric:
    """A `Fabric` for ``config``'s accelerator, devices, nodes, strategy and precision."""
    accelerator = resolve_accelerator(config.accelerator)
    devices, num_nodes, strategy = resolve_topology(config)
    return Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=resolve_precision(config.precision, accelerator=accelerator),
    )


def is_distributed() -> bool:
    """Whether a `torch.distributed` process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank; ``obj`` itself without a process group."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def rank_and_world_size() -> tuple[int, int]:
    """``(global rank, world size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
