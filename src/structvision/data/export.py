"""Write a dataset of ``(image, target)`` samples to disk in the standard COCO format.

Layout written by :func:`write_coco`::

    out_dir/
      images/000000.png, 000001.png, ...   RGB PNGs
      annotations.json                     COCO: images, annotations, categories, info, licenses

``bbox`` is COCO ``[x, y, width, height]`` in absolute pixels, converted from the target's
``xyxy`` boxes; with structvision's box convention (``x2 = max_col + 1``) it equals
pycocotools' ``toBbox`` of the mask. ``segmentation`` is either uncompressed RLE (exact) or
polygons traced from the mask (exact for masks without holes, see :func:`mask_to_polygons`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

import structvision

MASK_FORMATS: tuple[str, ...] = ("rle", "polygon", "none")


def _to_numpy(value: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def mask_to_uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO *uncompressed* RLE of a binary mask ``(H, W)``.

    Returns ``{"size": [H, W], "counts": [...]}``: run lengths over the mask read in column-major
    (Fortran) order, starting with a (possibly empty) run of zeros. pycocotools
    (``frPyObjects``, ``annToRLE``) and torchvision's COCO wrapper decode it exactly.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")  # (H * W,)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds)
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts.tolist()}


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` of the outer boundaries of a mask ``(H, W)``.

    The outline follows pixel *edges*: OpenCV traces the mask upsampled 2x (nearest), and the
    traced sub-pixel centres are mapped back to image coordinates, a quarter pixel inside the
    true edge. pycocotools rasterises such a polygon back to exactly the mask's pixels.

    Polygons are approximate in one way: COCO polygons cannot hold holes, so a mask with holes
    (e.g. an object with a smaller object on top of its middle) comes back with the holes
    filled. Use ``mask_format="rle"`` for exact masks. Every polygon has at least 4 points, so
    pycocotools never mistakes it for a box.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    height, width = mask.shape
    upsampled = cv2.resize(
        mask.astype(np.uint8), (2 * width, 2 * height), interpolation=cv2.INTER_NEAREST
    )
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0  # (K, 2) x, y
        polygons.append(points.ravel().tolist())
    return polygons


def _segmentation(mask: np.ndarray, mask_format: str) -> Any:
    if mask_format == "rle":
        return mask_to_uncompressed_rle(mask)
    return mask_to_polygons(mask)


def _check_target(
    target: Mapping[str, Any], *, where: str, size: tuple[int, int], need_masks: bool
):
    """Target arrays as numpy, with shapes checked; ``where`` names the sample in errors."""
    for key in ("boxes", "labels"):
        if key not in target:
            raise ValueError(f"{where}: target has no {key!r} (keys: {sorted(target)})")
    boxes = _to_numpy(target["boxes"]).astype(np.float64).reshape(-1, 4)  # (N, 4) xyxy
    labels = _to_numpy(target["labels"]).astype(np.int64).reshape(-1)  # (N,)
    if boxes.shape[0] != labels.shape[0]:
        raise ValueError(f"{where}: boxes has shape {boxes.shape} but labels {labels.shape}")
    arrays = {"boxes": boxes, "labels": labels}
    if need_masks:
        if "masks" not in target:
            raise ValueError(f"{where}: target has no 'masks'; pass mask_format='none'")
        masks = _to_numpy(target["masks"])
        expected = (labels.shape[0], *size)
        if masks.shape != expected:
            raise ValueError(f"{where}: masks must have shape {expected}, got {masks.shape}")
        arrays["masks"] = masks
    return arrays


def _check_keypoints(target: Mapping[str, Any], *, num: int, where: str) -> np.ndarray | None:
    if "keypoints" not in target:
        return None
    keypoints = _to_numpy(target["keypoints"])
    if keypoints.ndim != 3 or keypoints.shape[0] != num or keypoints.shape[2] != 3:
        raise ValueError(f"{where}: keypoints must have shape ({num}, K, 3), got {keypoints.shape}")
    return keypoints


def annotations_from_target(
    target: Mapping[str, Any],
    *,
    image_id: int,
    image_size: tuple[int, int],
    first_annotation_id: int,
    mask_format: str = "rle",
) -> list[dict[str, Any]]:
    """COCO annotation records for one target dict (structvision / torchvision convention).

    Args:
        target: ``boxes (N, 4)`` xyxy absolute pixels, ``labels (N,)``, and when
            ``mask_format != "none"`` ``masks (N, H, W)``; optional ``area (N,)`` (else the mask
            pixel count, else the box area), ``iscrowd (N,)`` (else 0) and
            ``keypoints (N, K, 3)`` (written flat as ``[x, y, v, ...]`` with
            ``num_keypoints`` = count of ``v > 0``).
        image_id: COCO image id of the record.
        image_size: ``(height, width)`` of the image.
        first_annotation_id: id of the first record; the rest follow consecutively.
        mask_format: ``"rle"``, ``"polygon"`` or ``"none"`` (no ``segmentation`` field).
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    where = f"image {image_id}"
    arrays = _check_target(target, where=where, size=image_size, need_masks=mask_format != "none")
    boxes, labels = arrays["boxes"], arrays["labels"]
    num = labels.shape[0]
    if "area" in target:
        area = _to_numpy(target["area"]).astype(np.float64).reshape(-1)
    elif "masks" in arrays:
        area = (arrays["masks"] != 0).sum(axis=(1, 2)).astype(np.float64)
    else:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iscrowd = _to_numpy(target["iscrowd"]).reshape(-1) if "iscrowd" in target else np.zeros(num)
    keypoints = (
        _to_numpy(target["keypoints"]).reshape(num, -1, 3) if "keypoints" in target else None
    )
    records = []
    for i in range(num):
        x1, y1, x2, y2 = boxes[i].tolist()
        record = {
            "id": first_annotation_id + i,
            "image_id": int(image_id),
            "category_id": int(labels[i]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": float(area[i]),
            "iscrowd": int(iscrowd[i]),
        }
        if "masks" in arrays:
            record["segmentation"] = _segmentation(arrays["masks"][i], mask_format)
        if keypoints is not None:
            record["keypoints"] = [float(v) for v in keypoints[i].ravel()]
            record["num_keypoints"] = int((keypoints[i, :, 2] > 0).sum())
        records.append(record)
    return records


def _check_categories(categories: Sequence[Mapping[str, Any]]) -> set[int]:
    ids = set()
    for position, category in enumerate(categories):
        if "id" not in category or "name" not in category:
            raise ValueError(f"categories[{position}] needs 'id' and 'name', got {dict(category)}")
        ids.add(int(category["id"]))
    if len(ids) != len(categories):
        raise ValueError(f"categories must have distinct ids, got {[c['id'] for c in categories]}")
    return ids


def _image_id(target: Mapping[str, Any], *, default: int, file_name: str) -> int:
    if "image_id" not in target:
        return default
    value = _to_numpy(target["image_id"]).reshape(-1)
    if value.shape != (1,):
        raise ValueError(f"{file_name!r}: image_id must be a scalar, got shape {value.shape}")
    return int(value[0])


def coco_dict_from_samples(
    samples: Iterable[tuple[Mapping[str, Any], str, tuple[int, int]]],
    *,
    categories: Sequence[Mapping[str, Any]],
    mask_format: str = "rle",
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An in-memory COCO dataset dict from ``(target, file_name, (height, width))`` triples.

    The image id is ``target["image_id"]`` when present, else the triple's position. Annotation
    ids start at 1. The result can be given to ``pycocotools.coco.COCO`` (set its ``dataset``
    attribute and call ``createIndex()``) to evaluate against in-memory ground truth.

    Raises:
        ValueError: on duplicate image ids, labels that are not category ids, or malformed
            targets; the message names the image.
    """
    category_ids = _check_categories(categories)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen_ids: set[int] = set()
    for position, (target, file_name, (height, width)) in enumerate(samples):
        image_id = _image_id(target, default=position, file_name=file_name)
        if image_id in seen_ids:
            raise ValueError(f"duplicate image id {image_id} (file {file_name!r})")
        seen_ids.add(image_id)
        images.append(
            {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}
        )
        records = annotations_from_target(
            target,
            image_id=image_id,
            image_size=(int(height), int(width)),
            first_annotation_id=len(annotations) + 1,
            mask_format=mask_format,
        )
        unknown = sorted({r["category_id"] for r in records} - category_ids)
        if unknown:
            raise ValueError(
                f"image {image_id} ({file_name!r}): labels {unknown} are not category ids "
                f"{sorted(category_ids)}"
            )
        annotations.extend(records)
    return {
        "info": dict(info) if info is not None else {"description": "structvision export"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(category) for category in categories],
    }


def _image_to_uint8(image: Any, *, where: str) -> np.ndarray:
    """``(3, H, W)`` float in ``[0, 1]`` or uint8 (tensor or array) → ``(H, W, 3)`` uint8."""
    array = _to_numpy(image)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"{where}: image must have shape (3, H, W), got {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    array = np.ascontiguousarray(array.transpose(1, 2, 0))  # (H, W, C)
    return array[..., 0] if array.shape[2] == 1 else array


def _write_json_atomic(data: Mapping[str, Any], path: Path) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(data, stream, separators=(",", ":"))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_coco(
    dataset: Any,
    out_dir: str | os.PathLike[str],
    *,
    num_images: int | None = None,
    mask_format: str = "rle",
    categories: Sequence[Mapping[str, Any]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the first ``num_images`` samples of ``dataset`` as a COCO dataset.

    Args:
        dataset: indexable, ``dataset[i] -> (image (3, H, W) float [0, 1] or uint8, target)``
            with targets as in :func:`annotations_from_target`.
        out_dir: created if missing; images go to ``out_dir/images/{i:06d}.png`` and
            ``file_name`` in the JSON is relative to ``out_dir/images``.
        num_images: how many samples (default: all of ``len(dataset)``).
        mask_format: ``"rle"`` (uncompressed RLE, exact), ``"polygon"`` (see
            :func:`mask_to_polygons`; holes are lost) or ``"none"``.
        categories: COCO categories; default ``dataset.categories``.
        progress: called as ``progress(done, total)`` after each image.

    Returns:
        The path of ``annotations.json`` (written to a temporary name, then renamed).
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    if categories is None:
        categories = getattr(dataset, "categories", None)
        if categories is None:
            raise ValueError("categories must be given when the dataset has no .categories")
    total = len(dataset) if num_images is None else int(num_images)
    if not 0 <= total <= len(dataset):
        raise ValueError(f"num_images must be in [0, {len(dataset)}], got {num_images}")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)

    def samples():
        for index in range(total):
            image, target = dataset[index]
            file_name = f"{index:06d}.png"
            pixels = _image_to_uint8(image, where=f"sample {index}")
            Image.fromarray(pixels).save(image_dir / file_name, compress_level=1)
            yield target, file_name, pixels.shape[:2]
            if progress is not None:
                progress(index + 1, total)

    info = {
        "description": f"written by structvision {structvision.__version__}",
        "dataset": repr(dataset),
    }
    coco = coco_dict_from_samples(
        samples(), categories=categories, mask_format=mask_format, info=info
    )
    annotations_path = out_dir / "annotations.json"
    _write_json_atomic(coco, annotations_path)
    return annotations_path
