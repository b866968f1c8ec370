"""Feature Pyramid Network (Lin et al. 2017) and a backbone + FPN wrapper.

The FPN takes an ``OrderedDict`` of backbone feature maps ordered from the highest resolution
to the lowest (``c2 .. c5`` at strides 4 .. 32) and returns maps of ``out_channels`` channels
each, at the same resolutions, named ``p2 .. p5`` (an input key ``"c<k>"`` becomes ``"p<k>"``;
any other key is kept as it is). Then, optionally, extra coarser levels:

* ``extra_block="maxpool"``: ``"pool"`` = ``max_pool2d(p_last, kernel 1, stride 2)``
  (Faster/Mask R-CNN with FPN);
* ``extra_block="p6p7"``: ``p6 = conv3x3/2(p5)``, ``p7 = conv3x3/2(relu(p6))`` (RetinaNet v2,
  torchvision's ``LastLevelP6P7(out_channels, out_channels)``).

Parameter names are torchvision's (``inner_blocks.{i}.0.weight``, ``layer_blocks.{i}.0.weight``,
``extra_blocks.p6.weight``), so :func:`load_torchvision_fpn_state_dict` loads the state dict of
a ``torchvision.ops.FeaturePyramidNetwork`` directly, and with equal weights the outputs are equal.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BackboneWithFPN",
    "FeaturePyramidNetwork",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "load_torchvision_fpn_state_dict",
]


class LastLevelMaxPool(nn.Module):
    """One extra level ``"pool"``: the last output sub-sampled by 2 (``max_pool2d``, kernel 1)."""

    def forward(self, results: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        return [*results, F.max_pool2d(results[-1], 1, 2, 0)], [*names, "pool"]


class LastLevelP6P7(nn.Module):
    """Two extra levels from the last output: ``p6 = conv(p5)``, ``p7 = conv(relu(p6))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, results: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        p6 = self.p6(results[-1])
        p7 = self.p7(F.relu(p6))
        p6_name, p7_name = _next_level_name(names[-1], 1), _next_level_name(names[-1], 2)
        return [*results, p6, p7], [*names, p6_name, p7_name]


def _next_level_name(last_name: str, offset: int) -> str:
    match = re.fullmatch(r"p(\d+)", last_name)
    level = int(match.group(1)) if match else 5
    return f"p{level + offset}"


def _output_name(input_name: str) -> str:
    match = re.fullmatch(r"c(\d+)", input_name)
    return f"p{match.group(1)}" if match else input_name


def _conv_block(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    norm_layer: Callable[[int], nn.Module] | None,
) -> nn.Sequential:
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=kernel_size // 2,
        bias=norm_layer is None,
    )
    if norm_layer is None:
        return nn.Sequential(conv)
    return nn.Sequential(conv, norm_layer(out_channels))


class FeaturePyramidNetwork(nn.Module):
    """Top-down pathway with lateral connections over ``len(in_channels)`` backbone levels.

    Args:
        in_channels: channels of each input map, highest resolution first.
        out_channels: channels of every output map.
        extra_block: ``"maxpool"`` (adds ``"pool"``), ``"p6p7"`` (adds ``"p6"``, ``"p7"``) or
            ``None``.
        norm: optional norm layer constructor ``norm(channels)`` placed after every lateral and
            output conv (the convs then have no bias), as torchvision's ``norm_layer``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        *,
        extra_block: Literal["maxpool", "p6p7"] | None = "maxpool",
        norm: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        if not in_channels or any(channels <= 0 for channels in in_channels):
            raise ValueError(f"in_channels must be non-empty and positive, got {in_channels!r}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.inner_blocks = nn.ModuleList(
            _conv_block(channels, out_channels, kernel_size=1, norm_layer=norm)
            for channels in in_channels
        )
        self.layer_blocks = nn.ModuleList(
            _conv_block(out_channels, out_channels, kernel_size=3, norm_layer=norm)
            for _ in in_channels
        )
        self.extra_blocks = _make_extra_block(extra_block, out_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """``{"c2": (B, C2, H2, W2), ...}`` -> ``{"p2": (B, out, H2, W2), ..., "pool": ...}``."""
        names = list(features)
        maps = list(features.values())
        if len(maps) != len(self.inner_blocks):
            raise ValueError(
                f"features must have {len(self.inner_blocks)} maps (in_channels="
                f"{self.in_channels}), got {len(maps)}: {names}"
            )
        for name, feature, channels in zip(names, maps, self.in_channels, strict=True):
            if feature.dim() != 4 or feature.shape[1] != channels:
                raise ValueError(
                    f"features[{name!r}] must have shape (B, {channels}, H, W), "
                    f"got {tuple(feature.shape)}"
                )
        last_inner = self.inner_blocks[-1](maps[-1])  # (B, out, H_last, W_last)
        results = [self.layer_blocks[-1](last_inner)]
        for index in range(len(maps) - 2, -1, -1):
            lateral = self.inner_blocks[index](maps[index])  # (B, out, H_i, W_i)
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[index](last_inner))
        output_names = [_output_name(name) for name in names]
        if self.extra_blocks is not None:
            results, output_names = self.extra_blocks(results, output_names)
        return OrderedDict(zip(output_names, results, strict=True))


def _make_extra_block(extra_block: str | None, channels: int) -> nn.Module | None:
    if extra_block is None:
        return None
    if extra_block == "maxpool":
        return LastLevelMaxPool()
    if extra_block == "p6p7":
        return LastLevelP6P7(channels)
    raise ValueError(f"extra_block must be 'maxpool', 'p6p7' or None, got {extra_block!r}")


def load_torchvision_fpn_state_dict(
    fpn: FeaturePyramidNetwork, tv_state_dict: Mapping[str, Tensor]
) -> None:
    """Load the state dict of a ``torchvision.ops.FeaturePyramidNetwork`` into ``fpn``.

    The parameter names are identical, so this is a strict ``load_state_dict`` whose error
    names the missing and unexpected keys. torchvision's ``LastLevelP6P7`` must have been built
    with ``in_channels == out_channels`` (it then reads P5, as here).
    """
    own_keys = set(fpn.state_dict())
    missing = sorted(own_keys - set(tv_state_dict))
    unexpected = sorted(set(tv_state_dict) - own_keys)
    if missing or unexpected:
        raise ValueError(
            f"tv_state_dict does not match the FPN: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}"
        )
    fpn.load_state_dict(dict(tv_state_dict))


class BackboneWithFPN(nn.Module):
    """``backbone`` followed by ``fpn``: normalised ``(B, 3, H, W)`` -> ``OrderedDict`` of maps.

    ``out_channels`` (an int) is the FPN's; the backbone's ``out_channels`` (when it has one)
    must equal the FPN's ``in_channels``.
    """

    def __init__(self, backbone: nn.Module, fpn: FeaturePyramidNetwork):
        super().__init__()
        backbone_channels = getattr(backbone, "out_channels", None)
        if isinstance(backbone_channels, Mapping):
            backbone_channels = list(backbone_channels.values())
        if backbone_channels is not None and list(backbone_channels) != fpn.in_channels:
            raise ValueError(
                f"backbone.out_channels {list(backbone_channels)} must equal "
                f"fpn.in_channels {fpn.in_channels}"
            )
        self.backbone = backbone
        self.fpn = fpn
        self.out_channels: int = fpn.out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """``images (B, 3, H, W)`` -> ``{"p2": (B, out, H/4, W/4), ..., "pool": ...}``."""
        return self.fpn(self.backbone(images))
