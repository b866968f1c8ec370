"""Scribble annotations drawn from exact label maps, for weakly supervised segmentation.

ScribbleSup (Lin et al. 2016) and Tang et al. (2018, "On Regularized Losses for
Weakly-supervised CNN Segmentation") train on a few strokes per image: one per object through
its interior and some on the background, about 3% of the pixels. :func:`scribble_labels`
makes such a label map from the ``shapes`` ground truth: ``255`` (unlabelled) everywhere
except on the strokes, which carry their region's class.

A stroke is built inside one *region* (an object's visible pixels, or all background pixels):

1. ``dist``: Euclidean distance of every region pixel to the nearest pixel outside the region
   (the image border counts as outside). ``dist >= 2`` are the *safe* pixels, exactly those
   whose 8 neighbours all lie in the region.
2. The centre line lives on a *core* of safe pixels deep enough for the stroke's width. For
   an object the core also keeps only pixels with ``dist >= 0.3 * max(dist)`` (0.3 of the
   inscribed radius, so the line keeps away from the boundary) in the 8-connected component
   holding the deepest pixel.
3. Objects: the longest geodesic path found by two breadth-first searches (random start ->
   farthest ``a`` -> farthest ``b``), of which a random 60–100% piece is kept. Background: a
   path of a given geodesic length from a random start. Walking back along the search, each
   step takes the deepest admissible neighbour, which pulls the line towards the medial axis.
4. The line is widened to 1–3 pixels and cut to the safe pixels, so a stroke pixel never has
   an 8-neighbour of another region (another class, another object, the 255 band).

Regions without safe pixels (thinner than 3 pixels everywhere) get no stroke.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

__all__ = ["labelled_fraction", "scribble_labels", "scribble_rng"]

IGNORE_INDEX = 255
_SCRIBBLE_TAG = zlib.crc32(b"structvision.shapes.scribbles")
_KERNEL = np.ones((3, 3), dtype=np.uint8)
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_SAFE_DEPTH = 2.0  # dist >= 2 <=> all 8 neighbours inside the region
_OBJECT_MEDIAL_FRACTION = 0.3
_OBJECT_PIECE = (0.6, 1.0)  # fraction of the longest path an object's stroke keeps
_BACKGROUND_LENGTH = (0.2, 0.4)  # background stroke length, fraction of the shorter side


def scribble_rng(*, seed: int, split: str, index: int) -> np.random.Generator:
    """The scribbles' own random stream for sample ``index`` of ``split``; independent of the
    stream that draws the scene, so turning scribbles on leaves images unchanged."""
    split_code = zlib.crc32(split.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([_SCRIBBLE_TAG, seed, split_code, index]))


def scribble_labels(
    semantic: np.ndarray,
    *,
    masks: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    background_strokes: int = 4,
    max_width: int = 3,
) -> np.ndarray:
    """A scribble label map from exact ground truth.

    Args:
        semantic: ``(H, W)`` int label map: 0 background, ``1..K`` classes, 255 ignore.
        masks: ``(N, H, W)`` uint8/bool visible masks of the objects.
        labels: ``(N,)`` int class of each object (its pixels in ``semantic`` carry it).
        rng: numpy generator; the result is a pure function of the inputs and its state.
        background_strokes: number of strokes labelled 0 (fewer if the background is thin).
        max_width: strokes are 1 to ``max_width`` (at most 3) pixels wide.

    Returns:
        ``(H, W)`` int64: 255 except on the strokes, which hold their region's label. Every
        labelled pixel equals ``semantic`` there, and none has an 8-neighbour outside its
        region. One stroke per object that has a pixel with all 8 neighbours inside it.
    """
    if semantic.ndim != 2:
        raise ValueError(f"semantic must be (H, W), got {semantic.shape}")
    masks = np.asarray(masks).reshape(-1, *semantic.shape)  # (N, H, W)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # (N,)
    if masks.shape[0] != labels.shape[0]:
        raise ValueError(f"masks {masks.shape} and labels {labels.shape} disagree on N")
    if not 1 <= max_width <= 3 or background_strokes < 0:
        raise ValueError(
            f"max_width must be in [1, 3] and background_strokes >= 0, got {max_width} "
            f"and {background_strokes}"
        )
    scribbles = np.full(semantic.shape, IGNORE_INDEX, dtype=np.int64)  # (H, W)
    for mask, label in zip(masks, labels.tolist(), strict=True):
        region = (mask != 0) & (semantic == label)
        stroke = _object_stroke(region, rng=rng, max_width=max_width)
        scribbles[stroke] = label
    background_depth = _depth(semantic == 0)  # (H, W)
    short_side = min(semantic.shape)
    for _ in range(background_strokes):
        length = round(rng.uniform(*_BACKGROUND_LENGTH) * short_side)
        stroke = _background_stroke(background_depth, rng=rng, length=length, max_width=max_width)
        scribbles[stroke] = 0
    return scribbles


def labelled_fraction(scribbles: np.ndarray) -> float:
    """Fraction of the pixels of a scribble map that carry a label (not 255)."""
    return float(np.count_nonzero(scribbles != IGNORE_INDEX)) / max(scribbles.size, 1)


# --------------------------------------------------------------------------- one stroke


def _object_stroke(region: np.ndarray, *, rng: np.random.Generator, max_width: int) -> np.ndarray:
    """Bool ``(H, W)`` stroke along a piece of the region's longest interior path."""
    stroke = np.zeros(region.shape, dtype=bool)
    box = _bounding_box(region)
    if box is None:
        return stroke
    rows, cols = box
    crop = region[rows, cols]
    depth = _depth(crop)  # (h, w) float32
    width = int(rng.integers(1, max_width + 1))
    min_depth = max(_SAFE_DEPTH + width // 2, _OBJECT_MEDIAL_FRACTION * float(depth.max()))
    core = _core(depth, min_depth=min_depth)
    if core is None:
        return stroke
    core = _deepest_component(core, depth)
    start = _random_pixel(core, rng)
    first = _geodesic_distances(core, start)
    end_a = np.unravel_index(int(first.argmax()), first.shape)
    from_a = _geodesic_distances(core, end_a)
    end_b = np.unravel_index(int(from_a.argmax()), from_a.shape)
    path = _walk_back(from_a, depth, end_b)  # (L, 2) rows/cols, b -> a
    keep = max(1, round(rng.uniform(*_OBJECT_PIECE) * len(path)))
    offset = int(rng.integers(len(path) - keep + 1))
    stroke[rows, cols] = _draw(path[offset : offset + keep], depth, width)
    return stroke


def _background_stroke(
    depth: np.ndarray, *, rng: np.random.Generator, length: int, max_width: int
) -> np.ndarray:
    """Bool ``(H, W)`` stroke of about ``length`` pixels from a random background pixel, given
    the background's ``depth`` (see :func:`_depth`)."""
    stroke = np.zeros(depth.shape, dtype=bool)
    width = int(rng.integers(1, max_width + 1))
    core = _core(depth, min_depth=_SAFE_DEPTH + width // 2)
    if core is None:
        return stroke
    row, col = _random_pixel(core, rng)
    # the path cannot leave the window of radius ``length`` around its start
    rows = slice(max(row - length, 0), row + length + 1)
    cols = slice(max(col - length, 0), col + length + 1)
    start = (row - rows.start, col - cols.start)
    distances = _geodesic_distances(core[rows, cols], start, limit=length)
    ends = np.argwhere(distances == distances.max())  # (M, 2)
    end = tuple(ends[int(rng.integers(len(ends)))])
    path = _walk_back(distances, depth[rows, cols], end)
    stroke[rows, cols] = _draw(path, depth[rows, cols], width)
    return stroke


# --------------------------------------------------------------------------- helpers


def _bounding_box(region: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _depth(region: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 Euclidean distance to the nearest pixel outside ``region`` (bool);
    pixels beyond the image border count as outside."""
    padded = np.pad(region.astype(np.uint8), 1)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return depth[1:-1, 1:-1]


def _core(depth: np.ndarray, *, min_depth: float) -> np.ndarray | None:
    """Bool ``depth >= min_depth``, lowered to the deepest pixel's depth if none is that deep;
    ``None`` if no pixel of the region is safe."""
    deepest = float(depth.max(initial=0.0))
    if deepest < _SAFE_DEPTH:
        return None
    return depth >= min(min_depth, deepest)


def _deepest_component(mask: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The 8-connected component of ``mask`` (bool) that holds its deepest pixel."""
    _, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    deepest_at = np.unravel_index(int(np.where(mask, depth, -1.0).argmax()), depth.shape)
    return components == components[deepest_at]


def _random_pixel(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    pixels = np.argwhere(mask)  # (M, 2)
    row, col = pixels[int(rng.integers(len(pixels)))]
    return int(row), int(col)


def _geodesic_distances(
    mask: np.ndarray, source: tuple[int, int], *, limit: int | None = None
) -> np.ndarray:
    """``(H, W)`` int32 8-connected path length from ``source`` inside ``mask`` (bool);
    -1 where not reached (outside, or beyond ``limit`` steps)."""
    inside = mask.astype(np.uint8)
    distances = np.full(mask.shape, -1, dtype=np.int32)
    distances[source] = 0
    reached = np.zeros_like(inside)
    reached[source] = 1
    step = 0
    while limit is None or step < limit:
        grown = cv2.bitwise_and(cv2.dilate(reached, _KERNEL), inside)
        new = cv2.subtract(grown, reached)
        if cv2.countNonZero(new) == 0:
            break
        step += 1
        distances[new.view(bool)] = step
        reached = grown
    return distances


def _walk_back(distances: np.ndarray, depth: np.ndarray, end: tuple[int, int]) -> np.ndarray:
    """``(L, 2)`` pixels (row, col) from ``end`` down to the search's source (distance 0),
    each step to the deepest 8-neighbour one step closer."""
    height, width = distances.shape
    row, col = int(end[0]), int(end[1])
    path = [(row, col)]
    while distances[row, col] > 0:
        closer = distances[row, col] - 1
        steps = [
            (row + dr, col + dc)
            for dr, dc in _NEIGHBOURS
            if 0 <= row + dr < height
            and 0 <= col + dc < width
            and distances[row + dr, col + dc] == closer
        ]
        row, col = max(steps, key=lambda p: depth[p])
        path.append((row, col))
    return np.asarray(path, dtype=np.int32)


def _draw(path: np.ndarray, depth: np.ndarray, width: int) -> np.ndarray:
    """Bool mask of the 8-connected ``(L, 2)`` row/col path widened to ``width`` pixels (a
    2 x 2 square brush for 2, a 3 x 3 cross for 3, so diagonals are no wider than straight
    lines), cut to the safe pixels (``depth >= 2``)."""
    canvas = np.zeros(depth.shape, dtype=np.uint8)
    canvas[path[:, 0], path[:, 1]] = 1
    if width > 1:
        shape = cv2.MORPH_RECT if width == 2 else cv2.MORPH_CROSS
        canvas = cv2.dilate(canvas, cv2.getStructuringElement(shape, (width, width)))
    return (canvas != 0) & (depth >= _SAFE_DEPTH)
