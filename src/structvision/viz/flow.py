"""Pictures of optical flow: the Middlebury colour wheel and arrows.

The colour coding is Baker et al.'s (Middlebury flow benchmark, 2011): hue gives the direction,
saturation the length relative to the largest in the picture. The wheel has 55 colours in six
ramps (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta 13, magenta-red
6), spaced by perceived hue change; directions between two colours are interpolated linearly.
torchvision's ``flow_to_image`` draws the same wheel, and a test holds the two equal.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["color_wheel", "draw_flow_arrows", "flow_to_image"]

#: Colours per ramp of the wheel, in order red->yellow->green->cyan->blue->magenta->red.
_RAMPS = (15, 6, 4, 11, 13, 6)


def color_wheel() -> Tensor:
    """The ``(55, 3)`` float colours of the Middlebury wheel, 0..255."""
    # Each ramp moves one channel between 0 and 255 while another stays at 255.
    steps = [  # (channel that changes, rising?, channel held at 255)
        (1, True, 0),  # red -> yellow: green rises
        (0, False, 1),  # yellow -> green: red falls
        (2, True, 1),  # green -> cyan: blue rises
        (1, False, 2),  # cyan -> blue: green falls
        (0, True, 2),  # blue -> magenta: red rises
        (2, False, 0),  # magenta -> red: blue falls
    ]
    rows = []
    for count, (moving, rising, held) in zip(_RAMPS, steps, strict=True):
        ramp = torch.floor(255 * torch.arange(count, dtype=torch.float64) / count)
        colors = torch.zeros(count, 3, dtype=torch.float64)
        colors[:, held] = 255
        colors[:, moving] = ramp if rising else 255 - ramp
        rows.append(colors)
    return torch.cat(rows)


def flow_to_image(flow: Tensor, *, max_flow: float | None = None) -> Tensor:
    """``(2, H, W)`` or ``(B, 2, H, W)`` flow -> ``uint8`` ``(3, H, W)`` / ``(B, 3, H, W)``.

    Lengths are divided by ``max_flow`` (default: the largest in ``flow``; one scale for a whole
    batch, as torchvision's, so that the frames of a sequence compare), so white is no motion
    and full saturation the largest; flow longer than ``max_flow`` is darkened.
    """
    if flow.ndim == 3:
        return flow_to_image(flow[None], max_flow=max_flow)[0]
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must have shape (2, H, W) or (B, 2, H, W), got {tuple(flow.shape)}")
    if not flow.is_floating_point():
        raise ValueError(f"flow must be floating point, got {flow.dtype}")
    flow = flow.detach().float()
    if max_flow is None:
        largest = flow.norm(dim=1).amax()  # one scale for the batch, as torchvision's
        scale = (largest + torch.finfo(flow.dtype).eps).expand(flow.shape[0])
    else:
        scale = torch.full((flow.shape[0],), float(max_flow))
    u, v = (flow / scale.to(flow.device)[:, None, None, None]).unbind(dim=1)  # (B, H, W)
    wheel = color_wheel().to(flow.device).float()
    num_colors = len(wheel)
    radius = torch.sqrt(u**2 + v**2)
    angle = torch.atan2(-v, -u) / math.pi  # (-1, 1]
    position = (angle + 1) / 2 * (num_colors - 1)
    k0 = position.floor().long()
    k1 = (k0 + 1) % num_colors
    fraction = (position - k0)[..., None]
    color = ((1 - fraction) * wheel[k0] + fraction * wheel[k1]) / 255  # (B, H, W, 3)
    inside = (radius <= 1)[..., None]
    color = torch.where(inside, 1 - radius[..., None] * (1 - color), color * 0.75)
    return torch.floor(255 * color).to(torch.uint8).permute(0, 3, 1, 2).contiguous()


def draw_flow_arrows(
    image: Tensor,
    flow: Tensor,
    *,
    step: int = 16,
    color: tuple[int, int, int] = (0, 0, 0),
    min_length: float = 0.5,
) -> Tensor:
    """``uint8 (3, H, W)`` ``image`` with an arrow every ``step`` pixels along ``flow (2, H, W)``
    (arrows shorter than ``min_length`` pixels are left out)."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}")
    if flow.shape != (2, *image.shape[1:]):
        raise ValueError(f"flow must have shape {(2, *image.shape[1:])}, got {tuple(flow.shape)}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    canvas = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    pen = ImageDraw.Draw(canvas)
    flow_np = flow.detach().float().cpu().numpy()
    height, width = image.shape[1:]
    for y in range(step // 2, height, step):
        for x in range(step // 2, width, step):
            u, v = (float(c) for c in flow_np[:, y, x])
            length = math.hypot(u, v)
            if length < min_length:
                continue
            end = (x + u, y + v)
            pen.line([(x, y), end], fill=color, width=1)
            head = min(3.0, length / 2)
            for turn in (2.6, -2.6):  # the two barbs, about 150 degrees from the shaft
                angle = math.atan2(v, u) + turn
                pen.line(
                    [end, (end[0] + head * math.cos(angle), end[1] + head * math.sin(angle))],
                    fill=color,
                    width=1,
                )
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)
