"""Tests for structvision.models.backbones."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from structvision.models.backbones import (
    FrozenBatchNorm2d,
    fold_frozen_batchnorm,
    resnet_backbone,
    small_backbone,
)

EXPECTED_CHANNELS = {
    18: {"c2": 64, "c3": 128, "c4": 256, "c5": 512},
    34: {"c2": 64, "c3": 128, "c4": 256, "c5": 512},
    50: {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048},
}
STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def _assert_feature_shapes(features, backbone, *, batch: int, height: int, width: int) -> None:
    assert list(features) == list(backbone.out_channels)
    for name, feature in features.items():
        stride = STRIDES[name]
        assert backbone.strides[name] == stride
        expected = (batch, backbone.out_channels[name], -(-height // stride), -(-width // stride))
        assert tuple(feature.shape) == expected, name


@pytest.mark.parametrize("norm", ["frozen", "batch", "group"])
def test_resnet18_output_names_strides_channels(norm: str) -> None:
    backbone = resnet_backbone(18, norm=norm).eval()
    assert backbone.out_channels == EXPECTED_CHANNELS[18]
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 96))
    _assert_feature_shapes(features, backbone, batch=2, height=64, width=96)


def test_resnet18_odd_input_size_gives_ceil_sizes() -> None:
    backbone = resnet_backbone(18, returned_layers=(2, 4)).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 67, 93))
    assert list(features) == ["c3", "c5"]
    _assert_feature_shapes(features, backbone, batch=1, height=67, width=93)


@pytest.mark.parametrize("depth", [34, 50])
def test_deeper_resnet_channels(depth: int) -> None:
    backbone = resnet_backbone(depth, returned_layers=(1, 2, 3, 4))
    assert backbone.out_channels == EXPECTED_CHANNELS[depth]
    assert backbone.strides == STRIDES


def test_resnet_features_equal_torchvision_intermediate_layers() -> None:
    torch.manual_seed(0)
    tv_resnet = torchvision.models.resnet18(
        weights=None, norm_layer=torchvision.ops.misc.FrozenBatchNorm2d
    ).eval()
    getter = torchvision.models._utils.IntermediateLayerGetter(
        tv_resnet, return_layers={"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
    )
    backbone = resnet_backbone(18, norm="frozen").eval()
    backbone.load_state_dict(
        {k: v for k, v in tv_resnet.state_dict().items() if not k.startswith("fc.")}
    )
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, actual = getter(images), backbone(images)
    assert list(actual) == list(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name])


def _trainable_prefixes(backbone: nn.Module) -> set[str]:
    return {name.split(".")[0] for name, p in backbone.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("trainable_layers", "expected"),
    [
        (0, set()),
        (3, {"layer2", "layer3", "layer4"}),
        (5, {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}),
    ],
)
def test_freezing_follows_torchvision_order(trainable_layers: int, expected: set[str]) -> None:
    backbone = resnet_backbone(18, norm="batch", trainable_layers=trainable_layers)
    assert _trainable_prefixes(backbone) == expected
    for name, parameter in backbone.named_parameters():
        assert parameter.requires_grad == (name.split(".")[0] in expected), name


def test_freezing_with_frozen_norm_leaves_only_conv_weights() -> None:
    backbone = resnet_backbone(18, norm="frozen", trainable_layers=1)
    trainable = [name for name, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("layer4.") for name in trainable)
    assert all("bn" not in name for name in trainable)


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="depth"):
        resnet_backbone(101)
    with pytest.raises(ValueError, match="trainable_layers"):
        resnet_backbone(18, trainable_layers=6)
    with pytest.raises(ValueError, match="norm"):
        resnet_backbone(18, norm="layer")
    with pytest.raises(ValueError, match="returned_layers"):
        resnet_backbone(18, returned_layers=(0, 5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        resnet_backbone(18)(torch.randn(3, 32, 32))


def _norm_types(backbone: nn.Module) -> set[type]:
    norm_types = (nn.BatchNorm2d, nn.GroupNorm, FrozenBatchNorm2d)
    return {type(m) for m in backbone.modules() if isinstance(m, norm_types)}


def test_norm_variants_contain_only_their_norm_layer() -> None:
    assert _norm_types(resnet_backbone(18, norm="frozen")) == {FrozenBatchNorm2d}
    assert _norm_types(resnet_backbone(18, norm="batch")) == {nn.BatchNorm2d}
    group = resnet_backbone(18, norm="group")
    assert _norm_types(group) == {nn.GroupNorm}
    assert all(m.num_groups == 32 for m in group.modules() if isinstance(m, nn.GroupNorm))


def _random_tv_resnet18_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state_dict = torchvision.models.resnet18(weights=None).state_dict()
    # Make BN statistics non-trivial so that a load that skips them is caught.
    return {
        k: torch.rand_like(v) + 0.5 if v.is_floating_point() else v for k, v in state_dict.items()
    }


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("norm", ["frozen", "batch"])
def test_weights_path_round_trip(tmp_path, suffix: str, norm: str) -> None:
    tv_state_dict = _random_tv_resnet18_state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tv_state_dict, str(path))
    else:
        torch.save(tv_state_dict, path)
    backbone = resnet_backbone(18, norm=norm, weights_path=path, returned_layers=(1, 2, 3))
    loaded = backbone.state_dict()
    assert not any(key.startswith(("fc.", "layer4.")) for key in loaded)
    for key, value in loaded.items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, tv_state_dict[key], rtol=0, atol=0, msg=key)


def test_weights_path_missing_keys_error_names_file_and_keys(tmp_path) -> None:
    state_dict = _random_tv_resnet18_state_dict()
    del state_dict["layer2.0.conv1.weight"]
    state_dict["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state_dict, path)
    with pytest.raises(ValueError, match=r"broken\.pth") as info:
        resnet_backbone(18, weights_path=path)
    assert "layer2.0.conv1.weight" in str(info.value)
    assert "extra.weight" in str(info.value)


def test_weights_path_shape_mismatch_and_garbage_and_absent(tmp_path) -> None:
    state_dict = _random_tv_resnet18_state_dict()
    state_dict["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    wrong_shape = tmp_path / "shape.pth"
    torch.save(state_dict, wrong_shape)
    with pytest.raises(ValueError, match=r"shape\.pth.*conv1\.weight"):
        resnet_backbone(18, weights_path=wrong_shape)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth"):
        resnet_backbone(18, weights_path=garbage)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match=r"list\.pth"):
        resnet_backbone(18, weights_path=not_a_dict)
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        resnet_backbone(18, weights_path=tmp_path / "absent.pth")


def test_group_norm_cannot_load_batchnorm_statistics(tmp_path) -> None:
    path = tmp_path / "bn.pth"
    torch.save(_random_tv_resnet18_state_dict(), path)
    with pytest.raises(ValueError, match="running_mean"):
        resnet_backbone(18, norm="group", weights_path=path)


def test_fold_frozen_batchnorm_matches_conv_then_bn() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    bn = FrozenBatchNorm2d(8)
    bn.weight.copy_(torch.rand(8) + 0.5)
    bn.bias.copy_(torch.randn(8))
    bn.running_mean.copy_(torch.randn(8))
    bn.running_var.copy_(torch.rand(8) + 0.1)
    images = torch.randn(2, 3, 11, 13)
    folded = fold_frozen_batchnorm(conv, bn)
    with torch.no_grad():
        torch.testing.assert_close(folded(images), bn(conv(images)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_small_backbone_shapes(norm: str) -> None:
    backbone = small_backbone(width=8, norm=norm)
    assert backbone.out_channels == {"c2": 8, "c3": 16, "c4": 32, "c5": 64}
    features = backbone(torch.randn(2, 3, 67, 93))
    _assert_feature_shapes(features, backbone, batch=2, height=67, width=93)
    group_norms = [m for m in backbone.modules() if isinstance(m, nn.GroupNorm)]
    if norm == "group":
        assert group_norms
        assert all(m.num_groups == math.gcd(32, m.num_channels) for m in group_norms)
    else:
        assert not group_norms


def test_small_backbone_refuses_frozen_norm_and_truncates() -> None:
    with pytest.raises(ValueError, match="norm"):
        small_backbone(norm="frozen")
    backbone = small_backbone(width=4, returned_layers=(1, 2))
    assert len(backbone.stages) == 2
    assert list(backbone(torch.randn(1, 3, 32, 32))) == ["c2", "c3"]


def test_small_backbone_trains_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    backbone = small_backbone(width=8)
    images = torch.randn(4, 3, 64, 64)
    targets = {name: torch.randn(4, c) for name, c in backbone.out_channels.items()}

    def loss_fn() -> torch.Tensor:
        features = backbone(images)
        return sum(
            ((features[name].mean(dim=(2, 3)) - targets[name]) ** 2).mean() for name in targets
        )

    initial = loss_fn()
    initial.backward()
    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9)
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    assert loss_fn().item() < 0.7 * initial.item()
