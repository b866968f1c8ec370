"""RAFT (Teed & Deng, ECCV 2020): all-pairs correlation, recurrent updates, convex upsampling.

    frame 1, frame 2 -> feature encoder (shared)   -> f1, f2 (1/8 resolution)
                     -> all-pairs correlation f1 . f2 / sqrt(C), pooled into a 4-level pyramid
    frame 1          -> context encoder            -> hidden state (tanh) | context (relu)
    flow = 0; repeat N times:
        correlation features = pyramid sampled in a (2r + 1)^2 window around x + flow
        hidden = GRU(hidden, [context, motion encoder(flow, correlation features)])
        flow = flow + flow head(hidden)
        full-resolution flow = convex upsampling by a predicted 8x8x9 mask (large model) or
                               bilinear x8 (small model)

Training: the sequence loss ``sum_i gamma^(N - 1 - i) |flow_i - gt|_1`` (``gamma = 0.8``), the
L1 error averaged over the pixels with ground truth; no gradient flows through the sampling
positions (the paper's "stop gradient" on the coordinates).

The two configurations are torchvision's ``raft_large`` (5.3 M parameters, residual blocks,
instance-normalised feature encoder, batch-normalised context encoder, radius 4, two 1x5/5x1
GRUs, convex upsampling) and ``raft_small`` (1.0 M, bottleneck blocks, radius 3, one 3x3 GRU,
bilinear upsampling). Module names and the correlation window's channel order follow
torchvision's, so :func:`structvision.convert.from_torchvision` loads its weights directly; a
test holds the final flows within 1e-3 px of torchvision's. Unlike torchvision's, the model
takes frames in ``[0, 1]`` (it normalises to ``[-1, 1]`` itself), any size (padded to a multiple
of 8 and cropped back) and returns per-image prediction dicts in eval mode.
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
from structvision.ops.tracing import is_tracing

__all__ = [
    "RAFT",
    "RAFT_CONFIGS",
    "BottleneckBlock",
    "CorrelationPyramid",
    "FeatureEncoder",
    "ResidualBlock",
    "UpdateBlock",
    "raft",
    "raft_large",
    "raft_small",
    "sequence_loss",
]

#: The network's output stride: flow is estimated at 1/8 resolution.
STRIDE = 8


def _norm(kind: str | None, channels: int) -> nn.Module | None:
    if kind is None or kind == "none":
        return None
    if kind == "instance":
        # nn.InstanceNorm2d's arithmetic (no affine, no running statistics, no state) as a
        # group norm with one group per channel: on the CPU that kernel is several times
        # faster in both directions than F.instance_norm, which runs batch norm on a copy
        return nn.GroupNorm(channels, channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be 'instance', 'batch' or 'none', got {kind!r}")


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    norm: str | None = None,
    activation: bool = True,
) -> nn.Sequential:
    """``conv (bias) [-> norm] [-> ReLU]`` as a ``Sequential`` (indices 0, 1, 2 like
    torchvision's ``Conv2dNormActivation``, so state-dict keys agree)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2)
    ]
    normalisation = _norm(norm, out_channels)
    if normalisation is not None:
        layers.append(normalisation)
    if activation:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-ReLU layers plus the (projected, when strided) input, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str | None, stride: int = 1):
        super().__init__()
        self.convnormrelu1 = conv_norm_act(in_channels, out_channels, 3, stride=stride, norm=norm)
        self.convnormrelu2 = conv_norm_act(out_channels, out_channels, 3, norm=norm)
        self.downsample = (
            nn.Identity()
            if stride == 1
            else conv_norm_act(
                in_channels, out_channels, 1, stride=stride, norm=norm, activation=False
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return (self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x))).relu_()


