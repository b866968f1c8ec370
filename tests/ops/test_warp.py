"""Backward warping: integer shifts move pixels exactly, bilinear sampling is exact on ramps."""

from __future__ import annotations

import pytest
import torch

from structvision.ops.warp import flow_inside, warp


def test_integer_flow_moves_pixels_and_zero_fills_outside():
    image = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    flow = torch.zeros(2, 2, 5, 6)
    flow[:, 0], flow[:, 1] = 2.0, 1.0  # sample 2 to the right, 1 down
    warped = warp(image, flow)
    assert torch.equal(warped[..., :4, :4], image[..., 1:, 2:])
    assert (warped[..., 4:, :] == 0).all() and (warped[..., :, 4:] == 0).all()
    inside = flow_inside(flow)
    assert inside[:, :4, :4].all() and not inside[:, 4:, :].any() and not inside[:, :, 4:].any()


def test_subpixel_flow_is_exact_on_a_linear_ramp():
    height, width = 8, 9
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ramp = (0.3 * xs - 0.7 * ys + 2.0).float()[None, None]
    flow = torch.rand(1, 2, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    warped = warp(ramp, flow)
    expected = 0.3 * (xs + flow[0, 0]) - 0.7 * (ys + flow[0, 1]) + 2.0
    inside = flow_inside(flow)[0]
    assert inside.sum() > 30
    assert torch.allclose(warped[0, 0][inside], expected[inside], atol=1e-5)


def test_warp_is_differentiable_in_the_flow_and_checks_shapes():
    image = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    flow = torch.full((1, 2, 6, 6), 0.25, requires_grad=True)
    warp(image, flow).sum().backward()
    assert flow.grad is not None and flow.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"flow must have shape \(B, 2, H, W\)"):
        warp(image, torch.zeros(1, 3, 6, 6))
    with pytest.raises(ValueError, match="matching flow"):
        warp(image, torch.zeros(1, 2, 5, 6))
