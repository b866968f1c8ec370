"""FlowNetS (Dosovitskiy et al., ICCV 2015): an encoder-decoder on the stacked frames.

    frames (6 channels) -> 10 convolutions, 6 of stride 2 (LeakyReLU 0.1)   -> 1/64
    decoder, 1/32 .. 1/4: up-convolution of the previous level, concatenated with the encoder's
        map at that stride and the previous level's flow (upsampled by a 4x4 up-convolution),
        then a 3x3 convolution predicts the flow at that level
    eval: the 1/4 flow upsampled bilinearly to the input size

Channels at ``width = 64`` are the paper's: ``conv1 64 (7x7), conv2 128 (5x5), conv3 256 (5x5),
conv3_1 256, conv4 512, conv4_1 512, conv5 512, conv5_1 512, conv6 1024, conv6_1 1024``;
up-convolutions ``512, 256, 128, 64``. ``width`` scales them all (the recipe's CPU default is
smaller; see the recipe). ``batch_norm=True`` is FlowNetS-BN.

Flow is predicted in pixels divided by ``flow_scale`` (20, as the reference implementations do
to keep the regression targets near unit size) at every level, and multiplied back on output.

Loss: the multi-scale end-point error ``sum_l w_l * EPE(flow_l, downsampled target)`` with the
paper's weights ``w = (0.005, 0.01, 0.02, 0.08, 0.32)`` for levels 1/4 .. 1/64. The target is
average-pooled to each level over the pixels with ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.flow.common import (
    crop_padding,
    flow_targets,
    pad_to_multiple,
    split_inputs,
)

__all__ = ["FLOWNET_LOSS_WEIGHTS", "FlowNetS", "flownet_s", "multiscale_epe"]

#: Loss weights of the levels at strides 4, 8, 16, 32, 64 (the paper's).
FLOWNET_LOSS_WEIGHTS = (0.005, 0.01, 0.02, 0.08, 0.32)

#: The encoder: (name, output channels at width 64, kernel, stride).
_ENCODER = (
    ("conv1", 64, 7, 2),
    ("conv2", 128, 5, 2),
    ("conv3", 256, 5, 2),
    ("conv3_1", 256, 3, 1),
    ("conv4", 512, 3, 2),
    ("conv4_1", 512, 3, 1),
    ("conv5", 512, 3, 2),
    ("conv5_1", 512, 3, 1),
    ("conv6", 1024, 3, 2),
    ("conv6_1", 1024, 3, 1),
)

#: The network's total stride: inputs are padded to multiples of it.
STRIDE = 64


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, batch_norm: bool):
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


def _upconv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.1, inplace=True),
    )


def _downsample_target(
    target: Tensor, known: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Average of the known target pixels in each cell of a ``size`` grid, and which cells
    have any."""
    weight = F.adaptive_avg_pool2d(known[:, None].float(), size)
    flow = F.adaptive_avg_pool2d(target * known[:, None], size)
    return flow / weight.clamp(min=1e-6), weight[:, 0] > 0


def multiscale_epe(
    flows: Sequence[Tensor],
    target: Tensor,
    known: Tensor,
    *,
    weights: Sequence[float] = FLOWNET_LOSS_WEIGHTS,
) -> Tensor:
    """``sum_l weights[l] * mean EPE(flows[l], target pooled to its size)`` over known cells.

    ``flows``: predictions ``(B, 2, h_l, w_l)`` finest first, in the units of ``target
    (B, 2, H, W)``; ``known (B, H, W)`` marks the pixels with ground truth.
    """
    if len(flows) != len(weights):
        raise ValueError(f"{len(flows)} flow levels but {len(weights)} weights")
    total = target.new_zeros(())
    for flow, weight in zip(flows, weights, strict=True):
        pooled, valid = _downsample_target(target, known, tuple(flow.shape[-2:]))
        error = (flow - pooled).norm(dim=1)
        total = total + weight * (error * valid).sum() / valid.sum().clamp(min=1)
    return total