class BottleneckBlock(nn.Module):
    """1x1 (to a quarter of the channels), 3x3 (strided), 1x1 conv-norm-ReLU plus the input."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str | None, stride: int = 1):
        super().__init__()
        inner = out_channels // 4
        self.convnormrelu1 = conv_norm_act(in_channels, inner, 1, norm=norm)
        self.convnormrelu2 = conv_norm_act(inner, inner, 3, stride=stride, norm=norm)
        self.convnormrelu3 = conv_norm_act(inner, out_channels, 1, norm=norm)
        self.downsample = (
            nn.Identity()
            if stride == 1
            else conv_norm_act(
                in_channels, out_channels, 1, stride=stride, norm=norm, activation=False
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return (self.downsample(x) + y).relu_()


BLOCKS = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}


class FeatureEncoder(nn.Module):
    """7x7 stride-2 stem, three stages of two blocks (strides 1, 2, 2), a 1x1 projection:
    ``(B, 3, H, W) -> (B, layers[4], H / 8, W / 8)``. Used for features and for context."""

    def __init__(self, *, layers: Sequence[int], block: str, norm: str | None) -> None:
        super().__init__()
        if len(layers) != 5:
            raise ValueError(f"layers must hold 5 channel counts, got {layers}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        make = BLOCKS[block]
        self.convnormrelu = conv_norm_act(3, layers[0], 7, stride=2, norm=norm)
        stages = []
        for in_channels, out_channels, stride in zip(
            layers[:3], layers[1:4], (1, 2, 2), strict=True
        ):
            stages.append(
                nn.Sequential(
                    make(in_channels, out_channels, norm=norm, stride=stride),
                    make(out_channels, out_channels, norm=norm, stride=1),
                )
            )
        self.layer1, self.layer2, self.layer3 = stages
        self.conv = nn.Conv2d(layers[3], layers[4], kernel_size=1)
        self.out_channels = layers[4]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class CorrelationPyramid(nn.Module):
    """All-pairs correlation and its lookup (no parameters).

    :meth:`build`: ``C(i, j) = <f1_i, f2_j> / sqrt(D)`` for every pixel ``i`` of frame 1 and
    ``j`` of frame 2, as ``(B * h * w, 1, h, w)`` in float32 (also under autocast), then ``num_levels - 1`` times 2x2 average
    pooling over frame 2's dimensions. :meth:`lookup`: for each pixel of frame 1, the level-``l``
    volume sampled bilinearly at ``(x + u, y + v) / 2^l + (dx, dy)`` for the ``(2r + 1)^2``
    integer offsets ``|dx|, |dy| <= r``; channel ``level * (2r + 1)^2 + a * (2r + 1) + b`` holds
    offset ``(dx, dy) = (a - r, b - r)`` (torchvision's order).
    """

    def __init__(self, *, num_levels: int = 4, radius: int = 4) -> None:
        super().__init__()
        if num_levels < 1 or radius < 0:
            raise ValueError(f"need num_levels >= 1 and radius >= 0, got {num_levels}, {radius}")
        self.num_levels = num_levels
        self.radius = radius
        self.out_channels = num_levels * (2 * radius + 1) ** 2

    def build(self, features_1: Tensor, features_2: Tensor) -> list[Tensor]:
        _, channels, height, width = features_1.shape
        smallest = 2 ** (self.num_levels - 1)
        if min(height, width) < 2 * smallest:
            raise ValueError(
                f"feature maps of {height}x{width} are too small for a {self.num_levels}-level "
                f"correlation pyramid (at least {2 * smallest} per side, i.e. frames of "
                f"{2 * smallest * STRIDE} pixels)"
            )
        # in float32 even under mixed precision (as RAFT's reference code does): the matching
        # costs are what the lookup interpolates between
        with torch.autocast(features_1.device.type, enabled=False):
            first = features_1.float().flatten(2).transpose(1, 2)
            volume = torch.bmm(first, features_2.float().flatten(2))
        volume = (volume / torch.sqrt(torch.tensor(float(channels)))).view(-1, 1, height, width)
        pyramid = [volume]
        for _ in range(self.num_levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], kernel_size=2, stride=2))
        return pyramid

    def lookup(self, pyramid: list[Tensor], coords: Tensor) -> Tensor:
        """``coords (B, 2, h, w)`` positions in frame 2 (pixels of the 1/8 grid) ->
        ``(B, out_channels, h, w)`` correlation features."""
        batch, _, height, width = coords.shape
        rows = self.lookup_rows(pyramid, coords).view(batch, height, width, self.out_channels)
        return rows.permute(0, 3, 1, 2).contiguous()

    def lookup_rows(
        self,
        pyramid: list[Tensor],
        coords: Tensor,
        grids: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """:meth:`lookup` as ``(B * h * w, out_channels)``, a row per pixel (pixels in
        ``(batch, row, column)`` order): the layout the lookup produces, which a 1x1
        convolution reads as one matrix product without a transposed copy. ``grids``:
        :meth:`grid_terms` of ``pyramid``, made once for all refinement steps."""
        batch, _, height, width = coords.shape
        side = 2 * self.radius + 1
        centres = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
        if is_tracing():  # sizes stay symbols of the traced graph: no tensor made of them
            offsets = self._offsets(coords)
            grids = None
        elif grids is None:
            grids = self.grid_terms(pyramid, coords)
        sampled = []
        for level, volume in enumerate(pyramid):
            if grids is None:
                # grid_sample's coordinates 2 p / (size - 1) - 1 (x, y) of the points
                # p = centre / 2^level + offset
                size_y, size_x = volume.shape[-2:]
                points = centres / 2**level + offsets  # (N, s, s, 2) as (x, y)
                grid = torch.stack(
                    [
                        2 * points[..., 0] / (size_x - 1) - 1,
                        2 * points[..., 1] / max(size_y - 1, 1) - 1,
                    ],
                    dim=-1,
                )
            else:
                grid = torch.addcmul(grids[level][0], centres, grids[level][1])
            values = F.grid_sample(volume, grid, mode="bilinear", align_corners=True)
            sampled.append(values.view(batch * height * width, side * side))
        return torch.cat(sampled, dim=-1)

    def grid_terms(self, pyramid: list[Tensor], coords: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per level, ``(shift (s, s, 2), scale (2,))`` with which ``shift + centre * scale``
        is grid_sample's ``2 p / (size - 1) - 1`` of the window's points ``p = centre /
        2^level + offset``: one multiply-add per level and step."""
        offsets = self._offsets(coords)
        terms = []
        for level, volume in enumerate(pyramid):
            size_y, size_x = volume.shape[-2:]
            extent = coords.new_tensor([max(size_x - 1, 1), max(size_y - 1, 1)])
            terms.append((2 * offsets / extent - 1, 2 / (2**level * extent)))
        return terms

    def _offsets(self, coords: Tensor) -> Tensor:
        """The window's ``(s, s, 2)`` integer offsets ``(x, y)`` in torchvision's order."""
        side = 2 * self.radius + 1
        steps = torch.linspace(-self.radius, self.radius, side, device=coords.device)
        offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1)
        return offsets.to(coords.dtype)


