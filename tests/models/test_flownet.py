"""FlowNetS: the paper's layer sizes, the flow pyramid's strides, any input size, the multi-scale
EPE by hand, and overfitting one pair."""

from __future__ import annotations

import pytest
import torch

from structvision.models.flow.flownet import FLOWNET_LOSS_WEIGHTS, flownet_s, multiscale_epe
from structvision.ops.warp import warp


def test_paper_channels_and_pyramid_strides():
    model = flownet_s().eval()
    encoder = {name: layer[0] for name, layer in model.encoder.items()}
    assert [encoder[n].out_channels for n in ("conv1", "conv2", "conv3", "conv6_1")] == [
        64,
        128,
        256,
        1024,
    ]
    assert encoder["conv1"].kernel_size == (7, 7) and encoder["conv2"].kernel_size == (5, 5)
    assert [d[0].out_channels for d in model.deconvs] == [512, 256, 128, 64]
    small = flownet_s(width=8).eval()
    with torch.no_grad():
        flows, padding = small.pyramid(torch.rand(1, 3, 128, 192), torch.rand(1, 3, 128, 192))
    assert [tuple(f.shape[-2:]) for f in flows] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert padding == (0, 0, 0, 0)


def test_any_size_in_and_out():
    model = flownet_s(width=8).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 50, 70), torch.rand(2, 3, 50, 70))
    assert len(out) == 2 and out[0]["flow"].shape == (2, 50, 70)


def test_multiscale_epe_by_hand():
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 3.0
    known = torch.ones(1, 4, 4, dtype=torch.bool)
    fine = torch.zeros(1, 2, 4, 4)  # EPE 3 everywhere
    coarse = torch.zeros(1, 2, 2, 2)
    coarse[:, 1] = 4.0  # against the pooled target (3, 0): EPE 5
    loss = multiscale_epe([fine, coarse], target, known, weights=(0.5, 0.25))
    assert loss.item() == pytest.approx(0.5 * 3 + 0.25 * 5)
    half_known = known.clone()
    half_known[:, :, 2:] = False
    target[:, 0, :, 2:] = 100.0  # unknown pixels do not reach the pooled target
    assert multiscale_epe([fine, coarse], target, half_known, weights=(0.5, 0.25)).item() == (
        pytest.approx(0.5 * 3 + 0.25 * 5)
    )
    assert len(FLOWNET_LOSS_WEIGHTS) == 5


def test_flownet_overfits_one_pair():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, 12, 16, generator=generator)
    first = torch.nn.functional.interpolate(texture, size=(48, 64), mode="bicubic").clamp(0, 1)
    flow = torch.zeros(1, 2, 48, 64)
    flow[:, 0], flow[:, 1] = 2.5, -1.5
    second = warp(first, -flow, padding_mode="border")
    model = flownet_s(width=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(60):
        loss = model(first, second, [{"flow": flow[0]}])["loss_flow"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(first, second)[0]["flow"]
    assert (predicted - flow[0]).norm(dim=0).mean() < 0.6  # from 2.9 px at zero flow
