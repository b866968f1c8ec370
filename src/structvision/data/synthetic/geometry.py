"""Shape table and exact rasterisation of objects (shapes, stick figures) and strokes.

Every class is one entry of :data:`SHAPE_POLYGONS`: a unit polygon centred on the origin whose
farthest vertex lies at distance 1 (circumradius 1). Adding a class is adding an entry.

Rasterisation uses OpenCV with ``lineType=cv2.LINE_8`` (no antialiasing) and 4 fractional bits
of sub-pixel precision, so a mask is the exact, binary set of pixels that a draw call paints.
Coordinates follow :mod:`structvision.data.synthetic.scene` (pixel centres at ``+0.5``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from structvision.data.synthetic.figures import SKELETON
from structvision.data.synthetic.scene import Color, ShapeObject, StickFigure, Stroke

_SHIFT = 4  # fractional bits of cv2 sub-pixel coordinates
_ONE = float(1 << _SHIFT)
_CAP_VERTICES = 9  # vertices on each round cap of a capsule (a half circle)
_HEAD_VERTICES = 32


def _regular_polygon(num_vertices: int, *, start_angle: float) -> np.ndarray:
    """Vertices ``(num_vertices, 2)`` of a regular polygon with circumradius 1."""
    angles = start_angle + 2.0 * math.pi * np.arange(num_vertices) / num_vertices
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(num_points: int, *, inner_radius: float) -> np.ndarray:
    """Vertices ``(2 * num_points, 2)`` of a star with outer radius 1; first tip points up."""
    angles = -math.pi / 2 + math.pi * np.arange(2 * num_points) / num_points
    radii = np.where(np.arange(2 * num_points) % 2 == 0, 1.0, inner_radius)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(*, half_width: float) -> np.ndarray:
    """Vertices ``(12, 2)`` of a plus sign with arms of half-width ``half_width``, radius 1."""
    w = half_width
    outline = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1)]
    outline += [(-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]
    vertices = np.asarray(outline, dtype=np.float64)
    return vertices / math.hypot(1.0, w)


SHAPE_POLYGONS: dict[str, np.ndarray] = {
    "circle": _regular_polygon(64, start_angle=0.0),
    "square": _regular_polygon(4, start_angle=math.pi / 4),
    "triangle": _regular_polygon(3, start_angle=-math.pi / 2),
    "star": _star(5, inner_radius=0.45),
    "hexagon": _regular_polygon(6, start_angle=0.0),
    "cross": _cross(half_width=0.32),
}
"""Class name → unit polygon ``(K, 2)`` (x, y), circumradius 1, centred on the origin."""

for _vertices in SHAPE_POLYGONS.values():
    _vertices.setflags(write=False)


def object_polygon(obj: ShapeObject) -> np.ndarray:
    """The object's outline ``(K, 2)`` as ``(x, y)`` in continuous pixel coordinates."""
    radius = 0.5 * obj.size
    cos_r, sin_r = radius * math.cos(obj.rotation), radius * math.sin(obj.rotation)
    aspect = obj.aspect
    # row vectors: p @ diag(radius, radius * aspect) @ rotation
    linear = np.array([[cos_r, sin_r], [-sin_r * aspect, cos_r * aspect]])
    return SHAPE_POLYGONS[obj.shape] @ linear + np.asarray(obj.center, dtype=np.float64)