class MotionEncoder(nn.Module):
    """Correlation features and the current flow -> motion features (the flow appended)."""

    def __init__(
        self,
        *,
        corr_channels: int,
        corr_layers: Sequence[int],
        flow_layers: Sequence[int],
        out_channels: int,
    ) -> None:
        super().__init__()
        if len(corr_layers) not in (1, 2) or len(flow_layers) != 2:
            raise ValueError(
                f"need 1-2 corr_layers and 2 flow_layers, got {corr_layers}, {flow_layers}"
            )
        self.convcorr1 = conv_norm_act(corr_channels, corr_layers[0], 1)
        self.convcorr2 = (
            conv_norm_act(corr_layers[0], corr_layers[1], 3)
            if len(corr_layers) == 2
            else nn.Identity()
        )
        self.convflow1 = conv_norm_act(2, flow_layers[0], 7)
        self.convflow2 = conv_norm_act(flow_layers[0], flow_layers[1], 3)
        self.conv = conv_norm_act(corr_layers[-1] + flow_layers[-1], out_channels - 2, 3)
        self.out_channels = out_channels

    def forward(self, flow: Tensor, correlation: Tensor) -> Tensor:
        corr = self.convcorr2(self.convcorr1(correlation))
        motion = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([corr, motion], dim=1)), flow], dim=1)

    def features(self, flow_layer: Tensor, correlation_rows: Tensor) -> Tensor:
        """:meth:`forward` without the flow appended (its first ``out_channels - 2``
        channels), from :meth:`CorrelationPyramid.lookup_rows` and the first flow layer's
        convolution (``flow_layer``, bias included, before its ReLU; :meth:`UpdateBlock.step`
        computes it with the GRU's share of the flow). The first correlation layer (1x1) is
        one matrix product over the rows: far faster on a CPU than the convolution kernel at
        this shape, and the same sums."""
        batch, _, height, width = flow_layer.shape
        first = self.convcorr1[0]
        corr = torch.addmm(first.bias, correlation_rows, first.weight.flatten(1).t())
        corr = corr.view(batch, height, width, -1).permute(0, 3, 1, 2)
        corr = self.convcorr2(self.convcorr1[1:](corr))
        motion = flow_layer  # a view of UpdateBlock.step's product: no in-place ReLU on it
        for layer in self.convflow1[1:]:
            motion = F.relu(motion) if isinstance(layer, nn.ReLU) else layer(motion)
        motion = self.convflow2(motion)
        return self.conv(torch.cat([corr, motion], dim=1))


