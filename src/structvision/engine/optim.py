"""Optimizer construction: SGD or AdamW, without weight decay on biases and norm parameters."""

from __future__ import annotations

import torch
from torch import nn

from structvision.engine.config import TrainConfig


def split_decay_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into (decayed, not decayed).

    Parameters with one dimension or fewer — biases and the scale/shift of BatchNorm, GroupNorm
    and LayerNorm — are not decayed; weight decay on them only shrinks the normalisation.
    Frozen parameters (``requires_grad=False``) are left out of both lists.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return decay, no_decay


def build_optimizer(*, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over ``model``'s trainable parameters."""
    decay, no_decay = split_decay_parameters(model)
    if not decay and not no_decay:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"config.optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")
