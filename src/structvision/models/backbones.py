"""Convolutional backbones that return a dict of multi-scale feature maps.

Every backbone here maps an already *normalised* image batch ``(B, 3, H, W)`` (the detector's
own transform subtracts the ImageNet mean and divides by the std; the backbones do not) to an
``OrderedDict`` of feature maps ordered from the highest resolution to the lowest:

======  ======  ===========================================
name    stride  ResNet stage
======  ======  ===========================================
``c2``  4       ``layer1``
``c3``  8       ``layer2``
``c4``  16      ``layer3``
``c5``  32      ``layer4``
======  ======  ===========================================

A map at stride ``s`` has spatial size ``ceil(H / s) x ceil(W / s)`` for the ResNets and the
small backbone alike (every down-sampling is a padded stride-2 conv or pool).

:func:`dilated_resnet_backbone` is the semantic segmentation variant (DeepLab, torchvision's
``fcn_resnet50``): some of ``layer2 .. layer4`` trade their stride 2 for dilated 3x3
convolutions (``replace_stride_with_dilation``), so with the usual ``(False, True, True)``
``c3``, ``c4`` and ``c5`` all have stride 8 and size ``ceil(H / 8) x ceil(W / 8)``. Each backbone has
``out_channels: dict[str, int]`` and ``strides: dict[str, int]`` keyed like its output, which is
what :class:`structvision.models.fpn.FeaturePyramidNetwork` and the detection heads read.

:func:`resnet_backbone` keeps torchvision's parameter names (``conv1.weight``,
``layer1.0.bn1.running_mean``, ...), so a torchvision ImageNet checkpoint loads directly
through ``weights_path``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from structvision.safeload import load_tensors_file

__all__ = [
    "FrozenBatchNorm2d",
    "ResNetFeatures",
    "SmallBackbone",
    "dilated_resnet_backbone",
    "fold_frozen_batchnorm",
    "load_resnet_weights",
    "resnet_backbone",
    "small_backbone",
]

NormName = Literal["frozen", "batch", "group"]

_RESNET_BUILDERS: dict[int, Callable[..., torchvision.models.ResNet]] = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
}
# Bottleneck ResNets only: torchvision's BasicBlock cannot dilate.
_DILATED_RESNET_BUILDERS: dict[int, Callable[..., torchvision.models.ResNet]] = {
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
    152: torchvision.models.resnet152,
}
# torchvision's freezing order: the first ``trainable_layers`` entries stay trainable.
_RESNET_TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")
_GROUP_NORM_GROUPS = 32


def _check_returned_layers(returned_layers: Sequence[int]) -> tuple[int, ...]:
    layers = tuple(sorted(set(returned_layers)))
    if not layers or any(layer not in (1, 2, 3, 4) for layer in layers):
        raise ValueError(
            f"returned_layers must be a non-empty subset of (1, 2, 3, 4), got {returned_layers!r}"
        )
    return layers


def group_norm(num_channels: int) -> nn.GroupNorm:
    """``GroupNorm`` with 32 groups, or the largest divisor of 32 that divides the channels."""
    return nn.GroupNorm(math.gcd(_GROUP_NORM_GROUPS, num_channels), num_channels)


def _norm_layer(norm: str, *, allowed: Sequence[str]) -> Callable[[int], nn.Module]:
    if norm not in allowed:
        raise ValueError(f"norm must be one of {list(allowed)}, got {norm!r}")
    if norm == "frozen":
        return FrozenBatchNorm2d
    if norm == "batch":
        return nn.BatchNorm2d
    return group_norm


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")


class ResNetFeatures(nn.Module):
    """The convolutional trunk of a torchvision ResNet, returning ``c2 .. c5`` feature maps.

    Attribute names equal torchvision's (``conv1``, ``bn1``, ``layer1`` ...), so state dict keys
    are torchvision's minus ``fc.*`` and minus the stages after the last returned one, which are
    dropped (as torchvision's ``IntermediateLayerGetter`` does).
    """

    def __init__(self, resnet: torchvision.models.ResNet, *, returned_layers: Sequence[int]):
        super().__init__()
        self.returned_layers = _check_returned_layers(returned_layers)
        last_layer = self.returned_layers[-1]
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer_names = [f"layer{i}" for i in range(1, last_layer + 1)]
        for name in self.layer_names:
            self.add_module(name, getattr(resnet, name))
        self.out_channels = {
            f"c{i + 1}": _stage_out_channels(getattr(resnet, f"layer{i}"))
            for i in self.returned_layers
        }
        stage_strides = _stage_strides(resnet)  # stride of layer1 .. layer4 (8 when dilated)
        self.strides = {f"c{i + 1}": stage_strides[i - 1] for i in self.returned_layers}

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """``images (B, 3, H, W)`` normalised -> ``{"c2": (B, C2, H/4, W/4), ...}`` (sizes
        ``ceil(H / stride)``; see ``strides``)."""
        _check_images(images)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, 64, H/4, W/4)
        features: OrderedDict[str, Tensor] = OrderedDict()
        for index, name in enumerate(self.layer_names, start=1):
            x = getattr(self, name)(x)
            if index in self.returned_layers:
                features[f"c{index + 1}"] = x
        return features


def _stage_strides(resnet: torchvision.models.ResNet) -> list[int]:
    """Total strides after ``layer1 .. layer4``: the stem has stride 4, and a stage halves the
    resolution exactly when its first block's shortcut is a strided 1x1 conv."""
    strides, stride = [], 4
    for index in range(1, 5):
        downsample = getattr(resnet, f"layer{index}")[0].downsample
        stride *= downsample[0].stride[0] if downsample is not None else 1
        strides.append(stride)
    return strides


def _stage_out_channels(stage: nn.Sequential) -> int:
    last_block = stage[-1]
    last_conv = last_block.conv3 if hasattr(last_block, "conv3") else last_block.conv2
    return last_conv.out_channels


def resnet_backbone(
    depth: int,
    *,
    norm: NormName = "frozen",
    trainable_layers: int = 3,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    weights_path: str | Path | None = None,
) -> ResNetFeatures:
    """A torchvision ResNet-``depth`` trunk returning ``c2 .. c5`` (strides 4, 8, 16, 32).

    Args:
        depth: 18, 34 or 50.
        norm: ``"frozen"`` (:class:`FrozenBatchNorm2d`, the usual choice with pretrained
            weights), ``"batch"`` (``nn.BatchNorm2d``) or ``"group"`` (``nn.GroupNorm(32, c)``).
        trainable_layers: how many of ``layer4, layer3, layer2, layer1, conv1`` (in that order)
            keep ``requires_grad``; 0 freezes everything, 5 trains everything (including
            ``bn1``), as torchvision's ``_resnet_fpn_extractor``.
        returned_layers: which of ``layer1 .. layer4`` to return, as ``c{i + 1}``.
        weights_path: a local torchvision ImageNet state dict (``.pth``/``.pt`` loaded with
            ``weights_only=True``, or ``.safetensors``); ``fc.*`` keys are ignored. Loaded
            before freezing. BatchNorm statistics cannot be loaded into ``norm="group"``.

    Returns:
        A :class:`ResNetFeatures` mapping normalised ``(B, 3, H, W)`` images to an
        ``OrderedDict`` of feature maps, with ``out_channels`` and ``strides`` dicts.
    """
    if depth not in _RESNET_BUILDERS:
        raise ValueError(f"depth must be one of {sorted(_RESNET_BUILDERS)}, got {depth!r}")
    return _build_resnet_features(
        _RESNET_BUILDERS[depth],
        norm=norm,
        trainable_layers=trainable_layers,
        returned_layers=returned_layers,
        weights_path=weights_path,
        replace_stride_with_dilation=(False, False, False),
    )


def dilated_resnet_backbone(
    depth: int,
    *,
    replace_stride_with_dilation: Sequence[bool] = (False, True, True),
    norm: NormName = "batch",
    trainable_layers: int = 5,
    returned_layers: Sequence[int] = (3, 4),
    weights_path: str | Path | None = None,
) -> ResNetFeatures:
    """A torchvision ResNet-``depth`` trunk whose later stages use dilation instead of stride,
    for dense prediction (DeepLab; torchvision's ``fcn_resnet50``/``deeplabv3_resnet50``).

    Args:
        depth: 50, 101 or 152 (Bottleneck ResNets; torchvision's BasicBlock cannot dilate).
        replace_stride_with_dilation: one flag for each of ``layer2, layer3, layer4``: a
            ``True`` stage keeps the resolution and dilates its 3x3 convolutions (by 2 for the
            first replaced stage, 4 for the second, ...). The default gives ``c3``, ``c4`` and
            ``c5`` at stride 8 (output stride 8); ``(False, False, True)`` gives stride 16.
        norm, trainable_layers, weights_path: as in :func:`resnet_backbone`; the defaults
            (``nn.BatchNorm2d``, everything trainable) are torchvision's segmentation setup.
        returned_layers: which of ``layer1 .. layer4`` to return, as ``c{i + 1}``; by default
            ``c4`` (for an auxiliary head) and ``c5``.

    Returns:
        A :class:`ResNetFeatures` mapping normalised ``(B, 3, H, W)`` images to feature maps of
        size ``ceil(H / s) x ceil(W / s)`` at the strides ``s`` listed in its ``strides``.
    """
    if depth not in _DILATED_RESNET_BUILDERS:
        raise ValueError(
            f"depth must be one of {sorted(_DILATED_RESNET_BUILDERS)} (Bottleneck ResNets), "
            f"got {depth!r}"
        )
    flags = tuple(replace_stride_with_dilation)
    if len(flags) != 3 or not all(isinstance(flag, bool) for flag in flags):
        raise ValueError(
            "replace_stride_with_dilation must be 3 bools (for layer2, layer3, layer4), "
            f"got {replace_stride_with_dilation!r}"
        )
    return _build_resnet_features(
        _DILATED_RESNET_BUILDERS[depth],
        norm=norm,
        trainable_layers=trainable_layers,
        returned_layers=returned_layers,
        weights_path=weights_path,
        replace_stride_with_dilation=flags,
    )


def _build_resnet_features(
    builder: Callable[..., torchvision.models.ResNet],
    *,
    norm: NormName,
    trainable_layers: int,
    returned_layers: Sequence[int],
    weights_path: str | Path | None,
    replace_stride_with_dilation: tuple[bool, bool, bool],
) -> ResNetFeatures:
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers!r}")
    norm_layer = _norm_layer(norm, allowed=("frozen", "batch", "group"))
    resnet = builder(
        weights=None,
        norm_layer=norm_layer,
        replace_stride_with_dilation=list(replace_stride_with_dilation),
    )
    backbone = ResNetFeatures(resnet, returned_layers=returned_layers)
    if weights_path is not None:
        load_resnet_weights(backbone, weights_path)
    _freeze_resnet(backbone, trainable_layers=trainable_layers)
    return backbone