class ConvGRU(nn.Module):
    """A convolutional GRU cell: ``z, r`` gates and candidate ``q`` from ``[h, x]``."""

    def __init__(self, *, input_size: int, hidden_size: int, kernel_size: Any, padding: Any):
        super().__init__()
        channels = hidden_size + input_size
        self.convz = nn.Conv2d(channels, hidden_size, kernel_size, padding=padding)
        self.convr = nn.Conv2d(channels, hidden_size, kernel_size, padding=padding)
        self.convq = nn.Conv2d(channels, hidden_size, kernel_size, padding=padding)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat([h, x], dim=1)
        z, r = torch.sigmoid(self.convz(hx)), torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q

    def prepare(self, context: Tensor) -> tuple[Tensor, ...]:
        """What stays the same over the refinement steps when ``x = [context, motion]``: the
        context's share of the ``z``, ``r`` and ``q`` pre-activations (biases included, one
        convolution), and the weights over ``h`` (``z`` and ``r`` as one convolution) and
        over the motion features (``z``, ``r`` and ``q`` as one; the flow's two channels
        apart, see :meth:`step`). The convolutions are linear in their input channels, so
        :meth:`step` equals :meth:`forward` up to rounding, does a quarter less work for
        RAFT-small and never concatenates its inputs."""
        hidden, channels = self.convz.out_channels, context.shape[1]
        weight = torch.cat([self.convz.weight, self.convr.weight, self.convq.weight])
        bias = torch.cat([self.convz.bias, self.convr.bias, self.convq.bias])
        # input channels: [h (hidden), context (channels), motion features, flow (2)]
        of_context = slice(hidden, hidden + channels)
        context_share = F.conv2d(context, weight[:, of_context], bias, padding=self.convz.padding)
        # contiguous once here: a sliced weight would be copied by every convolution
        weight_zr_h = weight[: 2 * hidden, :hidden].contiguous()
        weight_q_h = weight[2 * hidden :, :hidden].contiguous()
        weight_features = weight[:, hidden + channels : -2].contiguous()
        weight_flow = weight[:, -2:]  # (3 hidden, 2, kh, kw)
        return context_share, weight_zr_h, weight_q_h, weight_features, weight_flow

    def step(
        self, h: Tensor, features: Tensor, flow_share: Tensor, prepared: tuple[Tensor, ...]
    ) -> Tensor:
        """:meth:`forward` with ``x = [context, features, flow]`` (the motion features split as
        :meth:`MotionEncoder.features` gives them), the flow's share of the ``z``, ``r``,
        ``q`` pre-activations already computed (``flow_share``, the convolution of the flow
        with ``prepared[-1]``; see :meth:`UpdateBlock.step`) and ``prepared`` from
        :meth:`prepare`."""
        context_share, weight_zr_h, weight_q_h, weight_features, _ = prepared
        hidden = h.shape[1]
        shares = F.conv2d(features, weight_features, padding=self.convz.padding)
        shares = shares.add_(flow_share).add_(context_share)
        gates = F.conv2d(h, weight_zr_h, padding=self.convz.padding).add_(shares[:, : 2 * hidden])
        z, r = gates.sigmoid_().chunk(2, dim=1)
        candidate = F.conv2d(r * h, weight_q_h, padding=self.convq.padding)
        # tanh(x) = 2 sigmoid(2 x) - 1: PyTorch's CPU sigmoid kernel is several times faster
        q = torch.sigmoid(candidate.add_(shares[:, 2 * hidden :]).mul_(2)).mul(2).sub_(1)
        return torch.lerp(h, q, z)


