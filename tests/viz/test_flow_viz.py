"""The Middlebury colour coding equals torchvision's; arrows land where the flow points."""

from __future__ import annotations

import torch
from torchvision.utils import flow_to_image as torchvision_flow_to_image

from structvision.viz.flow import color_wheel, draw_flow_arrows, flow_to_image


def test_colour_coding_equals_torchvision():
    generator = torch.Generator().manual_seed(0)
    single = torch.randn(2, 17, 23, generator=generator) * 5
    batch = (
        torch.randn(3, 2, 8, 9, generator=generator)
        * torch.tensor([1.0, 10.0, 100.0])[:, None, None, None]
    )
    assert torch.equal(flow_to_image(single), torchvision_flow_to_image(single))
    assert torch.equal(flow_to_image(batch), torchvision_flow_to_image(batch))


def test_wheel_colours_and_fixed_scale():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    assert wheel[0].tolist() == [255, 0, 0]  # red
    assert wheel[15].tolist() == [255, 255, 0]  # yellow starts the second ramp
    still = flow_to_image(torch.zeros(2, 2, 2))
    assert (still == 255).all()  # no motion is white
    right = torch.zeros(2, 1, 2)
    right[0, 0, 1] = 10.0
    half = flow_to_image(right, max_flow=20.0)[:, 0, 1]
    full = flow_to_image(right, max_flow=10.0)[:, 0, 1]
    assert (half >= full).all() and (half > full).any()  # shorter relative length: paler


def test_arrows_follow_the_flow():
    image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    flow = torch.zeros(2, 32, 32)
    assert torch.equal(draw_flow_arrows(image, flow, step=16), image)  # nothing moves
    flow[0] = 6.0  # everything moves 6 px to the right
    drawn = draw_flow_arrows(image, flow, step=16)
    dark = (drawn < 128).all(dim=0)
    assert dark[8, 8:15].all() and dark[24, 24:31].all()  # shafts from (8, 8) and (24, 24)
    assert not dark[:, :7].any()  # nothing left of the arrows' starts
