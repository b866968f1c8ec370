"""Plain data that describes a synthetic scene, apart from how it is drawn.

A :class:`Scene` is what a generator *samples*; :func:`structvision.data.synthetic.render.render_scene`
turns it into pixels and exact ground truth. Keeping the two apart lets later generators move
objects between frames (video, optical flow) or shift them per eye (stereo) and render again.

Coordinates are continuous pixel coordinates: pixel ``(col j, row i)`` covers the square
``[j, j + 1) x [i, i + 1)`` and its centre is ``(j + 0.5, i + 0.5)``. ``x`` runs along columns,
``y`` along rows. Angles are in radians; a positive rotation turns ``+x`` towards ``+y``, which
is clockwise on screen because ``y`` points down.
"""

from __future__ import annotations

from dataclasses import dataclass

Color = tuple[int, int, int]
"""An RGB colour, each channel an int in ``[0, 255]``."""


@dataclass(frozen=True)
class Background:
    """Parameters of a procedural background.

    Attributes:
        kind: one of ``"plain"``, ``"gradient"``, ``"stripes"``, ``"checker"``, ``"noise"``.
        color_a: first colour (the only one for ``"plain"``).
        color_b: second colour; the texture blends or alternates between ``color_a`` and it.
        angle: direction of the gradient, stripes or checker grid, radians.
        period: stripe or checker period in pixels.
        texture_seed: seed of the low-frequency noise field and of the grain offset.
        grain: standard deviation of per-pixel grain noise, in 0-255 intensity units.
    """

    kind: str
    color_a: Color
    color_b: Color
    angle: float = 0.0
    period: float = 16.0
    texture_seed: int = 0
    grain: float = 0.0


@dataclass(frozen=True)
class ShapeObject:
    """One labelled object: a filled shape of one flat colour.

    Attributes:
        shape: key of :data:`structvision.data.synthetic.geometry.SHAPE_POLYGONS`.
        label: class id written to the ground truth, ``1..K``.
        center: ``(x, y)`` of the shape's centre, pixels.
        size: diameter of the shape's circumscribed circle, pixels; so the shape fits in a
            ``size x size`` square whatever its rotation.
        rotation: radians.
        color: RGB fill colour.
        aspect: the shape's local ``y`` axis is scaled by this factor (``<= 1``) before rotation.
    """

    shape: str
    label: int
    center: tuple[float, float]
    size: float
    rotation: float
    color: Color
    aspect: float = 1.0


@dataclass(frozen=True)
class StickFigure:
    """One labelled articulated figure (see :mod:`structvision.data.synthetic.figures`).

    Attributes:
        label: class id written to the ground truth, ``1..K``.
        keypoints: ``(x, y)`` of every joint, pixels, in the order of
            :data:`~structvision.data.synthetic.figures.KEYPOINT_NAMES`; may lie outside the
            image.
        limb_width: full width of every limb capsule (a segment between two skeleton joints
            with round caps), pixels.
        head_radius: radius of the head disc centred on ``keypoints[0]``, pixels.
        color: RGB fill colour.
    """

    label: int
    keypoints: tuple[tuple[float, float], ...]
    limb_width: float
    head_radius: float
    color: Color


@dataclass(frozen=True)
class Stroke:
    """An unlabelled distractor: an open polyline (line, scribble or arc).

    Attributes:
        points: ``(x, y)`` vertices in pixels, at least two.
        thickness: line width in pixels, ``>= 1``.
        color: RGB colour.
        z: number of objects drawn *below* the stroke: ``0`` puts it on the background under
            every object, ``len(scene.objects)`` on top of all of them. Pixels of a stroke with
            ``z > 0`` hide the objects below it and belong to no instance.
    """

    points: tuple[tuple[float, float], ...]
    thickness: int
    color: Color
    z: int = 0


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one image.

    Attributes:
        image_size: ``(height, width)`` in pixels.
        background: the procedural background.
        objects: labelled objects (shapes and stick figures) in drawing order, back to front
            (z-order = position).
        strokes: unlabelled distractor strokes; each says its own place in the z-order.
    """

    image_size: tuple[int, int]
    background: Background
    objects: tuple[ShapeObject | StickFigure, ...]
    strokes: tuple[Stroke, ...] = ()
