"""The built-in ``shapes`` generator: objects whose class is their shape, never their colour.

A sample is fully determined by ``(seed, split, index)``. :func:`sample_scene` draws a
:class:`~structvision.data.synthetic.scene.Scene` (background, objects, distractor strokes) from
a numpy ``Generator``; :func:`~structvision.data.synthetic.render.render_scene` paints it and
:func:`~structvision.data.synthetic.render.instance_targets` reads exact ground truth off the
painted pixels. :class:`ShapesDataset` wraps the three as a torch ``Dataset``. With
``figures=True`` a ``person`` class of articulated stick figures with keypoints joins the shapes;
:class:`ShapesPoseDataset` (``shapes-pose``) has figures only.

Occlusion is controlled while sampling: a new object or a stroke drawn over objects is rejected
(and re-drawn) if it would leave any earlier object with less than ``1 - max_occlusion`` of its
full area visible or with fewer than ``min_visible_area`` visible pixels. The sampler uses the
same rasteriser as the renderer, so the check is exact.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from structvision.data.synthetic.figures import (
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    KEYPOINT_SIGMAS,
    SKELETON,
    keypoint_targets,
    person_category,
    sample_figure,
)
from structvision.data.synthetic.geometry import (
    SHAPE_POLYGONS,
    rasterize_object,
    stroke_mask,
)
from structvision.data.synthetic.render import instance_targets, render_scene
from structvision.data.synthetic.scene import (
    Background,
    Color,
    Scene,
    ShapeObject,
    StickFigure,
    Stroke,
)
from structvision.data.synthetic.scribbles import scribble_labels, scribble_rng

CLASS_NAMES: tuple[str, ...] = tuple(SHAPE_POLYGONS)
"""All shape classes, in label order: ``CLASS_NAMES[i]`` has label ``i + 1`` by default.
("circle", "square", "triangle", "star", "hexagon", "cross")."""

BACKGROUND_MODES: tuple[str, ...] = ("textured", "plain")
_TEXTURED_KINDS: tuple[str, ...] = ("gradient", "stripes", "checker", "noise")
_STREAM_TAG = zlib.crc32(b"structvision.shapes")
_MAX_PLACEMENT_ATTEMPTS = 30
_MAX_STROKE_ATTEMPTS = 5
_SHRINK_PER_ATTEMPT = 0.9
_COLOR_CANDIDATES = 16


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_float(name: str, value: Any, *, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high or math.isnan(value):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")


@dataclass(frozen=True)
class ShapesConfig:
    """Knobs of the ``shapes`` generator.

    Attributes:
        image_size: ``int`` for a square image or ``(height, width)``, pixels (>= 16).
        min_objects: fewest labelled objects per image (0 allows empty images).
        max_objects: most labelled objects per image (<= 255).
        min_object_size: smallest object, as a fraction of the image's shorter side; an object's
            size is the diameter of its circumscribed circle. 0.0625 is 8 px at 128 x 128.
        max_object_size: largest object, same unit. Sizes are drawn log-uniformly.
        classes: names from :data:`CLASS_NAMES` to generate; labels follow this order (1..K).
        background: ``"textured"`` (gradients, stripes, checkers, noise, with grain) or
            ``"plain"`` (one flat colour).
        clutter: at most this many unlabelled distractor strokes (lines, scribbles, arcs) per
            image; the count is drawn uniformly from ``[0, clutter]``.
        clutter_over_objects: probability that a stroke is drawn above some objects (hiding
            them) rather than on the background.
        max_occlusion: largest fraction of an object's full area that later objects or strokes
            may hide, in ``[0, 1]``.
        min_visible_area: fewest visible pixels an object may keep; placements that would hide
            more are rejected, so every object in the ground truth has at least this many.
        aspect_jitter: an object's local ``y`` axis is scaled by a factor drawn from
            ``[1 - aspect_jitter, 1]``.
        min_color_distance: an object's colour keeps at least this RGB (0-255) Euclidean
            distance from the background colours and from earlier objects, when possible.
        ignore_band: half-width in pixels of the band around object boundaries set to 255 in
            ``semantic`` (0: no band).
        scribbles: replace ``semantic`` by scribble labels (one stroke per object, a few on the
            background, 255 elsewhere; see
            :func:`~structvision.data.synthetic.scribbles.scribble_labels`) and keep the exact
            map as ``semantic_full``. Images and the other targets do not change.
        figures: add the articulated ``person`` class, label ``len(classes) + 1``: stick figures
            with 15 keypoints (:mod:`~structvision.data.synthetic.figures`); each object is a
            person with probability ``1 / (len(classes) + 1)``, and targets get ``keypoints``.
            ``classes`` may then be empty (only figures, as in ``shapes-pose``).
        min_figure_size: smallest figure: standing height (head top to ankles) as a fraction of
            the image's shorter side. A posed figure too large for the image is scaled down.
        max_figure_size: largest figure, same unit; heights are drawn log-uniformly.
        figure_truncation: probability that a figure may reach past the image border (by up to
            35% of its extent); its keypoints outside the image get visibility 0.
    """

    image_size: int | tuple[int, int] = 128
    min_objects: int = 1
    max_objects: int = 6
    min_object_size: float = 0.0625
    max_object_size: float = 0.6
    classes: tuple[str, ...] = CLASS_NAMES
    background: str = "textured"
    clutter: int = 4
    clutter_over_objects: float = 0.25
    max_occlusion: float = 0.5
    min_visible_area: int = 6
    aspect_jitter: float = 0.2
    min_color_distance: float = 60.0
    ignore_band: int = 0
    scribbles: bool = False
    figures: bool = False
    min_figure_size: float = 0.3
    max_figure_size: float = 0.8
    figure_truncation: float = 0.15

    def __post_init__(self) -> None:
        size = self.image_size
        sizes = size if isinstance(size, (tuple, list)) else (size,)
        if len(sizes) not in (1, 2):
            raise ValueError(f"image_size must be an int or (height, width), got {size!r}")
        for value in sizes:
            _check_int("image_size", value, low=16)
        if isinstance(size, list):  # keep the frozen config hashable
            object.__setattr__(self, "image_size", tuple(size))
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))
        _check_int("min_objects", self.min_objects, low=0, high=255)
        _check_int("max_objects", self.max_objects, low=0, high=255)
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"min_objects must be <= max_objects, got min_objects={self.min_objects} "
                f"and max_objects={self.max_objects}"
            )
        _check_float("min_object_size", self.min_object_size, low=0.0, high=1.0, low_open=True)
        _check_float("max_object_size", self.max_object_size, low=0.0, high=1.0, low_open=True)
        if self.min_object_size > self.max_object_size:
            raise ValueError(
                f"min_object_size must be <= max_object_size, got {self.min_object_size} "
                f"and {self.max_object_size}"
            )
        if not isinstance(self.figures, bool):
            raise ValueError(f"figures must be true or false, got {self.figures!r}")
        self._validate_classes()
        if self.background not in BACKGROUND_MODES:
            raise ValueError(
                f"background must be one of {BACKGROUND_MODES}, got {self.background!r}"
            )
        _check_int("clutter", self.clutter, low=0)
        _check_float("clutter_over_objects", self.clutter_over_objects, low=0.0, high=1.0)
        _check_float("max_occlusion", self.max_occlusion, low=0.0, high=1.0)
        _check_int("min_visible_area", self.min_visible_area, low=1)
        _check_float("aspect_jitter", self.aspect_jitter, low=0.0, high=0.9)
        _check_float("min_color_distance", self.min_color_distance, low=0.0, high=442.0)
        _check_int("ignore_band", self.ignore_band, low=0)
        _check_float("min_figure_size", self.min_figure_size, low=0.0, high=1.0, low_open=True)
        _check_float("max_figure_size", self.max_figure_size, low=0.0, high=1.0, low_open=True)
        if self.min_figure_size > self.max_figure_size:
            raise ValueError(
                f"min_figure_size must be <= max_figure_size, got {self.min_figure_size} "
                f"and {self.max_figure_size}"
            )
        _check_float("figure_truncation", self.figure_truncation, low=0.0, high=1.0)
        if not isinstance(self.scribbles, bool):
            raise ValueError(f"scribbles must be true or false, got {self.scribbles!r}")

    def _validate_classes(self) -> None:
        if isinstance(self.classes, str) or (len(self.classes) == 0 and not self.figures):
            raise ValueError(
                f"classes must be a non-empty tuple of names (empty only with figures=true), "
                f"got {self.classes!r}"
            )
        unknown = [name for name in self.classes if name not in SHAPE_POLYGONS]
        if unknown:
            raise ValueError(f"classes has unknown names {unknown}; known: {tuple(SHAPE_POLYGONS)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must not repeat a name, got {self.classes!r}")

    @property
    def image_hw(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        size = self.image_size
        if isinstance(size, (tuple, list)):
            return int(size[0]), int(size[1])
        return int(size), int(size)


# --------------------------------------------------------------------------- colours


def _random_color(rng: np.random.Generator) -> Color:
    red, green, blue = (rng.random(3) * 256.0).astype(int).tolist()
    return red, green, blue


def _contrasting_colors(
    rng: np.random.Generator, *, background: Background, count: int, min_distance: float
) -> list[Color]:
    """``count`` random colours, each at least ``min_distance`` (RGB Euclidean) from the
    segment ``color_a``–``color_b`` of the background and from the colours chosen before it,
    when one of :data:`_COLOR_CANDIDATES` candidates allows; otherwise the farthest candidate.
    """
    candidates = np.floor(rng.random((count * _COLOR_CANDIDATES, 3)) * 256.0)  # (M, 3)
    start = np.asarray(background.color_a, dtype=np.float64)  # (3,)
    direction = np.asarray(background.color_b, dtype=np.float64) - start  # (3,)
    offsets = candidates - start  # (M, 3)
    length_sq = float(direction @ direction)
    t = (
        np.clip(offsets @ direction / length_sq, 0.0, 1.0)
        if length_sq > 0
        else np.zeros(len(offsets))
    )
    to_background = offsets - t[:, None] * direction  # (M, 3)
    bg_dist_sq = np.einsum("md,md->m", to_background, to_background)  # (M,)
    sq_norms = np.einsum("md,md->m", candidates, candidates)
    pair_dist_sq = sq_norms[:, None] + sq_norms[None, :] - 2.0 * candidates @ candidates.T  # (M, M)
    threshold = min_distance * min_distance
    picked: list[int] = []
    for k in range(count):
        rows = slice(k * _COLOR_CANDIDATES, (k + 1) * _COLOR_CANDIDATES)
        dist_sq = bg_dist_sq[rows]  # (C,)
        if picked:
            dist_sq = np.minimum(dist_sq, pair_dist_sq[rows, picked].min(axis=1))
        good = np.flatnonzero(dist_sq >= threshold)
        picked.append(k * _COLOR_CANDIDATES + int(good[0] if good.size else dist_sq.argmax()))
    return [(int(r), int(g), int(b)) for r, g, b in candidates[picked].astype(int).tolist()]


# --------------------------------------------------------------------------- background


def _sample_background(rng: np.random.Generator, config: ShapesConfig) -> Background:
    color_a = _random_color(rng)
    if config.background == "plain":
        return Background(kind="plain", color_a=color_a, color_b=color_a)
    kind = _TEXTURED_KINDS[int(rng.integers(len(_TEXTURED_KINDS)))]
    return Background(
        kind=kind,
        color_a=color_a,
        color_b=_random_color(rng),
        angle=float(rng.uniform(0.0, math.pi)),
        period=float(rng.uniform(4.0, 24.0)) * min(config.image_hw) / 128.0,
        texture_seed=int(rng.integers(2**31)),
        grain=float(rng.uniform(0.0, 12.0)),
    )


# --------------------------------------------------------------------------- occlusion


class _OcclusionLedger:
    """Instance map plus full and visible areas of the objects placed so far."""

    def __init__(self, image_size: tuple[int, int], *, max_occlusion: float, min_visible: int):
        self.image_size = image_size
        self.instance_map = np.zeros(image_size, dtype=np.uint8)  # (H, W)
        self.min_keep = np.zeros(0)  # (n,) fewest pixels each object must keep visible
        self.visible = np.zeros(0, dtype=np.int64)  # (n,)
        self.max_occlusion = max_occlusion
        self.min_visible = min_visible

    def _visible_after(self, covered_ids: np.ndarray) -> np.ndarray | None:
        """Visible areas after hiding the pixels whose current ids are ``covered_ids``."""
        hidden = np.bincount(covered_ids, minlength=self.visible.shape[0] + 1)[1:]
        visible = self.visible - hidden
        return visible if bool(np.all(visible >= self.min_keep)) else None

    def try_object(self, obj: ShapeObject | StickFigure) -> bool:
        """Place ``obj`` on top if it is big enough and hides no earlier object too much."""
        y0, x0, mask = rasterize_object(obj, image_size=self.image_size)
        area = int(mask.sum())
        if area < self.min_visible:
            return False
        region = self.instance_map[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        visible = self._visible_after(region[mask])
        if visible is None:
            return False
        region[mask] = self.visible.shape[0] + 1
        self.visible = np.append(visible, area)
        self.min_keep = np.append(
            self.min_keep, max(self.min_visible, (1 - self.max_occlusion) * area)
        )
        return True

    def try_stroke(self, stroke: Stroke) -> bool:
        """Draw ``stroke`` over the objects placed so far if it hides none of them too much."""
        mask = stroke_mask(stroke, image_size=self.image_size)
        visible = self._visible_after(self.instance_map[mask])
        if visible is None:
            return False
        self.instance_map[mask] = 0
        self.visible = visible
        return True


# --------------------------------------------------------------------------- objects


def _sample_figure(
    rng: np.random.Generator, config: ShapesConfig, *, size_scale: float, color: Color
) -> StickFigure:
    low, high = math.log(config.min_figure_size), math.log(config.max_figure_size)
    fraction = math.exp(low + rng.random() * (high - low))
    return sample_figure(
        rng,
        image_size=config.image_hw,
        height=max(fraction * size_scale, config.min_figure_size) * min(config.image_hw),
        label=len(config.classes) + 1,
        color=color,
        truncation=config.figure_truncation,
    )


def _sample_object(
    rng: np.random.Generator, config: ShapesConfig, *, size_scale: float, color: Color
) -> ShapeObject | StickFigure:
    height, width = config.image_hw
    short_side = min(height, width)
    log_low, log_high = math.log(config.min_object_size), math.log(config.max_object_size)
    u = rng.random(6)
    fraction = math.exp(log_low + u[0] * (log_high - log_low))
    size = max(fraction * size_scale, config.min_object_size) * short_side
    radius = 0.5 * size
    class_index = int(u[1] * (len(config.classes) + config.figures))
    if class_index == len(config.classes):  # the extra "person" class
        return _sample_figure(rng, config, size_scale=size_scale, color=color)
    return ShapeObject(
        shape=config.classes[class_index],
        label=class_index + 1,
        center=(radius + u[2] * (width - size), radius + u[3] * (height - size)),
        size=size,
        rotation=2.0 * math.pi * u[4],
        color=color,
        aspect=1.0 - config.aspect_jitter * u[5],
    )


def _place_object(
    rng: np.random.Generator, config: ShapesConfig, ledger: _OcclusionLedger, *, color: Color
) -> ShapeObject | StickFigure | None:
    """Draw objects until one fits; each failed attempt shrinks the next one a little."""
    for attempt in range(_MAX_PLACEMENT_ATTEMPTS):
        obj = _sample_object(rng, config, size_scale=_SHRINK_PER_ATTEMPT**attempt, color=color)
        if ledger.try_object(obj):
            return obj
    return None


# --------------------------------------------------------------------------- strokes


def _stroke_points(rng: np.random.Generator, *, image_size: tuple[int, int]) -> np.ndarray:
    """Vertices ``(K, 2)`` of a line, a scribble (random walk) or an open arc."""
    height, width = image_size
    short_side = min(height, width)
    u = rng.random(6)
    start = np.array([u[0] * width, u[1] * height])
    kind = int(u[2] * 3)
    if kind == 0:  # straight line
        angle, length = 2 * math.pi * u[3], (0.15 + 0.55 * u[4]) * short_side
        return np.stack([start, start + length * np.array([math.cos(angle), math.sin(angle)])])
    if kind == 1:  # scribble: a short random walk that turns at every step
        steps = 3 + int(4 * u[3])
        walk = rng.random((2, steps))
        angles = 2 * math.pi * u[4] + np.cumsum(3.0 * walk[0] - 1.5)
        lengths = (0.04 + 0.11 * walk[1]) * short_side
        moves = lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return start + np.concatenate([np.zeros((1, 2)), np.cumsum(moves, axis=0)])
    radius = (0.05 + 0.25 * u[3]) * short_side  # open arc spanning 60 to 240 degrees
    angles = 2 * math.pi * u[4] + np.linspace(0.0, math.pi / 3 + math.pi * u[5], 16)
    return start + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _sample_stroke(rng: np.random.Generator, config: ShapesConfig, *, z: int) -> Stroke:
    points = _stroke_points(rng, image_size=config.image_hw)  # (K, 2)
    max_thickness = max(1, round(3 * min(config.image_hw) / 128))
    return Stroke(
        points=tuple(map(tuple, points.tolist())),
        thickness=1 + int(rng.random() * max_thickness),
        color=_random_color(rng),
        z=z,
    )


def _stroke_levels(
    rng: np.random.Generator, config: ShapesConfig, *, num_objects: int
) -> list[int]:
    """For each stroke, the number of objects it is drawn above (0 = on the background)."""
    num_strokes = int(rng.integers(config.clutter + 1))
    if num_objects == 0:
        return [0] * num_strokes
    over = rng.random(num_strokes) < config.clutter_over_objects  # (S,)
    above = rng.integers(1, num_objects + 1, size=num_strokes)  # (S,)
    return np.where(over, above, 0).tolist()


def _place_strokes(
    rng: np.random.Generator, config: ShapesConfig, ledger: _OcclusionLedger, *, z: int, count: int
) -> list[Stroke]:
    """``count`` strokes at level ``z``; a stroke that hides too much is re-drawn or dropped."""
    placed = []
    for _ in range(count):
        for _attempt in range(_MAX_STROKE_ATTEMPTS):
            stroke = _sample_stroke(rng, config, z=z)
            if z == 0 or ledger.try_stroke(stroke):
                placed.append(stroke)
                break
    return placed


# --------------------------------------------------------------------------- scene


def sample_scene(rng: np.random.Generator, config: ShapesConfig) -> Scene:
    """Draw a random scene: background, ``[min_objects, max_objects]`` objects, strokes.

    Objects are placed back to front; every object of the returned scene keeps at least
    ``max(min_visible_area, (1 - max_occlusion) * full area)`` visible pixels. If the image is too
    crowded for an object after the allowed attempts (each shrinking the object), the scene gets
    fewer objects; at the default settings this does not happen.
    """
    image_size = config.image_hw
    background = _sample_background(rng, config)
    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    levels = _stroke_levels(rng, config, num_objects=num_objects)
    ledger = _OcclusionLedger(
        image_size, max_occlusion=config.max_occlusion, min_visible=config.min_visible_area
    )
    colors = _contrasting_colors(
        rng, background=background, count=num_objects, min_distance=config.min_color_distance
    )
    objects: list[ShapeObject | StickFigure] = []
    strokes = _place_strokes(rng, config, ledger, z=0, count=levels.count(0))
    for level in range(1, num_objects + 1):
        obj = _place_object(rng, config, ledger, color=colors[level - 1])
        if obj is None:
            break
        objects.append(obj)
        strokes += _place_strokes(rng, config, ledger, z=level, count=levels.count(level))
    missing = sum(1 for z in levels if z > len(objects))  # objects that found no room
    strokes += _place_strokes(rng, config, ledger, z=len(objects), count=missing)
    return Scene(
        image_size=image_size, background=background, objects=tuple(objects), strokes=tuple(strokes)
    )


def sample_rng(*, seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split``; independent across seeds/splits/indices."""
    _check_int("seed", seed, low=0)
    _check_int("index", index, low=0)
    split_code = zlib.crc32(split.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([_STREAM_TAG, seed, split_code, index]))


