"""Procedural backgrounds: plain, gradient, stripes, checker and low-frequency noise, plus grain.

Each kind computes a blend weight ``t (H, W)`` in ``[0, 1]`` between ``color_a`` and ``color_b``;
grain is a fixed, cached Gaussian noise tile read at an offset chosen by ``texture_seed``, so
rendering draws no random numbers except for the small ``"noise"`` control grid.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from structvision.data.synthetic.scene import Background

BACKGROUND_KINDS: tuple[str, ...] = ("plain", "gradient", "stripes", "checker", "noise")

_GRAIN_MARGIN = 64  # the grain tile is this much larger than the image in each direction
_GRAIN_SEED = 20240917


@functools.lru_cache(maxsize=8)
def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``xs (1, W)`` and ``ys (H, 1)``, float32, read-only."""
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


@functools.lru_cache(maxsize=4)
def _grain_tiles(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed standard-normal tiles, one per channel, ``(H + margin, W + margin)`` float32."""
    rng = np.random.default_rng(_GRAIN_SEED)
    shape = (height + _GRAIN_MARGIN, width + _GRAIN_MARGIN)
    tiles = tuple(rng.standard_normal(shape, np.float32) for _ in range(3))
    for tile in tiles:
        tile.setflags(write=False)
    return tiles


def _along(background: Background, height: int, width: int) -> np.ndarray:
    """Signed distance ``(H, W)`` along the background's ``angle`` from the image centre."""
    xs, ys = _pixel_centres(height, width)
    cos_a, sin_a = math.cos(background.angle), math.sin(background.angle)
    return (xs - 0.5 * width) * cos_a + (ys - 0.5 * height) * sin_a


def _gradient_weight(background: Background, height: int, width: int) -> np.ndarray:
    cos_a, sin_a = abs(math.cos(background.angle)), abs(math.sin(background.angle))
    extent = width * cos_a + height * sin_a
    return np.clip(_along(background, height, width) / extent + 0.5, 0.0, 1.0)


def _parity(values: np.ndarray) -> np.ndarray:
    """``floor(values) mod 2`` as float32 0/1 (integer arithmetic, faster than ``np.mod``)."""
    return (np.floor(values).astype(np.int32) & 1).astype(np.float32)


def _stripes_weight(background: Background, height: int, width: int) -> np.ndarray:
    return _parity(_along(background, height, width) * (1.0 / background.period))


def _checker_weight(background: Background, height: int, width: int) -> np.ndarray:
    xs, ys = _pixel_centres(height, width)
    cos_a, sin_a = math.cos(background.angle), math.sin(background.angle)
    u = np.floor((xs * cos_a + ys * sin_a) * (1.0 / background.period))
    v = np.floor((ys * cos_a - xs * sin_a) * (1.0 / background.period))
    return _parity(u + v)


def _noise_weight(background: Background, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(background.texture_seed)
    cells = int(rng.integers(3, 9))
    grid = rng.random((cells, cells), dtype=np.float32)
    smooth = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip((smooth - 0.5) * 1.6 + 0.5, 0.0, 1.0)


_WEIGHTS = {
    "gradient": _gradient_weight,
    "stripes": _stripes_weight,
    "checker": _checker_weight,
    "noise": _noise_weight,
}


def _check_background(background: Background) -> None:
    if background.kind not in BACKGROUND_KINDS:
        raise ValueError(
            f"background.kind must be one of {BACKGROUND_KINDS}, got {background.kind!r}"
        )
    if background.kind in ("stripes", "checker") and not background.period > 0:
        raise ValueError(f"background.period must be > 0 pixels, got {background.period}")


def render_background_planes(
    background: Background, *, image_size: tuple[int, int]
) -> list[np.ndarray]:
    """Render ``background`` as three ``(H, W)`` ``uint8`` planes ``[red, green, blue]``.

    Each plane is ``color_a + t * (color_b - color_a) + grain * noise``, rounded and saturated.
    Planes rather than an ``(H, W, 3)`` image because painting one plane at a time is an order
    of magnitude faster in numpy than assigning RGB triples.

    Raises:
        ValueError: if ``background.kind`` is not one of :data:`BACKGROUND_KINDS` or the period
            of a periodic texture is not positive.
    """
    _check_background(background)
    height, width = image_size
    if background.kind == "plain":
        weight = np.zeros((height, width), dtype=np.float32)
    else:
        weight = _WEIGHTS[background.kind](background, height, width)  # (H, W) float32
    oy = background.texture_seed % _GRAIN_MARGIN
    ox = (background.texture_seed // _GRAIN_MARGIN) % _GRAIN_MARGIN
    planes = []
    for tile, low, high in zip(
        _grain_tiles(height, width), background.color_a, background.color_b, strict=True
    ):
        grain = tile[oy : oy + height, ox : ox + width]  # (H, W)
        # one cv2 pass: weight * (high - low) + grain * amplitude + low, rounded, saturated
        plane = cv2.addWeighted(
            weight, float(high - low), grain, float(background.grain), float(low), dtype=cv2.CV_8U
        )
        planes.append(plane)
    return planes


def render_background(background: Background, *, image_size: tuple[int, int]) -> np.ndarray:
    """Render ``background`` as an RGB ``(H, W, 3)`` ``uint8`` image (see
    :func:`render_background_planes`)."""
    return cv2.merge(render_background_planes(background, image_size=image_size))