def _freeze_resnet(backbone: ResNetFeatures, *, trainable_layers: int) -> None:
    trainable = list(_RESNET_TRAINABLE_ORDER[:trainable_layers])
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, parameter in backbone.named_parameters():
        if not any(name.startswith(prefix + ".") for prefix in trainable):
            parameter.requires_grad_(False)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights_path {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(str(path), device="cpu")
        else:
            state_dict = load_tensors_file(path, what="weights_path")
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(
            f"weights_path {str(path)!r} is not a readable state dict: {error}"
        ) from error
    if not isinstance(state_dict, dict) or not all(
        isinstance(value, Tensor) for value in state_dict.values()
    ):
        raise ValueError(
            f"weights_path {str(path)!r} must hold a dict of tensors (a state dict), "
            f"got {type(state_dict).__name__}"
        )
    return state_dict


def load_resnet_weights(backbone: ResNetFeatures, weights_path: str | Path) -> None:
    """Load a torchvision ResNet state dict from ``weights_path`` into ``backbone`` in place.

    ``fc.*`` keys and the keys of stages the backbone dropped are ignored; any other missing or
    unexpected key (``num_batches_tracked`` aside) raises a ``ValueError`` naming the file.
    """
    path = Path(weights_path)
    state_dict = _read_state_dict(path)
    dropped = ("fc.", *(f"layer{i}." for i in range(len(backbone.layer_names) + 1, 5)))
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith(dropped)}
    own_keys = set(backbone.state_dict())
    missing = sorted(key for key in own_keys - set(state_dict) if _counts(key))
    unexpected = sorted(key for key in set(state_dict) - own_keys if _counts(key))
    if missing or unexpected:
        raise ValueError(
            f"weights_path {str(path)!r} does not match the ResNet backbone: "
            f"{len(missing)} missing keys (first: {missing[:5]}), "
            f"{len(unexpected)} unexpected keys (first: {unexpected[:5]})"
        )
    own_state = backbone.state_dict()
    wrong_shapes = [
        f"{key}: {tuple(value.shape)} in file, {tuple(own_state[key].shape)} in model"
        for key, value in state_dict.items()
        if key in own_state and value.shape != own_state[key].shape
    ]
    if wrong_shapes:
        raise ValueError(
            f"weights_path {str(path)!r} has {len(wrong_shapes)} tensors of the wrong shape "
            f"(first: {wrong_shapes[:3]})"
        )
    backbone.load_state_dict({k: v for k, v in state_dict.items() if k in own_keys}, strict=False)