# --------------------------------------------------------------------------- dataset


def _config_with_overrides(config: ShapesConfig | None, overrides: dict[str, Any]) -> ShapesConfig:
    known = {f.name for f in fields(ShapesConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown ShapesConfig fields {unknown}; known: {sorted(known)}")
    if config is not None and not isinstance(config, ShapesConfig):
        raise ValueError(f"config must be a ShapesConfig or None, got {type(config).__name__}")
    return replace(config if config is not None else ShapesConfig(), **overrides)


def _to_tensors(image: np.ndarray, arrays: dict[str, np.ndarray], *, index: int) -> tuple:
    # numpy, not torch: no intra-op thread pool to contend with data-loader workers
    chw = np.empty((3, *image.shape[:2]), dtype=np.float32)  # (3, H, W), C-contiguous
    for channel, plane in enumerate(cv2.split(image)):
        np.divide(plane.astype(np.float32), np.float32(255.0), out=chw[channel])
    image_t = torch.from_numpy(chw)
    num = arrays["labels"].shape[0]
    target = {
        "boxes": torch.from_numpy(arrays["boxes"]),  # (N, 4) xyxy
        "labels": torch.from_numpy(arrays["labels"]),  # (N,)
        "masks": torch.from_numpy(arrays["masks"]),  # (N, H, W)
        "semantic": torch.from_numpy(arrays["semantic"]),  # (H, W)
        "image_id": torch.tensor(index, dtype=torch.int64),
        "area": torch.from_numpy(arrays["area"]),  # (N,)
        "iscrowd": torch.zeros(num, dtype=torch.int64),  # (N,)
    }
    if "semantic_full" in arrays:
        target["semantic_full"] = torch.from_numpy(arrays["semantic_full"])  # (H, W)
    return image_t, target


class ShapesDataset(Dataset):
    """Procedural shapes with exact boxes, visible instance masks and a semantic map.

    ``dataset[i]`` returns ``(image, target)``: ``image (3, H, W)`` float32 RGB in ``[0, 1]``;
    ``target`` has ``boxes (N, 4)`` float32 xyxy absolute pixels with ``x2 = max_col + 1``,
    ``labels (N,)`` int64 in ``1..K``, ``masks (N, H, W)`` uint8 visible masks, ``semantic
    (H, W)`` int64 (0 background, 255 ignore band), ``image_id`` int64 scalar (= ``i``),
    ``area (N,)`` float32 visible pixels, ``iscrowd (N,)`` int64 zeros. With
    ``scribbles=True``, ``semantic`` holds scribble labels (255 off the strokes) and
    ``semantic_full (H, W)`` int64 the exact map. With ``figures=True`` (and in
    :class:`ShapesPoseDataset`) ``keypoints (N, K, 3)`` float32 ``(x, y, visibility)`` in
    continuous pixel coordinates, COCO visibility; all zeros for objects that are not figures
    (see :mod:`~structvision.data.synthetic.figures`). Instances are in z-order,
    back to front. Samples are fully determined by ``(seed, split, i)``; no global RNG is used.

    Args:
        split: any name; different names give disjoint random streams (``"train"``, ``"val"``).
        num_images: length of the dataset.
        seed: non-negative int.
        config: base configuration (default :class:`ShapesConfig()`).
        transforms: optional callable ``transforms(image, target) -> (image, target)``.
        **config_overrides: fields of :class:`ShapesConfig` that replace the base config's.

    Attributes:
        class_names: ``("__background__", *classes)``, plus ``"person"`` with figures.
        categories: COCO categories; the person category lists its ``keypoints`` (names) and
            ``skeleton`` (1-based pairs), as COCO's does.
        keypoint_names / skeleton / keypoint_flip_pairs / keypoint_sigmas: the figures'
            keypoints, limbs (0-based pairs), left/right index pairs for
            :class:`~structvision.data.transforms.RandomHorizontalFlip` and OKS sigmas for
            :class:`~structvision.evaluation.COCOEvaluator`; empty without figures.
        num_keypoints: ``K`` (0 without figures).
    """

    def __init__(
        self,
        *,
        split: str = "train",
        num_images: int = 1000,
        seed: int = 0,
        config: ShapesConfig | None = None,
        transforms: Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]] | None = None,
        **config_overrides: Any,
    ) -> None:
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        _check_int("num_images", num_images, low=0)
        _check_int("seed", seed, low=0)
        self.split = split
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.config = _config_with_overrides(config, config_overrides)
        self.transforms = transforms
        # Indexed by label, torchvision's convention: index 0 is the background.
        figures = self.config.figures
        self.class_names: tuple[str, ...] = (
            "__background__",
            *self.config.classes,
            *(("person",) if figures else ()),
        )
        self.categories: list[dict[str, Any]] = [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(self.config.classes)
        ]
        if figures:
            self.categories.append(person_category(len(self.config.classes) + 1))
        self.label_to_category_id: dict[int, int] = {c["id"]: c["id"] for c in self.categories}
        self.keypoint_names: tuple[str, ...] = KEYPOINT_NAMES if figures else ()
        self.num_keypoints = len(self.keypoint_names)
        self.skeleton: tuple[tuple[int, int], ...] = SKELETON if figures else ()
        self.keypoint_flip_pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS if figures else ()
        self.keypoint_sigmas: tuple[float, ...] = KEYPOINT_SIGMAS if figures else ()

    def __len__(self) -> int:
        return self.num_images

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for ShapesDataset of {self.num_images}")
        return int(index)

    def scene(self, index: int) -> Scene:
        """The scene behind sample ``index`` (for inspection, or to re-render it differently)."""
        index = self._check_index(index)
        rng = sample_rng(seed=self.seed, split=self.split, index=index)
        return sample_scene(rng, self.config)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scene = self.scene(index)
        rendered = render_scene(scene)
        labels = np.array([obj.label for obj in scene.objects], dtype=np.int64)
        arrays = instance_targets(
            rendered.instance_map, labels=labels, ignore_band=self.config.ignore_band
        )
        if self.config.scribbles:
            rng = scribble_rng(seed=self.seed, split=self.split, index=int(index))
            arrays["semantic_full"] = arrays["semantic"]
            arrays["semantic"] = scribble_labels(
                arrays["semantic"], masks=arrays["masks"], labels=arrays["labels"], rng=rng
            )
        image, target = _to_tensors(rendered.image, arrays, index=int(index))
        if self.config.figures:
            keypoints = keypoint_targets(
                scene.objects, rendered.instance_map, object_index=arrays["object_index"]
            )
            target["keypoints"] = torch.from_numpy(keypoints)  # (N, K, 3)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, num_images={self.num_images}, "
            f"seed={self.seed}, "
            f"config={self.config})"
        )


POSE_CONFIG = ShapesConfig(
    classes=(),
    figures=True,
    min_objects=1,
    max_objects=4,
    min_figure_size=0.35,
    max_figure_size=0.9,
    min_visible_area=24,
)
"""Defaults of ``shapes-pose``: one to four stick figures, clutter and textures as in ``shapes``."""


class ShapesPoseDataset(ShapesDataset):
    """The ``shapes-pose`` generator: only stick figures (class ``"person"``, label 1) with
    keypoints, for human-pose training (Mask R-CNN's keypoint head).

    Same sample format, arguments and attributes as :class:`ShapesDataset`, whose base
    configuration here is :data:`POSE_CONFIG` (1-4 figures, sometimes overlapping, heights 35-90%
    of the shorter side); ``config`` and ``**config_overrides`` replace it as there.
    """

    def __init__(
        self,
        *,
        split: str = "train",
        num_images: int = 1000,
        seed: int = 0,
        config: ShapesConfig | None = None,
        transforms: Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]] | None = None,
        **config_overrides: Any,
    ) -> None:
        super().__init__(
            split=split,
            num_images=num_images,
            seed=seed,
            config=POSE_CONFIG if config is None else config,
            transforms=transforms,
            **config_overrides,
        )