class RecurrentBlock(nn.Module):
    """One or two GRU cells in sequence (the large model: a 1x5 then a 5x1 cell)."""

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        kernel_sizes: Sequence[Any],
        paddings: Sequence[Any],
    ) -> None:
        super().__init__()
        if len(kernel_sizes) not in (1, 2) or len(kernel_sizes) != len(paddings):
            raise ValueError(f"need 1-2 kernel sizes with paddings, got {kernel_sizes}, {paddings}")
        cells = [
            ConvGRU(input_size=input_size, hidden_size=hidden_size, kernel_size=k, padding=p)
            for k, p in zip(kernel_sizes, paddings, strict=True)
        ]
        self.convgru1 = cells[0]
        self.convgru2 = cells[1] if len(cells) == 2 else None
        self.hidden_size = hidden_size

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        h = self.convgru1(h, x)
        return h if self.convgru2 is None else self.convgru2(h, x)

    def cells(self) -> list[ConvGRU]:
        return [self.convgru1] if self.convgru2 is None else [self.convgru1, self.convgru2]


class FlowHead(nn.Module):
    """Hidden state -> flow update: conv 3x3, ReLU, conv 3x3 to 2 channels."""

    def __init__(self, *, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.relu(self.conv1(x))
        if is_tracing():
            return self.conv2(hidden)
        return narrow_conv(hidden, self.conv2.weight, self.conv2.bias, self.conv2.padding)


def narrow_conv(x: Tensor, weight: Tensor, bias: Tensor | None, padding: Any) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, 'same' padding) for a layer of
    very few output channels (RAFT's flow: 2), where the CPU convolution kernel is slow: each
    output channel's per-tap responses as one matrix product, ``(C_out * kh * kw, C_in) @ (C_in,
    H * W)``, then summed over the taps' shifts by ``F.fold`` (the same sums, in another
    order). ``F.fold`` scatters a column's taps forwards where a convolution gathers them, so
    the taps go in flipped."""
    channels, height, width = x.shape[1:]
    kernel_h, kernel_w = weight.shape[-2:]
    taps = weight.flip(-2, -1).permute(0, 2, 3, 1).reshape(-1, channels)  # (C_out kh kw, C_in)
    responses = torch.matmul(taps, x.flatten(2))  # (B, C_out kh kw, H W)
    out = F.fold(responses, (height, width), (kernel_h, kernel_w), padding=padding)
    return out if bias is None else out + bias[:, None, None]


class UpdateBlock(nn.Module):
    """Motion encoder, recurrent block and flow head: one refinement step."""

    def __init__(
        self, *, motion_encoder: MotionEncoder, recurrent_block: RecurrentBlock, flow_head: FlowHead
    ):
        super().__init__()
        self.motion_encoder = motion_encoder
        self.recurrent_block = recurrent_block
        self.flow_head = flow_head
        self.hidden_state_size = recurrent_block.hidden_size

    def forward(self, hidden: Tensor, context: Tensor, correlation: Tensor, flow: Tensor):
        motion = self.motion_encoder(flow, correlation)
        hidden = self.recurrent_block(hidden, torch.cat([context, motion], dim=1))
        return hidden, self.flow_head(hidden)

    def prepare(self, context: Tensor) -> tuple:
        """What :meth:`step` reuses, computed once per frame pair: the context's part of every
        GRU cell (:meth:`ConvGRU.prepare`), and the weights of every layer that reads the
        flow (the motion encoder's first flow convolution and each cell's share of the
        flow), stacked over the largest of their windows as one ``(C, 2 * kh * kw)`` matrix
        with its bias (smaller windows zero-padded around their centre), and that window."""
        cells = [cell.prepare(context) for cell in self.recurrent_block.cells()]
        first = self.motion_encoder.convflow1[0]
        flow_weights = [first.weight] + [terms[-1] for terms in cells]  # (C_i, 2, kh_i, kw_i)
        window = [max(w.shape[axis] for w in flow_weights) for axis in (-2, -1)]
        padded = []
        for weight in flow_weights:  # every layer pads 'same' (odd kernels), so centring holds
            pad_h, pad_w = window[0] - weight.shape[-2], window[1] - weight.shape[-1]
            padded.append(F.pad(weight, (pad_w // 2, pad_w // 2, pad_h // 2, pad_h // 2)))
        bias = torch.cat([first.bias, first.bias.new_zeros(sum(len(t[-1]) for t in cells))])
        return cells, torch.cat(padded).flatten(1), bias[:, None], tuple(window)

    def step(self, hidden: Tensor, prepared: tuple, correlation_rows: Tensor, flow: Tensor):
        """:meth:`forward` with the context already folded in by :meth:`prepare` and the
        correlation as :meth:`CorrelationPyramid.lookup_rows` gives it. Every layer that
        reads the flow, whose two channels make a slow CPU convolution, is one product of
        :meth:`prepare`'s matrix with the flow's unfolded neighbourhoods (the same sums)."""
        cells, flow_weight, flow_bias, window = prepared
        batch, _, height, width = flow.shape
        first = self.motion_encoder.convflow1[0]
        padding = ((window[0] - 1) // 2, (window[1] - 1) // 2)
        columns = F.unfold(flow, window, padding=padding)  # (B, 2 kh kw, L)
        products = torch.matmul(flow_weight, columns).add_(flow_bias)  # (B, C, L)
        products = products.view(batch, -1, height, width)
        flow_layer, *flow_shares = products.split(
            [first.out_channels, *(terms[-1].shape[0] for terms in cells)], dim=1
        )
        features = self.motion_encoder.features(flow_layer, correlation_rows)
        for cell, terms, flow_share in zip(
            self.recurrent_block.cells(), cells, flow_shares, strict=True
        ):
            hidden = cell.step(hidden, features, flow_share, terms)
        return hidden, self.flow_head(hidden)


class MaskPredictor(nn.Module):
    """Hidden state -> the ``8 * 8 * 9`` convex-upsampling weights (scaled by 0.25, as the
    reference code does to damp this branch's gradients)."""

    def __init__(self, *, in_channels: int, hidden_size: int = 256, multiplier: float = 0.25):
        super().__init__()
        self.convrelu = conv_norm_act(in_channels, hidden_size, 3)
        self.conv = nn.Conv2d(hidden_size, STRIDE * STRIDE * 9, 1)
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        return self.multiplier * self.conv(self.convrelu(x))


def upsample_flow(flow: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(B, 2, h, w)`` flow at 1/8 -> ``(B, 2, 8h, 8w)`` in full-resolution pixels.

    With ``mask (B, 576, h, w)``: each fine pixel is a convex combination (softmax over 9
    weights) of the 3x3 coarse neighbours of its coarse pixel. Without: bilinear
    (``align_corners=True``)."""
    batch, _, height, width = flow.shape
    if mask is None:
        size = (STRIDE * height, STRIDE * width)
        return STRIDE * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
    weights = torch.softmax(mask.view(batch, 1, 9, STRIDE, STRIDE, height, width), dim=2)
    neighbours = F.unfold(STRIDE * flow, kernel_size=3, padding=1)
    neighbours = neighbours.view(batch, 2, 9, 1, 1, height, width)
    fine = (weights * neighbours).sum(dim=2)  # (B, 2, 8, 8, h, w)
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(batch, 2, STRIDE * height, STRIDE * width)


def coords_grid(batch: int, height: int, width: int, device: torch.device) -> Tensor:
    """``(B, 2, h, w)`` pixel coordinates ``(x, y)`` of a grid."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([xs, ys]).float()[None].expand(batch, -1, -1, -1).clone()


def sequence_loss(
    flows: Sequence[Tensor], target: Tensor, known: Tensor, *, gamma: float = 0.8
) -> Tensor:
    """``sum_i gamma^(N - 1 - i) * mean over known pixels of |flows[i] - target|_1``.

    ``flows``: N predictions ``(B, 2, H, W)``, ``target (B, 2, H, W)``, ``known (B, H, W)``.
    """
    total = target.new_zeros(())
    count = known.sum().clamp(min=1)
    for index, flow in enumerate(flows):
        weight = gamma ** (len(flows) - 1 - index)
        error = (flow - target).abs().sum(dim=1)  # (B, H, W): L1 over both components
        total = total + weight * (error * known).sum() / (2 * count)
    return total


class RAFT(nn.Module):
    """RAFT (module docstring).

    Args:
        feature_encoder: frames -> features at 1/8 (shared by both frames).
        context_encoder: frame 1 -> ``hidden + context`` channels at 1/8.
        correlation: the :class:`CorrelationPyramid`.
        update_block: one refinement step (:class:`UpdateBlock`).
        mask_predictor: convex-upsampling weights; ``None`` upsamples bilinearly.
        num_updates: refinement steps in eval mode (torchvision's default: 12).
        train_updates: refinement steps in training.
        gamma: weight decay of the sequence loss over the steps.
        max_flow: ground truth longer than this many pixels is left out of the loss.
    """

    def __init__(
        self,
        *,
        feature_encoder: nn.Module,
        context_encoder: nn.Module,
        correlation: CorrelationPyramid,
        update_block: UpdateBlock,
        mask_predictor: nn.Module | None = None,
        num_updates: int = 12,
        train_updates: int = 12,
        gamma: float = 0.8,
        max_flow: float = 400.0,
    ) -> None:
        super().__init__()
        self.feature_encoder = feature_encoder
        self.context_encoder = context_encoder
        self.corr_block = correlation
        self.update_block = update_block
        self.mask_predictor = mask_predictor
        self.num_updates = num_updates
        self.train_updates = train_updates
        self.gamma = gamma
        self.max_flow = max_flow

    def flows(
        self,
        image1: Tensor,
        image2: Tensor,
        num_updates: int | None = None,
        *,
        every_step: bool = True,
    ) -> list[Tensor]:
        """Every step's flow ``(B, 2, H, W)`` for frames in ``[0, 1]`` of any size (only the
        last one without ``every_step``: the upsampling of the others is skipped)."""
        steps = num_updates or (self.train_updates if self.training else self.num_updates)
        first, padding = pad_to_multiple(2 * image1 - 1, STRIDE)
        second, _ = pad_to_multiple(2 * image2 - 1, STRIDE)
        features = self.feature_encoder(torch.cat([first, second]))
        # slices, not chunk(2) (or len()): the batch size stays symbolic when exported
        pairs = first.shape[0]
        features_1, features_2 = features[:pairs], features[pairs:]
        pyramid = self.corr_block.build(features_1, features_2)
        context = self.context_encoder(first)
        hidden_size = self.update_block.hidden_state_size
        if context.shape[1] <= hidden_size:
            raise ValueError(
                f"the context encoder gives {context.shape[1]} channels; it needs more than the "
                f"hidden state's {hidden_size}"
            )
        hidden, context = context.split([hidden_size, context.shape[1] - hidden_size], dim=1)
        hidden, context = torch.tanh(hidden), F.relu(context)
        batch, _, height, width = features_1.shape
        start = coords_grid(batch, height, width, features_1.device)
        coords = start.clone()
        prepared = self.update_block.prepare(context)
        grids = None if is_tracing() else self.corr_block.grid_terms(pyramid, coords)
        flows = []
        for step in range(steps):
            coords = coords.detach()
            correlation = self.corr_block.lookup_rows(pyramid, coords, grids)
            hidden, delta = self.update_block.step(hidden, prepared, correlation, coords - start)
            coords = coords + delta
            if every_step or step == steps - 1:
                mask = None if self.mask_predictor is None else self.mask_predictor(hidden)
                flows.append(crop_padding(upsample_flow(coords - start, mask), padding))
        return flows

    def forward(self, image1: Any, image2: Any = None, targets: Any = None):
        """Train mode: ``{"loss_flow"}``; eval mode: ``[{"flow": (2, H, W)}]`` per pair.

        Takes ``(image1, image2[, targets])`` or ``(pairs[, targets])`` (see
        :mod:`structvision.models.flow.common`)."""
        first, second, targets = split_inputs(image1, image2, targets)
        flows = self.flows(first, second, every_step=self.training)
        if not self.training:
            return [{"flow": flow} for flow in flows[-1]]
        target, known = flow_targets(targets, first.shape, first.device)
        known = known & (target.norm(dim=1) < self.max_flow)
        return {"loss_flow": sequence_loss(flows, target, known, gamma=self.gamma)}


#: torchvision's two configurations (``raft_large``, ``raft_small``).
RAFT_CONFIGS: dict[str, dict[str, Any]] = {
    "large": {
        "feature_layers": (64, 64, 96, 128, 256),
        "feature_block": "residual",
        "feature_norm": "instance",
        "context_layers": (64, 64, 96, 128, 256),
        "context_block": "residual",
        "context_norm": "batch",
        "num_levels": 4,
        "radius": 4,
        "corr_layers": (256, 192),
        "flow_layers": (128, 64),
        "motion_channels": 128,
        "hidden_size": 128,
        "gru_kernels": ((1, 5), (5, 1)),
        "gru_paddings": ((0, 2), (2, 0)),
        "flow_head_hidden": 256,
        "convex_upsampling": True,
    },
    "small": {
        "feature_layers": (32, 32, 64, 96, 128),
        "feature_block": "bottleneck",
        "feature_norm": "instance",
        "context_layers": (32, 32, 64, 96, 160),
        "context_block": "bottleneck",
        "context_norm": "none",
        "num_levels": 4,
        "radius": 3,
        "corr_layers": (96,),
        "flow_layers": (64, 32),
        "motion_channels": 82,
        "hidden_size": 96,
        "gru_kernels": (3,),
        "gru_paddings": (1,),
        "flow_head_hidden": 128,
        "convex_upsampling": False,
    },
}


def raft(
    *,
    feature_layers: Sequence[int],
    feature_block: str,
    feature_norm: str,
    context_layers: Sequence[int],
    context_block: str,
    context_norm: str,
    num_levels: int,
    radius: int,
    corr_layers: Sequence[int],
    flow_layers: Sequence[int],
    motion_channels: int,
    hidden_size: int,
    gru_kernels: Sequence[Any],
    gru_paddings: Sequence[Any],
    flow_head_hidden: int,
    convex_upsampling: bool,
    **settings: Any,
) -> RAFT:
    """A RAFT from its hyper-parameters (:data:`RAFT_CONFIGS`); ``settings`` go to :class:`RAFT`."""
    correlation = CorrelationPyramid(num_levels=num_levels, radius=radius)
    motion = MotionEncoder(
        corr_channels=correlation.out_channels,
        corr_layers=corr_layers,
        flow_layers=flow_layers,
        out_channels=motion_channels,
    )
    context_channels = context_layers[-1] - hidden_size
    update = UpdateBlock(
        motion_encoder=motion,
        recurrent_block=RecurrentBlock(
            input_size=motion_channels + context_channels,
            hidden_size=hidden_size,
            kernel_sizes=gru_kernels,
            paddings=gru_paddings,
        ),
        flow_head=FlowHead(in_channels=hidden_size, hidden_size=flow_head_hidden),
    )
    return RAFT(
        feature_encoder=FeatureEncoder(
            layers=feature_layers, block=feature_block, norm=feature_norm
        ),
        context_encoder=FeatureEncoder(
            layers=context_layers, block=context_block, norm=context_norm
        ),
        correlation=correlation,
        update_block=update,
        mask_predictor=MaskPredictor(in_channels=hidden_size) if convex_upsampling else None,
        **settings,
    )


def raft_large(**settings: Any) -> RAFT:
    """torchvision's ``raft_large`` configuration (5.3 M parameters)."""
    return raft(**RAFT_CONFIGS["large"], **settings)


def raft_small(**settings: Any) -> RAFT:
    """torchvision's ``raft_small`` configuration (1.0 M parameters)."""
    return raft(**RAFT_CONFIGS["small"], **settings)
