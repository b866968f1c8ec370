"""Render a :class:`~structvision.data.synthetic.scene.Scene` and derive exact ground truth.

The painter draws back to front and keeps an *instance map* ``(H, W)``: for every pixel, the
1-based index of the scene object that is visible there, or 0 for background and for stroke
pixels drawn over objects. All ground truth (masks, boxes, areas, semantic map, and later
disparity or flow via a per-object lookup table) is read off that map, so it is exactly the set
of pixels that carry each object's colour.

Box convention: ``xyxy`` in absolute pixels with ``x1 = min_col``, ``y1 = min_row``,
``x2 = max_col + 1``, ``y2 = max_row + 1`` — the box covers the visible pixels completely,
``(x2 - x1) * (y2 - y1)`` counts pixels, and it equals
``torchvision.ops.masks_to_boxes(masks) + [0, 0, 1, 1]`` and COCO's ``bbox`` of the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from structvision.data.synthetic.geometry import draw_stroke, rasterize_object
from structvision.data.synthetic.scene import Scene
from structvision.data.synthetic.textures import render_background_planes

IGNORE_INDEX = 255
"""Value of ``semantic`` pixels that a loss or metric must ignore."""


@dataclass(frozen=True)
class RenderedScene:
    """Pixels of a rendered scene.

    Attributes:
        image: RGB ``(H, W, 3)`` ``uint8``.
        instance_map: ``(H, W)`` ``uint8``; ``k + 1`` where ``scene.objects[k]`` is visible,
            0 for background and for stroke pixels drawn over objects.
    """

    image: np.ndarray
    instance_map: np.ndarray


def _validate_scene(scene: Scene) -> None:
    if len(scene.objects) > 255:
        raise ValueError(f"scene.objects must hold at most 255 objects, got {len(scene.objects)}")
    for stroke in scene.strokes:
        if not 0 <= stroke.z <= len(scene.objects):
            raise ValueError(
                f"stroke.z must be in [0, {len(scene.objects)}] (number of objects), got {stroke.z}"
            )


def render_scene(scene: Scene) -> RenderedScene:
    """Paint ``scene`` back to front: background, then strokes and objects in z-order."""
    _validate_scene(scene)
    image_size = scene.image_size
    planes = render_background_planes(scene.background, image_size=image_size)  # 3 x (H, W)
    instance_map = np.zeros(image_size, dtype=np.uint8)  # (H, W)
    strokes_at = [[] for _ in range(len(scene.objects) + 1)]
    for stroke in scene.strokes:
        strokes_at[stroke.z].append(stroke)
    for level, strokes in enumerate(strokes_at):
        for stroke in strokes:
            for plane, value in zip(planes, stroke.color, strict=True):
                draw_stroke(plane, stroke, color=value)
            if level > 0:
                draw_stroke(instance_map, stroke, color=0)
        if level == len(scene.objects):
            break
        obj = scene.objects[level]
        y0, x0, mask = rasterize_object(obj, image_size=image_size)
        rows, cols = slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1])
        for plane, value in zip(planes, obj.color, strict=True):
            plane[rows, cols][mask] = value
        instance_map[rows, cols][mask] = level + 1
    return RenderedScene(image=cv2.merge(planes), instance_map=instance_map)


def masks_from_instance_map(instance_map: np.ndarray, *, num_instances: int) -> np.ndarray:
    """Binary masks ``(num_instances, H, W)`` ``uint8``: mask ``k`` is ``instance_map == k + 1``."""
    ids = np.arange(1, num_instances + 1, dtype=instance_map.dtype)[:, None, None]
    return (instance_map[None] == ids).view(np.uint8)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` boxes ``(N, 4)`` float32 of non-empty masks ``(N, H, W)``.

    ``x2 = max_col + 1`` and ``y2 = max_row + 1`` (see the module docstring).
    """
    # cv2.boundingRect of a uint8 mask is (min_col, min_row, width, height) of its non-zeros
    xywh = np.array([cv2.boundingRect(mask) for mask in masks], dtype=np.float32)
    boxes = xywh.reshape(-1, 4)  # (N, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def boundary_band(instance_map: np.ndarray, *, width: int) -> np.ndarray:
    """Bool ``(H, W)``: pixels within ``width`` pixels (Chebyshev distance) of a pixel with a
    different instance-map value. The band is ``2 * width`` pixels wide, centred on each
    boundary; the image border is not a boundary.
    """
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width}")
    if width == 0:
        return np.zeros(instance_map.shape, dtype=bool)
    kernel = np.ones((2 * width + 1, 2 * width + 1), dtype=np.uint8)
    local_max = cv2.dilate(instance_map, kernel)
    local_min = cv2.erode(instance_map, kernel)
    return local_max != local_min


def instance_targets(
    instance_map: np.ndarray, *, labels: np.ndarray, ignore_band: int = 0
) -> dict[str, np.ndarray]:
    """Ground truth read off an instance map.

    Args:
        instance_map: ``(H, W)`` ``uint8``, ``k + 1`` where object ``k`` is visible.
        labels: ``(num_objects,)`` class id of every scene object, ``>= 1``.
        ignore_band: half-width in pixels of the band around boundaries that is set to
            :data:`IGNORE_INDEX` in ``semantic`` (see :func:`boundary_band`); 0 for none.

    Returns:
        Numpy arrays for the ``N`` objects with at least one visible pixel, in z-order (back to
        front): ``boxes (N, 4)`` float32 xyxy, ``labels (N,)`` int64, ``masks (N, H, W)`` uint8,
        ``area (N,)`` float32 visible pixel count, ``object_index (N,)`` int64 position in
        ``scene.objects``, and ``semantic (H, W)`` int64 (label of the top-most object, 0 for
        background).
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # (num_objects,)
    if int(instance_map.max(initial=0)) > labels.shape[0]:
        raise ValueError(
            f"instance_map holds ids up to {int(instance_map.max())} but labels has shape "
            f"{labels.shape}"
        )
    all_masks = masks_from_instance_map(instance_map, num_instances=labels.shape[0])
    counts = np.array([cv2.countNonZero(mask) for mask in all_masks], dtype=np.int64)
    object_index = np.flatnonzero(counts > 0)
    masks = all_masks if object_index.size == counts.size else all_masks[object_index]
    label_of_id = np.concatenate([[0], labels])  # (num_objects + 1,)
    semantic = np.take(label_of_id, instance_map)  # (H, W) int64
    if ignore_band > 0:
        semantic[boundary_band(instance_map, width=ignore_band)] = IGNORE_INDEX
    return {
        "boxes": boxes_from_masks(masks),
        "labels": labels[object_index],
        "masks": masks,
        "area": counts[object_index].astype(np.float32),
        "object_index": object_index.astype(np.int64),
        "semantic": semantic,
    }
