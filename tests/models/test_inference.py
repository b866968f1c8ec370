"""Inference-only rewrites: batch norm folded into convolutions, channels-last trunk."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from structvision.models.backbones import resnet_backbone
from structvision.models.detection import faster_rcnn_small_fpn
from structvision.models.inference import fold_batchnorm, prepare_for_inference


def _randomise_norms(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = module.weight.numel()
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator))
            module.running_mean.data.copy_(torch.randn(n, generator=generator))
            module.running_var.data.copy_(torch.rand(n, generator=generator) + 0.5)


@pytest.mark.parametrize("norm", ["frozen", "batch"])
def test_folded_resnet_matches_and_has_no_norm_left(norm):
    backbone = resnet_backbone(18, norm=norm).eval()
    _randomise_norms(backbone)
    folded = fold_batchnorm(backbone)
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in folded.modules())
    assert any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in backbone.modules())
    images = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        expected, actual = backbone(images), folded(images)
    for name in expected:
        assert torch.allclose(actual[name], expected[name], rtol=1e-4, atol=1e-4), name


def test_group_norm_is_left_alone_and_detector_outputs_match():
    torch.manual_seed(0)
    model = faster_rcnn_small_fpn(
        num_classes=4, width=8, min_size=64, max_size=64, norm="batch"
    ).eval()
    _randomise_norms(model)
    model.roi_heads.score_thresh = 0.0
    prepared = prepare_for_inference(model)
    images = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        expected, actual = model(images)[0], prepared(images)[0]
    assert len(actual["boxes"]) == len(expected["boxes"]) > 0
    assert torch.allclose(actual["scores"], expected["scores"], atol=1e-4)
    grouped = faster_rcnn_small_fpn(num_classes=4, width=8, norm="group")
    assert sum(isinstance(m, nn.GroupNorm) for m in fold_batchnorm(grouped).modules()) == sum(
        isinstance(m, nn.GroupNorm) for m in grouped.modules()
    )