def _counts(key: str) -> bool:
    return not key.endswith("num_batches_tracked")


def fold_frozen_batchnorm(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` computing ``bn(conv(x))`` in one convolution (for inference)."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # (C_out,)
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    return folded


def _conv_norm_relu(
    in_channels: int, out_channels: int, *, stride: int, norm_layer: Callable[[int], nn.Module]
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """A small VGG-style net trainable from scratch: a stride-2 stem, then 4 stages.

    Stage ``i`` (``i = 1 .. 4``) is ``[conv3x3-norm-relu] x 2`` with stride 2 on its first conv
    and ``width * 2 ** (i - 1)`` channels, so stage ``i`` has stride ``2 ** (i + 1)`` and is
    returned as ``c{i + 1}``.
    """

    def __init__(
        self, *, width: int, norm_layer: Callable[[int], nn.Module], returned_layers: Sequence[int]
    ):
        super().__init__()
        self.returned_layers = _check_returned_layers(returned_layers)
        self.stem = _conv_norm_relu(3, width, stride=2, norm_layer=norm_layer)
        self.stages = nn.ModuleList()
        in_channels = width
        for index in range(1, self.returned_layers[-1] + 1):
            out_channels = width * 2 ** (index - 1)
            self.stages.append(
                nn.Sequential(
                    _conv_norm_relu(in_channels, out_channels, stride=2, norm_layer=norm_layer),
                    _conv_norm_relu(out_channels, out_channels, stride=1, norm_layer=norm_layer),
                )
            )
            in_channels = out_channels
        self.out_channels = {f"c{i + 1}": width * 2 ** (i - 1) for i in self.returned_layers}
        self.strides = {f"c{i + 1}": 2 ** (i + 1) for i in self.returned_layers}
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """``images (B, 3, H, W)`` normalised -> ``{"c2": (B, width, H/4, W/4), ...}``."""
        _check_images(images)
        x = self.stem(images)  # (B, width, H/2, W/2)
        features: OrderedDict[str, Tensor] = OrderedDict()
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if index in self.returned_layers:
                features[f"c{index + 1}"] = x
        return features


def small_backbone(
    *,
    width: int = 32,
    norm: Literal["batch", "group"] = "batch",
    returned_layers: Sequence[int] = (1, 2, 3, 4),
) -> SmallBackbone:
    """A :class:`SmallBackbone` with channels ``width * (1, 2, 4, 8)`` at strides 4 .. 32.

    Meant for training from scratch on a CPU (about 0.3 M parameters at ``width=32`` up to
    ``c4``, 1.2 M with ``c5``). ``norm="group"`` uses ``GroupNorm`` with 32 groups (fewer when
    the channel count is not a multiple of 32). Frozen BatchNorm is refused: with no pretrained
    statistics it would be the identity.
    """
    if width < 1:
        raise ValueError(f"width must be positive, got {width!r}")
    norm_layer = _norm_layer(norm, allowed=("batch", "group"))
    return SmallBackbone(width=width, norm_layer=norm_layer, returned_layers=returned_layers)
