"""OpenCV's flow methods behind the learned models' call recover a known translation."""

from __future__ import annotations

import pytest
import torch

from structvision.models.flow.classical import ClassicalFlow
from structvision.ops.warp import warp


def _pair():
    generator = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, 24, 32, generator=generator)
    first = torch.nn.functional.interpolate(texture, size=(96, 128), mode="bicubic").clamp(0, 1)
    flow = torch.zeros(1, 2, 96, 128)
    flow[:, 0], flow[:, 1] = 3.0, -2.0
    return first, warp(first, -flow, padding_mode="border"), flow[0]


@pytest.mark.parametrize("method", ["dis", "farneback", "tvl1"])
def test_classical_methods_recover_a_translation(method):
    first, second, flow = _pair()
    predicted = ClassicalFlow(method)(first, second)
    assert len(predicted) == 1 and predicted[0]["flow"].shape == (2, 96, 128)
    interior = (predicted[0]["flow"] - flow)[:, 16:-16, 16:-16]
    assert interior.norm(dim=0).median() < 0.3


def test_bad_method_and_preset_are_named():
    with pytest.raises(ValueError, match="method must be one of"):
        ClassicalFlow("lucas")
    with pytest.raises(ValueError, match="DIS preset"):
        ClassicalFlow("dis", preset="slow")
