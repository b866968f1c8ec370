"""Tests for structvision.models.fpn, against torchvision.ops.FeaturePyramidNetwork."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork as TVFeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from structvision.models.backbones import resnet_backbone, small_backbone
from structvision.models.fpn import (
    BackboneWithFPN,
    FeaturePyramidNetwork,
    load_torchvision_fpn_state_dict,
)

IN_CHANNELS = [8, 16, 24, 32]
# Feature maps of a 67 x 93 image at strides 4 .. 32 (ceil division): uneven sizes.
ODD_SIZES = [(17, 24), (9, 12), (5, 6), (3, 3)]


def _features(sizes, *, batch: int = 2) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(
        (f"c{level}", torch.randn(batch, channels, h, w))
        for level, channels, (h, w) in zip(range(2, 6), IN_CHANNELS, sizes, strict=True)
    )


def _randomise(module: nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)


@pytest.mark.parametrize("sizes", [ODD_SIZES, [(16, 16), (8, 8), (4, 4), (2, 2)]])
def test_maxpool_fpn_equals_torchvision(sizes) -> None:
    tv_fpn = TVFeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=LastLevelMaxPool()).eval()
    _randomise(tv_fpn)
    fpn = FeaturePyramidNetwork(IN_CHANNELS, 16, extra_block="maxpool").eval()
    load_torchvision_fpn_state_dict(fpn, tv_fpn.state_dict())
    features = _features(sizes)
    with torch.no_grad():
        expected, actual = tv_fpn(features), fpn(features)
    assert list(actual) == ["p2", "p3", "p4", "p5", "pool"]
    assert list(expected) == ["c2", "c3", "c4", "c5", "pool"]
    for (name, value), reference in zip(actual.items(), expected.values(), strict=True):
        assert value.shape == reference.shape, name
        assert torch.allclose(value, reference, atol=1e-6), name
    assert actual["pool"].shape[-2:] == ((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2)


def test_p6p7_fpn_equals_torchvision() -> None:
    tv_fpn = TVFeaturePyramidNetwork(IN_CHANNELS[1:], 16, extra_blocks=LastLevelP6P7(16, 16)).eval()
    _randomise(tv_fpn)
    fpn = FeaturePyramidNetwork(IN_CHANNELS[1:], 16, extra_block="p6p7").eval()
    load_torchvision_fpn_state_dict(fpn, tv_fpn.state_dict())
    features = _features(ODD_SIZES)
    del features["c2"]
    with torch.no_grad():
        expected, actual = tv_fpn(features), fpn(features)
    assert list(actual) == ["p3", "p4", "p5", "p6", "p7"]
    for (name, value), reference in zip(actual.items(), expected.values(), strict=True):
        assert torch.allclose(value, reference, atol=1e-6), name


def test_normed_fpn_equals_torchvision_with_batch_norm() -> None:
    tv_fpn = TVFeaturePyramidNetwork(
        IN_CHANNELS, 8, extra_blocks=None, norm_layer=nn.BatchNorm2d
    ).eval()
    _randomise(tv_fpn)
    fpn = FeaturePyramidNetwork(IN_CHANNELS, 8, extra_block=None, norm=nn.BatchNorm2d).eval()
    load_torchvision_fpn_state_dict(fpn, tv_fpn.state_dict())
    assert all(m.bias is None for m in fpn.modules() if isinstance(m, nn.Conv2d))
    features = _features(ODD_SIZES)
    with torch.no_grad():
        expected, actual = tv_fpn(features), fpn(features)
    assert list(actual) == ["p2", "p3", "p4", "p5"]
    for value, reference in zip(actual.values(), expected.values(), strict=True):
        assert torch.allclose(value, reference, atol=1e-6)


def test_initialisation_matches_torchvision_scheme() -> None:
    fpn = FeaturePyramidNetwork([256], 256, extra_block="p6p7")
    for module in fpn.modules():
        if isinstance(module, nn.Conv2d):
            assert torch.all(module.bias == 0)
            fan_in = module.weight[0].numel()
            bound = (3.0 / fan_in) ** 0.5  # kaiming_uniform_(a=1): gain 1
            assert module.weight.abs().max() <= bound
            assert module.weight.abs().max() > 0.9 * bound


def test_top_down_reaches_every_level() -> None:
    # Changing only the coarsest input must change every output (the top-down path).
    torch.manual_seed(0)
    fpn = FeaturePyramidNetwork(IN_CHANNELS, 8, extra_block=None).eval()
    features = _features(ODD_SIZES, batch=1)
    changed = OrderedDict(features)
    changed["c5"] = features["c5"] + 1.0
    with torch.no_grad():
        before, after = fpn(features), fpn(changed)
    for name in before:
        assert not torch.allclose(before[name], after[name]), name


def test_fpn_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="extra_block"):
        FeaturePyramidNetwork(IN_CHANNELS, 8, extra_block="avgpool")
    with pytest.raises(ValueError, match="in_channels"):
        FeaturePyramidNetwork([], 8)
    fpn = FeaturePyramidNetwork(IN_CHANNELS, 8)
    features = _features(ODD_SIZES)
    with pytest.raises(ValueError, match="4 maps"):
        fpn(OrderedDict(list(features.items())[:3]))
    features["c3"] = torch.randn(2, 5, 9, 12)
    with pytest.raises(ValueError, match=r"features\['c3'\].*\(B, 16, H, W\).*\(2, 5, 9, 12\)"):
        fpn(features)
    with pytest.raises(ValueError, match="missing keys"):
        load_torchvision_fpn_state_dict(FeaturePyramidNetwork(IN_CHANNELS, 8), {})


@pytest.mark.parametrize("extra_block", ["maxpool", "p6p7"])
def test_resnet18_with_fpn_end_to_end(extra_block: str) -> None:
    backbone = resnet_backbone(18, norm="frozen")
    fpn = FeaturePyramidNetwork(list(backbone.out_channels.values()), 32, extra_block=extra_block)
    model = BackboneWithFPN(backbone, fpn).eval()
    assert model.out_channels == 32
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 67, 93))
    extra = ["pool"] if extra_block == "maxpool" else ["p6", "p7"]
    assert list(outputs) == ["p2", "p3", "p4", "p5", *extra]
    expected_sizes = [(17, 24), (9, 12), (5, 6), (3, 3), (2, 2)]
    expected_sizes += [(1, 1)] if extra_block == "p6p7" else []
    for output, size in zip(outputs.values(), expected_sizes, strict=True):
        assert tuple(output.shape) == (1, 32, *size)


def test_small_backbone_with_fpn_trains_end_to_end() -> None:
    torch.manual_seed(0)
    backbone = small_backbone(width=8)
    model = BackboneWithFPN(backbone, FeaturePyramidNetwork([8, 16, 32, 64], 16))
    outputs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape[-2:]) for o in outputs.values()] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        (1, 1),
    ]
    sum(output.square().mean() for output in outputs.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_backbone_with_fpn_rejects_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="out_channels"):
        BackboneWithFPN(small_backbone(width=8), FeaturePyramidNetwork([8, 16, 32], 16))