def _to_fixed_point(points: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates ``(K, 2)`` → cv2 fixed-point ``int32`` (pixel centres)."""
    return np.rint(points * _ONE - 0.5 * _ONE).astype(np.int32)


def rasterize_polygon(
    polygon: np.ndarray, *, image_size: tuple[int, int]
) -> tuple[int, int, np.ndarray]:
    """Fill a polygon, returning only the crop of the image that can contain it.

    Args:
        polygon: ``(K, 2)`` outline, ``(x, y)`` continuous pixel coordinates.
        image_size: ``(height, width)`` of the full image.

    Returns:
        ``(y0, x0, mask)``: ``mask`` is a bool ``(h, w)`` crop whose top-left pixel is row ``y0``,
        column ``x0`` of the image; ``h`` or ``w`` is 0 when the polygon lies outside the image.
    """
    height, width = image_size
    (low_x, low_y), (high_x, high_y) = polygon.min(axis=0).tolist(), polygon.max(axis=0).tolist()
    x0, y0 = max(math.floor(low_x) - 1, 0), max(math.floor(low_y) - 1, 0)
    x1, y1 = min(math.ceil(high_x) + 1, width), min(math.ceil(high_y) + 1, height)
    canvas = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.uint8)
    if canvas.size:
        fixed = _to_fixed_point(polygon - np.array([x0, y0], dtype=np.float64))
        cv2.fillPoly(canvas, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return y0, x0, canvas.view(bool)


_CAP_SWEEP = np.linspace(-0.5 * math.pi, 0.5 * math.pi, _CAP_VERTICES)  # (V,) cap angles
_UNIT_HEAD = _regular_polygon(_HEAD_VERTICES, start_angle=0.0)  # (V, 2) unit disc outline


def capsule_polygons(starts: np.ndarray, ends: np.ndarray, *, radius: float) -> np.ndarray:
    """Convex outlines ``(L, 2 * _CAP_VERTICES, 2)`` of capsules: the points within ``radius``
    of the segments ``starts[l]``–``ends[l]`` (``(L, 2)`` each, pixels), round caps included.

    The caps are inscribed polygons, so the outline lies inside the true capsule and keeps at
    least ``radius * cos(pi / (2 * (_CAP_VERTICES - 1)))`` from the segment.
    """
    delta = ends - starts  # (L, 2)
    heading = np.arctan2(delta[:, 1], delta[:, 0])  # (L,), 0 for a zero-length segment
    around_end = heading[:, None] + _CAP_SWEEP  # (L, V)
    around_start = around_end + math.pi
    end_cap = ends[:, None] + radius * np.stack([np.cos(around_end), np.sin(around_end)], -1)
    start_cap = starts[:, None] + radius * np.stack(
        [np.cos(around_start), np.sin(around_start)], -1
    )
    return np.concatenate([end_cap, start_cap], axis=1)


def figure_parts(figure: StickFigure) -> list[np.ndarray]:
    """Convex outlines ``(V, 2)`` (pixels) whose union is the figure: one capsule per limb of
    :data:`~structvision.data.synthetic.figures.SKELETON`, then the head disc."""
    joints = np.asarray(figure.keypoints, dtype=np.float64)  # (K, 2)
    limbs = np.asarray(SKELETON)  # (L, 2)
    capsules = capsule_polygons(
        joints[limbs[:, 0]], joints[limbs[:, 1]], radius=0.5 * figure.limb_width
    )
    head = figure.head_radius * _UNIT_HEAD + joints[0]
    return [*capsules, head]


def rasterize_convex_parts(
    parts: list[np.ndarray], *, image_size: tuple[int, int]
) -> tuple[int, int, np.ndarray]:
    """Fill the union of convex outlines (each ``(V, 2)``, pixels) as a crop; the return value
    is as for :func:`rasterize_polygon`. (``cv2.fillPoly`` of several polygons would
    cancel their overlaps, so each part is filled on its own.)"""
    height, width = image_size
    points = np.concatenate(parts)  # (P, 2)
    (low_x, low_y), (high_x, high_y) = points.min(axis=0).tolist(), points.max(axis=0).tolist()
    x0, y0 = max(math.floor(low_x) - 1, 0), max(math.floor(low_y) - 1, 0)
    x1, y1 = min(math.ceil(high_x) + 1, width), min(math.ceil(high_y) + 1, height)
    canvas = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.uint8)
    if canvas.size:
        fixed = _to_fixed_point(points - np.array([x0, y0], dtype=np.float64))  # (P, 2)
        ends = np.cumsum([len(part) for part in parts])
        for start, end in zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True):
            cv2.fillConvexPoly(canvas, fixed[start:end], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return y0, x0, canvas.view(bool)


def rasterize_object(
    obj: ShapeObject | StickFigure, *, image_size: tuple[int, int]
) -> tuple[int, int, np.ndarray]:
    """The full (unoccluded) mask of ``obj`` as a crop; see :func:`rasterize_polygon`."""
    if isinstance(obj, StickFigure):
        return rasterize_convex_parts(figure_parts(obj), image_size=image_size)
    return rasterize_polygon(object_polygon(obj), image_size=image_size)


def draw_stroke(canvas: np.ndarray, stroke: Stroke, *, color: Color | int) -> None:
    """Draw ``stroke`` in place on ``canvas`` ``(H, W)`` or ``(H, W, 3)`` ``uint8``.

    The painted pixel set depends only on the stroke's geometry, so drawing the same stroke on
    an image and on an instance map touches the same pixels.
    """
    fixed = _to_fixed_point(np.asarray(stroke.points, dtype=np.float64))
    cv2.polylines(
        canvas,
        [fixed],
        isClosed=False,
        color=color,
        thickness=int(stroke.thickness),
        lineType=cv2.LINE_8,
        shift=_SHIFT,
    )


def stroke_mask(stroke: Stroke, *, image_size: tuple[int, int]) -> np.ndarray:
    """Bool ``(H, W)`` mask of the pixels that ``stroke`` paints."""
    canvas = np.zeros(image_size, dtype=np.uint8)
    draw_stroke(canvas, stroke, color=1)
    return canvas.view(bool)
