"""Inference-only rewrites that keep a model's outputs (up to float rounding) and speed it up.

    model = prepare_for_inference(from_torchvision(tv_model))

- Batch norm folded into the preceding convolution: ``bn(conv(x))`` becomes one convolution
  with scaled weights and a bias, for frozen and for eval-mode batch norm. The folded model's
  state dict differs (the norm layers are gone), so fold a copy, never a model to be trained
  or checkpointed.
- Channels-last memory format for the convolutional trunk, which the CPU (oneDNN) and GPU
  (cuDNN) convolution kernels run faster.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from structvision.models.backbones import fold_frozen_batchnorm

__all__ = ["ChannelsLast", "fold_batchnorm", "prepare_for_inference"]

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, _NORMS)
        and getattr(norm, "running_var", None) is not None
        and norm.running_var.numel() == conv.out_channels
    )


def _fold_in_place(module: nn.Module) -> int:
    """Fold every ``convK``/``bnK`` sibling pair and every ``Sequential(..., conv, norm, ...)``
    run below ``module``; returns how many norm layers were folded."""
    folded = 0
    children = dict(module.named_children())
    for name, child in children.items():
        if name.startswith("conv") and f"bn{name[4:]}" in children:
            norm = children[f"bn{name[4:]}"]
            if _foldable(child, norm):
                setattr(module, name, fold_frozen_batchnorm(child, norm))
                setattr(module, f"bn{name[4:]}", nn.Identity())
                folded += 1
    if isinstance(module, nn.Sequential):
        for index in range(len(module) - 1):
            if _foldable(module[index], module[index + 1]):
                module[index] = fold_frozen_batchnorm(module[index], module[index + 1])
                module[index + 1] = nn.Identity()
                folded += 1
    for child in module.children():
        folded += _fold_in_place(child)
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (put in eval mode) with batch norm folded into the convolutions."""
    folded = copy.deepcopy(model).eval()
    _fold_in_place(folded)
    return folded


class ChannelsLast(nn.Module):
    """Runs ``module`` on a channels-last copy of its ``(B, C, H, W)`` input."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)
        self.out_channels = getattr(module, "out_channels", None)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor] | Tensor:
        features = self.module(images.contiguous(memory_format=torch.channels_last))
        if isinstance(features, Tensor):
            return features.contiguous()
        return OrderedDict((name, f.contiguous()) for name, f in features.items())


def prepare_for_inference(
    model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True
) -> nn.Module:
    """A faster eval-mode copy of a detector (a model with a ``backbone`` attribute).

    Outputs equal the original's up to float rounding (folding reorders a multiply-add;
    channels-last picks other convolution kernels).
    """
    prepared = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    if channels_last and hasattr(prepared, "backbone"):
        prepared.backbone = ChannelsLast(prepared.backbone)
    return prepared