class FlowNetS(nn.Module):
    """FlowNetS (module docstring).

    Args:
        width: channels of ``conv1``; every layer scales with it (64: the paper's network).
        batch_norm: FlowNetS-BN (batch norm after every encoder convolution).
        flow_scale: the network regresses ``flow / flow_scale``.
        loss_weights: multi-scale loss weights, finest (1/4) first.
    """

    def __init__(
        self,
        *,
        width: int = 64,
        batch_norm: bool = False,
        flow_scale: float = 20.0,
        loss_weights: Sequence[float] = FLOWNET_LOSS_WEIGHTS,
    ) -> None:
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number >= 2, got {width}")
        scale = width / 64

        def channels(count: int) -> int:
            return max(2, round(count * scale))

        self.encoder = nn.ModuleDict()
        in_channels = 6
        for name, out, kernel, stride in _ENCODER:
            self.encoder[name] = _conv(in_channels, channels(out), kernel, stride, batch_norm)
            in_channels = channels(out)
        # decoder levels from 1/32 to 1/4: skip features of conv5_1, conv4_1, conv3_1, conv2
        skips = [channels(512), channels(512), channels(256), channels(128)]
        ups = [channels(512), channels(256), channels(128), channels(64)]
        self.predict_flow6 = nn.Conv2d(in_channels, 2, 3, 1, 1)
        self.deconvs = nn.ModuleList()
        self.flow_ups = nn.ModuleList()
        self.predictors = nn.ModuleList()
        for skip, up in zip(skips, ups, strict=True):
            self.deconvs.append(_upconv(in_channels, up))
            self.flow_ups.append(nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False))
            in_channels = skip + up + 2
            self.predictors.append(nn.Conv2d(in_channels, 2, 3, 1, 1))
        self.flow_scale = float(flow_scale)
        self.loss_weights = tuple(loss_weights)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, a=0.1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def pyramid(self, image1: Tensor, image2: Tensor) -> tuple[list[Tensor], tuple[int, ...]]:
        """Flows (in pixels / ``flow_scale``) at strides 4, 8, 16, 32, 64 of the padded frames,
        finest first, and the padding."""
        frames = torch.cat([image1, image2], dim=1) - 0.5
        x, padding = pad_to_multiple(frames, STRIDE)
        features = {}
        for name, layer in self.encoder.items():
            x = layer(x)
            features[name] = x
        flow = self.predict_flow6(x)
        flows = [flow]
        for skip_name, deconv, flow_up, predictor in zip(
            ("conv5_1", "conv4_1", "conv3_1", "conv2"),
            self.deconvs,
            self.flow_ups,
            self.predictors,
            strict=True,
        ):
            x = torch.cat([features[skip_name], deconv(x), flow_up(flow)], dim=1)
            flow = predictor(x)
            flows.append(flow)
        return flows[::-1], padding

    def forward(self, image1: Any, image2: Any = None, targets: Any = None):
        """Train mode: ``{"loss_flow"}``; eval mode: ``[{"flow": (2, H, W)}]`` per pair
        (calling conventions of :mod:`structvision.models.flow.common`)."""
        first, second, targets = split_inputs(image1, image2, targets)
        flows, padding = self.pyramid(first, second)
        if self.training:
            target, known = flow_targets(targets, first.shape, first.device)
            target = F.pad(target, padding)  # the padding has no ground truth
            known = F.pad(known[:, None].float(), padding)[:, 0] > 0.5
            loss = multiscale_epe(flows, target / self.flow_scale, known, weights=self.loss_weights)
            return {"loss_flow": loss}
        full = F.interpolate(flows[0], scale_factor=4.0, mode="bilinear", align_corners=False)
        full = crop_padding(full * self.flow_scale, padding)
        return [{"flow": flow} for flow in full]


def flownet_s(**settings: Any) -> FlowNetS:
    """FlowNetS; ``settings`` go to :class:`FlowNetS` (``width=64`` is the paper's network)."""
    return FlowNetS(**settings)
