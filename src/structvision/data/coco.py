"""Reading and validating COCO-format datasets.

A COCO annotation file is a JSON object with ``images``, ``annotations`` and ``categories``
lists (https://cocodataset.org/#format-data). :class:`CocoDataset` turns one into samples that
follow the structvision contract::

    image   (3, H, W) float32 in [0, 1], RGB
    target  {"boxes": (N, 4) float32 absolute-pixel xyxy,
             "labels": (N,) int64 in 1..K (0 is background),
             "masks": (N, H, W) uint8            (with_masks=True and the file has segmentations)
             "keypoints": (N, K_kp, 3) float32   (x, y, visibility), when the file has keypoints
             "area": (N,) float32 (COCO "area": segmentation area in pixels²),
             "iscrowd": (N,) int64,
             "image_id": int64 scalar (the COCO image id)}

Category ids are mapped to contiguous labels ``1..K`` in order of increasing category id
(``label_to_category_id`` maps back). Crowd regions (``iscrowd=1``) stay in the target, as in
COCO: evaluation ignores detections that fall on them; training code that does not want them
calls :func:`drop_crowd`.

:func:`check_coco` lists every problem in a file (bad JSON, duplicate or dangling ids, missing
or corrupt image files, degenerate boxes, malformed segmentations, keypoint count mismatches);
:class:`CocoDataset` runs the same checks at construction (all but image decoding) and raises
:class:`DatasetError` naming them, or skips the bad records with ``skip_invalid=True``.

Image coordinates follow COCO: pixel ``(0, 0)`` covers ``[0, 1) x [0, 1)``, box ``[x, y, w, h]``
becomes ``[x, y, x + w, y + h]``. EXIF orientation is not applied (COCO annotations refer to
the stored pixel grid, as pycocotools and torchvision assume).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CocoDataset",
    "DatasetError",
    "Problem",
    "check_coco",
    "drop_crowd",
    "keypoint_flip_pairs_from_names",
    "read_rgb_image",
    "resolve_image_root",
]

REQUIRED_KEYS = ("images", "annotations", "categories")
# Keys of a detection target whose first dimension indexes instances.
INSTANCE_KEYS = ("boxes", "labels", "masks", "keypoints", "area", "iscrowd")
MAX_LISTED_PROBLEMS = 20
# How many image file names are probed when guessing the image root.
ROOT_PROBE_COUNT = 20

Transforms = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


class DatasetError(ValueError):
    """A dataset file is invalid; the message names the file and the records at fault."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a COCO file.

    ``record`` names where (``"annotation id 17 (image id 3, 'img_003.png')"``, or the file
    itself for file-level problems), ``message`` says what. ``image_index`` / ``annotation_index``
    are the positions in the JSON ``images`` / ``annotations`` lists of the record at fault
    (``None`` for file-level problems); :class:`CocoDataset` uses them to skip bad records.
    """

    record: str
    message: str
    image_index: int | None = field(default=None, compare=False, repr=False)
    annotation_index: int | None = field(default=None, compare=False, repr=False)

    @property
    def is_file_level(self) -> bool:
        """True when the problem concerns the whole file, not one image or annotation."""
        return self.image_index is None and self.annotation_index is None

    def __str__(self) -> str:
        return f"{self.record}: {self.message}"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_size(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value > 0 and float(value).is_integer()


def _all_finite_numbers(values: Sequence[Any]) -> bool:
    """True when every entry is a finite int/float (C-level ``map``/``fsum`` for speed)."""
    if not set(map(type, values)) <= {int, float}:
        return False
    try:
        return math.isfinite(math.fsum(values))
    except OverflowError:
        return False


def _image_record(index: int, image: dict[str, Any]) -> str:
    if not isinstance(image, dict):
        return f"image #{index}"
    image_id = image.get("id")
    name = image.get("file_name")
    id_part = f"image id {image_id}" if image_id is not None else f"image #{index} (no id)"
    return f"{id_part} ({name!r})" if name is not None else id_part


def _annotation_record(
    index: int, annotation: dict[str, Any], images_by_id: dict[int, dict[str, Any]]
) -> str:
    if not isinstance(annotation, dict):
        return f"annotation #{index}"
    ann_id = annotation.get("id")
    id_part = f"annotation id {ann_id}" if ann_id is not None else f"annotation #{index} (no id)"
    image_id = annotation.get("image_id")
    image = images_by_id.get(image_id) if _is_int(image_id) else None
    if image is not None and image.get("file_name") is not None:
        return f"{id_part} (image id {image_id}, {image['file_name']!r})"
    return f"{id_part} (image id {image_id})"


def _category_record(index: int, category: Any) -> str:
    if isinstance(category, dict) and "id" in category:
        return f"category id {category['id']}"
    return f"category #{index}"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _load_json(path: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Read the annotation file; on failure return ``None`` and a file-level problem."""
    record = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None, [Problem(record, "annotation file not found")]
    except (OSError, UnicodeDecodeError) as err:
        return None, [Problem(record, f"cannot read annotation file: {err}")]
    except json.JSONDecodeError as err:
        return None, [Problem(record, f"invalid JSON: {err}")]
    if not isinstance(data, dict):
        got = type(data).__name__
        return None, [Problem(record, f"expected a JSON object at top level, got {got}")]
    return data, []


def _check_top_level(data: dict[str, Any], record: str) -> list[Problem]:
    problems = []
    for key in REQUIRED_KEYS:
        if key not in data:
            problems.append(Problem(record, f"missing top-level key {key!r}"))
        elif not isinstance(data[key], list):
            got = type(data[key]).__name__
            problems.append(Problem(record, f"top-level {key!r} must be a list, got {got}"))
    return problems


def _check_categories(categories: list[Any], record: str) -> list[Problem]:
    """Category problems are file-level: a bad category makes the label mapping undefined."""
    problems = []
    seen: set[int] = set()
    for index, category in enumerate(categories):
        where = f"{record}: {_category_record(index, category)}"
        if not isinstance(category, dict):
            problems.append(Problem(where, "category must be a JSON object"))
            continue
        cat_id = category.get("id")
        if not _is_int(cat_id):
            problems.append(Problem(where, f"category 'id' must be an integer, got {cat_id!r}"))
        elif cat_id in seen:
            problems.append(Problem(where, f"duplicate category id {cat_id}"))
        else:
            seen.add(cat_id)
        if not isinstance(category.get("name"), str):
            problems.append(Problem(where, "category 'name' must be a string"))
        names = category.get("keypoints")
        if names is not None and not (
            isinstance(names, list) and all(isinstance(n, str) for n in names)
        ):
            problems.append(Problem(where, "category 'keypoints' must be a list of names"))
        message = _check_skeleton(category.get("skeleton"), names)
        if message:
            problems.append(Problem(where, message))
    return problems


def _check_skeleton(skeleton: Any, names: Any) -> str:
    """'' when ``skeleton`` is absent or a list of 1-based ``[i, j]`` pairs of ``names``."""
    if skeleton is None:
        return ""
    count = len(names) if isinstance(names, list) else 0
    pairs_ok = isinstance(skeleton, list) and all(
        isinstance(pair, list) and len(pair) == 2 and all(_is_int(k) for k in pair)
        for pair in skeleton
    )
    if not pairs_ok:
        return "category 'skeleton' must be a list of [i, j] keypoint pairs"
    outside = [pair for pair in skeleton if not all(1 <= k <= count for k in pair)]
    if outside:
        return (
            f"category 'skeleton' pairs {outside[:5]} are not 1-based indices of its "
            f"{count} keypoints"
        )
    return ""


def _check_images(images: list[Any]) -> list[Problem]:
    problems = []
    first_index_of_id: dict[int, int] = {}
    for index, image in enumerate(images):
        where = _image_record(index, image)
        if not isinstance(image, dict):
            problems.append(Problem(where, "image entry must be a JSON object", image_index=index))
            continue
        image_id = image.get("id")
        if not _is_int(image_id):
            message = f"image 'id' must be an integer, got {image_id!r}"
            problems.append(Problem(where, message, image_index=index))
        elif image_id in first_index_of_id:
            first = images[first_index_of_id[image_id]]
            message = f"duplicate image id {image_id} (also used by {first.get('file_name')!r})"
            problems.append(Problem(where, message, image_index=index))
        else:
            first_index_of_id[image_id] = index
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            message = f"image 'file_name' must be a non-empty string, got {name!r}"
            problems.append(Problem(where, message, image_index=index))
        for key in ("width", "height"):
            if not _is_positive_size(image.get(key)):
                message = f"image {key!r} must be a positive integer, got {image.get(key)!r}"
                problems.append(Problem(where, message, image_index=index))
    return problems


def _duplicate_image_ids(images: list[Any]) -> set[int]:
    seen: set[int] = set()
    duplicates: set[int] = set()
    for image in images:
        image_id = image.get("id") if isinstance(image, dict) else None
        if _is_int(image_id):
            (duplicates if image_id in seen else seen).add(image_id)
    return duplicates


def _check_box(bbox: Any, width: float | None, height: float | None, tolerance: float) -> str:
    """Return a description of what is wrong with a COCO ``[x, y, w, h]`` box, or ``""``."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"'bbox' must be a list of 4 numbers [x, y, w, h], got {bbox!r}"
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in bbox):
        return f"bbox has non-finite values: {bbox}"
    if w <= 0 or h <= 0:
        return f"bbox has zero or negative size (w={w}, h={h})"
    if width is None or height is None:
        return ""
    if x < -tolerance or y < -tolerance or x + w > width + tolerance or y + h > height + tolerance:
        return (
            f"bbox [x1={x}, y1={y}, x2={x + w}, y2={y + h}] lies outside the "
            f"{width:g}x{height:g} image (tolerance {tolerance:g} px)"
        )
    return ""


def _check_rle(rle: dict[str, Any], height: float | None, width: float | None) -> str:
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        return f"RLE 'size' must be [height, width], got {size!r}"
    if height is not None and width is not None and size != [int(height), int(width)]:
        return f"RLE size {size} differs from the image size [{height:g}, {width:g}]"
    if isinstance(counts, str):
        return "" if counts else "compressed RLE 'counts' is empty"
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return "uncompressed RLE 'counts' must be non-negative integers"
        if sum(counts) != size[0] * size[1]:
            return f"uncompressed RLE counts sum to {sum(counts)}, expected {size[0] * size[1]}"
        return ""
    return f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"


def _check_segmentation(segm: Any, height: float | None, width: float | None) -> str:
    """Return what is wrong with a polygon list or RLE segmentation, or ``""``."""
    if isinstance(segm, dict):
        return _check_rle(segm, height, width)
    if not isinstance(segm, list):
        return f"'segmentation' must be a polygon list or an RLE object, got {type(segm).__name__}"
    for k, polygon in enumerate(segm):
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            length = len(polygon) if isinstance(polygon, list) else type(polygon).__name__
            return f"polygon {k} must be a flat list of >= 3 (x, y) pairs, got {length}"
        if not _all_finite_numbers(polygon):
            return f"polygon {k} has non-numeric or non-finite coordinates"
    return ""


def _check_keypoints(keypoints: Any, expected: int | None) -> str:
    if not isinstance(keypoints, list) or len(keypoints) % 3:
        return "'keypoints' must be a flat list of (x, y, visibility) triplets"
    if expected is not None and len(keypoints) != 3 * expected:
        return (
            f"'keypoints' has {len(keypoints) // 3} points ({len(keypoints)} values), "
            f"the category defines {expected}"
        )
    if not _all_finite_numbers(keypoints):
        return "'keypoints' has non-numeric or non-finite values"
    return ""


def _dataset_keypoint_count(data: dict[str, Any]) -> int:
    """Keypoints per instance: the largest category ``keypoints`` list, else the annotations'."""
    counts = [
        len(c["keypoints"])
        for c in data.get("categories", [])
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list)
    ]
    if counts and max(counts) > 0:
        return max(counts)
    for ann in data.get("annotations", []):
        if isinstance(ann, dict) and isinstance(ann.get("keypoints"), list) and ann["keypoints"]:
            return len(ann["keypoints"]) // 3
    return 0


def _check_annotation(
    ann: dict[str, Any],
    image: dict[str, Any] | None,
    category: dict[str, Any] | None,
    num_keypoints: int,
    tolerance: float,
) -> list[str]:
    """Return the messages describing everything wrong with one annotation."""
    messages = []
    width = image.get("width") if image is not None else None
    height = image.get("height") if image is not None else None
    if not (_is_positive_size(width) and _is_positive_size(height)):
        width = height = None
    if "bbox" not in ann:
        messages.append("missing 'bbox'")
    else:
        message = _check_box(ann["bbox"], width, height, tolerance)
        if message:
            messages.append(message)
    if ann.get("iscrowd", 0) not in (0, 1):
        messages.append(f"'iscrowd' must be 0 or 1, got {ann.get('iscrowd')!r}")
    area = ann.get("area", 0)
    if not _is_number(area) or not math.isfinite(area) or area < 0:
        messages.append(f"'area' must be a finite non-negative number, got {area!r}")
    segm = ann.get("segmentation")
    if segm is not None and segm != []:
        message = _check_segmentation(segm, height, width)
        if message:
            messages.append(message)
    keypoints = ann.get("keypoints")
    if keypoints is not None and keypoints != []:
        names = category.get("keypoints") if category is not None else None
        expected = len(names) if isinstance(names, list) and names else (num_keypoints or None)
        message = _check_keypoints(keypoints, expected)
        if message:
            messages.append(message)
    return messages


def _check_annotations(
    data: dict[str, Any], tolerance: float, dataset_keypoints: int
) -> list[Problem]:
    images = [img for img in data["images"] if isinstance(img, dict)]
    images_by_id = {img["id"]: img for img in reversed(images) if _is_int(img.get("id"))}
    categories_by_id = {
        c["id"]: c for c in data["categories"] if isinstance(c, dict) and _is_int(c.get("id"))
    }
    problems: list[Problem] = []
    seen_ids: set[int] = set()
    for index, ann in enumerate(data["annotations"]):

        def add(message: str, index: int = index, ann: Any = ann) -> None:
            where = _annotation_record(index, ann, images_by_id)
            problems.append(Problem(where, message, annotation_index=index))

        if not isinstance(ann, dict):
            add("annotation must be a JSON object")
            continue
        ann_id = ann.get("id")
        if not _is_int(ann_id):
            add(f"annotation 'id' must be an integer, got {ann_id!r}")
        elif ann_id in seen_ids:
            add(f"duplicate annotation id {ann_id}")
        else:
            seen_ids.add(ann_id)
        image = images_by_id.get(ann.get("image_id")) if _is_int(ann.get("image_id")) else None
        if image is None:
            add(f"refers to unknown image id {ann.get('image_id')!r}")
        cat_id = ann.get("category_id")
        category = categories_by_id.get(cat_id) if _is_int(cat_id) else None
        if category is None:
            add(f"refers to unknown category id {cat_id!r}")
        for message in _check_annotation(ann, image, category, dataset_keypoints, tolerance):
            add(message)
    return problems


def _check_image_files(
    images: list[Any], image_root: Path, *, decode: bool, skip: set[int]
) -> list[Problem]:
    """Check that image files exist; with ``decode`` also that they decode at the JSON size."""
    problems = []
    for index, image in enumerate(images):
        if (
            index in skip
            or not isinstance(image, dict)
            or not isinstance(image.get("file_name"), str)
        ):
            continue
        where = _image_record(index, image)
        path = image_root / image["file_name"]
        if not path.is_file():
            problems.append(Problem(where, f"image file not found: {path}", image_index=index))
            continue
        if not decode:
            continue
        try:
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                im.load()
                actual_w, actual_h = im.size
        except Exception as err:  # PIL raises many types for corrupt files
            message = f"cannot decode image file {path}: {type(err).__name__}: {err}"
            problems.append(Problem(where, message, image_index=index))
            continue
        json_size = (image.get("width"), image.get("height"))
        if json_size != (actual_w, actual_h):
            message = (
                f"image file is {actual_w}x{actual_h} (width x height) but the JSON says "
                f"{json_size[0]}x{json_size[1]}"
            )
            problems.append(Problem(where, message, image_index=index))
    return problems


def _validate(
    data: dict[str, Any],
    record: str,
    image_root: Path | None,
    *,
    decode_images: bool,
    box_tolerance: float,
) -> list[Problem]:
    """All problems of a loaded COCO dict. ``image_root=None`` skips file checks."""
    problems = _check_top_level(data, record)
    if problems:
        return problems
    problems += _check_categories(data["categories"], record)
    image_problems = _check_images(data["images"])
    problems += image_problems
    problems += _check_annotations(data, box_tolerance, _dataset_keypoint_count(data))
    if image_root is not None:
        skip = {p.image_index for p in image_problems if p.image_index is not None}
        problems += _check_image_files(data["images"], image_root, decode=decode_images, skip=skip)
    return problems


# --------------------------------------------------------------------------------------------
# Image root and image decoding
# --------------------------------------------------------------------------------------------


def _image_root_candidates(annotation_file: Path) -> list[Path]:
    folder = annotation_file.resolve().parent
    candidates = [folder / "images", folder]
    # COCO layout: annotations/instances_val2017.json -> ../val2017/
    stem = annotation_file.stem
    if folder.name == "annotations" and "_" in stem:
        candidates.append(folder.parent / stem.rsplit("_", 1)[1])
    return candidates


def resolve_image_root(annotation_file: str | Path, file_names: Sequence[str]) -> Path:
    """Find the folder that image ``file_names`` are relative to.

    Looked for, in order: (1) ``images/`` beside the JSON, (2) the JSON's own folder, (3) for
    the COCO layout ``annotations/<kind>_<split>.json`` (e.g. ``instances_val2017.json``),
    ``../<split>/``. The first candidate that holds the most of the first
    ``ROOT_PROBE_COUNT`` files wins; when none holds any, the first existing candidate (else
    the JSON's folder) is returned and the missing files are reported by the validation.
    """
    candidates = _image_root_candidates(Path(annotation_file))
    probe = [name for name in file_names[:ROOT_PROBE_COUNT] if isinstance(name, str)]
    hits = [sum((root / name).is_file() for name in probe) for root in candidates]
    best = max(range(len(candidates)), key=lambda i: (hits[i], -i))
    if hits[best] > 0:
        return candidates[best]
    existing = [root for root in candidates if root.is_dir()]
    return existing[0] if existing else candidates[1]


def _pil_to_rgb_array(im: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any PIL mode (16-bit grayscale scaled by 65535)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        gray = np.asarray(im, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if im.mode == "F":
        gray = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return rgb.astype(np.float32) / 255.0


def read_rgb_image(path: str | Path) -> Tensor:
    """Decode an image file to a ``(3, H, W)`` float32 RGB tensor in ``[0, 1]``.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit grayscale are converted.
    EXIF orientation is not applied. Raises :class:`DatasetError` naming the file on failure.
    """
    try:
        with Image.open(path) as im:
            array = _pil_to_rgb_array(im)  # (H, W, 3)
    except Exception as err:  # PIL raises many types for corrupt files
        raise DatasetError(f"cannot decode image {path}: {type(err).__name__}: {err}") from err
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


# --------------------------------------------------------------------------------------------
# Public checks
# --------------------------------------------------------------------------------------------


def check_coco(
    annotation_file: str | Path,
    image_root: str | Path | None = None,
    *,
    check_images: bool = True,
    box_tolerance: float = 1.0,
) -> list[Problem]:
    """List every problem in a COCO annotation file and its images (empty list = valid).

    Args:
        annotation_file: path of the COCO JSON.
        image_root: folder the image ``file_name`` entries are relative to; ``None`` resolves
            it as :func:`resolve_image_root` does.
        check_images: also open and fully decode every image with PIL and compare its size
            with the JSON ``width``/``height`` (slow on big datasets). File existence is
            always checked.
        box_tolerance: how far (pixels) a box may extend past the image border.
    """
    path = Path(annotation_file)
    data, problems = _load_json(path)
    if data is None:
        return problems
    root = _root_for(path, data, image_root)
    return _validate(data, str(path), root, decode_images=check_images, box_tolerance=box_tolerance)


def _root_for(path: Path, data: dict[str, Any], image_root: str | Path | None) -> Path:
    if image_root is not None:
        return Path(image_root)
    images = data.get("images") if isinstance(data.get("images"), list) else []
    names = [img.get("file_name") for img in images if isinstance(img, dict)]
    return resolve_image_root(path, names)


def _format_problems(path: Path, problems: Sequence[Problem], image_root: Path | None) -> str:
    lines = [f"{path}: {len(problems)} problem(s) found"]
    if image_root is not None:
        lines[0] += f" (image root: {image_root})"
    lines += [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(
            f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more; "
            "run `structvision data check` (check_coco) for the full list"
        )
    return "\n".join(lines)


def drop_crowd(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Return a copy of ``target`` without the ``iscrowd == 1`` instances.

    Every per-instance entry (``boxes``, ``labels``, ``masks``, ``keypoints``, ``area``,
    ``iscrowd``) is filtered; other entries are copied as they are.
    """
    if "iscrowd" not in target:
        return dict(target)
    keep = target["iscrowd"] == 0  # (N,)
    return {
        key: value[keep] if key in INSTANCE_KEYS and isinstance(value, Tensor) else value
        for key, value in target.items()
    }


def keypoint_flip_pairs_from_names(names: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs of keypoint indices that swap under a horizontal flip, found from their names.

    ``"left_eye"``/``"right_eye"`` and ``"l_knee"``/``"r_knee"`` (any case, ``_``/``-``/space
    separated) pair up; unpaired names are their own mirror image and are not listed.
    """
    index_of = {name.lower(): i for i, name in enumerate(names)}
    swap = {"left": "right", "right": "left", "l": "r", "r": "l"}
    pairs = []
    for i, name in enumerate(names):
        tokens = re.split(r"([_\- ])", name.lower())
        for t, token in enumerate(tokens):
            if token in swap:
                mirrored = "".join([*tokens[:t], swap[token], *tokens[t + 1 :]])
                j = index_of.get(mirrored)
                if j is not None and i < j:
                    pairs.append((i, j))
                break
    return pairs


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def _segmentation_to_rle(segm: Any, height: int, width: int) -> dict[str, Any]:
    """Compressed RLE of a polygon list, an uncompressed or a compressed RLE."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def _box_rle(bbox: Sequence[float], height: int, width: int) -> dict[str, Any]:
    """RLE of the box rectangle (used for annotations without a segmentation)."""
    boxes = np.asarray([bbox], dtype=np.float64)  # (1, 4) xywh
    return mask_utils.frPyObjects(boxes, height, width)[0]


class CocoDataset(Dataset):
    """A torch ``Dataset`` over a COCO-format annotation file.

    ``dataset[i]`` returns ``(image, target)`` following the structvision contract (see the
    module docstring). Images are ordered by increasing COCO image id; images without
    annotations are kept.

    Args:
        annotation_file: path of the COCO JSON.
        image_root: folder the image ``file_name`` entries are relative to. ``None`` looks in
            (1) ``images/`` beside the JSON, (2) the JSON's folder, (3) for
            ``annotations/instances_<split>.json``, ``../<split>/`` (see
            :func:`resolve_image_root`).
        transforms: optional ``(image, target) -> (image, target)`` callable applied last.
        with_masks: decode segmentations to ``masks (N, H, W)`` uint8. Masks are produced only
            when the file has at least one segmentation; an annotation without one then gets
            its box rectangle as mask.
        skip_invalid: instead of raising :class:`DatasetError` on problems, drop the bad
            annotations and images (an image with a bad record, e.g. a missing file, is dropped
            with its annotations), record them in ``skipped`` and warn once. File-level
            problems (invalid JSON, missing keys, bad categories) always raise.
        box_tolerance: how far (pixels) a box may extend past the image border.

    Attributes:
        categories: category dicts sorted by id; label ``i`` is ``categories[i - 1]``.
        label_to_category_id / category_id_to_label: the contiguous-label mapping.
        class_names: ``["__background__", name_1, ..., name_K]`` so ``class_names[label]``
            works (torchvision's convention).
        num_keypoints / keypoint_names / keypoint_flip_pairs: keypoint layout (0 / [] / []
            when the file has no keypoints).
        skeleton: limbs as 0-based keypoint index pairs, from the category ``skeleton`` (which
            COCO writes 1-based); ``[]`` when the file has none.
        image_root: the resolved image folder.
        skipped: problems whose records were dropped (``skip_invalid=True``).
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path | None = None,
        *,
        transforms: Transforms | None = None,
        with_masks: bool = True,
        skip_invalid: bool = False,
        box_tolerance: float = 1.0,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        data, problems = _load_json(self.annotation_file)
        if data is None:
            raise DatasetError(_format_problems(self.annotation_file, problems, None))
        self.image_root = _root_for(self.annotation_file, data, image_root)
        problems = _validate(
            data,
            str(self.annotation_file),
            self.image_root,
            decode_images=False,
            box_tolerance=box_tolerance,
        )
        self.skipped: list[Problem] = self._handle_problems(problems, skip_invalid)
        self._build_categories(data["categories"])
        self._build_index(data, self.skipped)
        self.with_masks = with_masks and self.has_segmentations

    def _handle_problems(self, problems: list[Problem], skip_invalid: bool) -> list[Problem]:
        fatal = [p for p in problems if p.is_file_level]
        if fatal or (problems and not skip_invalid):
            raise DatasetError(_format_problems(self.annotation_file, problems, self.image_root))
        if problems:
            warnings.warn(
                f"{self.annotation_file}: skipped {len(problems)} invalid record(s), e.g. "
                f"{problems[0]}; see CocoDataset.skipped for the full list",
                stacklevel=3,
            )
        return problems

    def _build_categories(self, categories: list[dict[str, Any]]) -> None:
        self.categories = sorted(categories, key=lambda c: c["id"])
        self.label_to_category_id = {i + 1: c["id"] for i, c in enumerate(self.categories)}
        self.category_id_to_label = {c: label for label, c in self.label_to_category_id.items()}
        self.class_names = ["__background__"] + [c["name"] for c in self.categories]

    def _build_index(self, data: dict[str, Any], skipped: list[Problem]) -> None:
        bad_images = {p.image_index for p in skipped if p.image_index is not None}
        bad_annotations = {p.annotation_index for p in skipped if p.annotation_index is not None}
        bad_ids = _duplicate_image_ids(data["images"])
        bad_ids |= {
            data["images"][i].get("id") for i in bad_images if isinstance(data["images"][i], dict)
        }
        images = [
            img
            for i, img in enumerate(data["images"])
            if i not in bad_images and img["id"] not in bad_ids
        ]
        self._images = sorted(images, key=lambda img: img["id"])
        self._annotations: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in images}
        for i, ann in enumerate(data["annotations"]):
            if i not in bad_annotations and ann["image_id"] in self._annotations:
                self._annotations[ann["image_id"]].append(ann)
        self.has_segmentations = any(
            ann.get("segmentation") for anns in self._annotations.values() for ann in anns
        )
        self.num_keypoints = _dataset_keypoint_count(data)
        named = [c for c in self.categories if c.get("keypoints")]
        self.keypoint_names: list[str] = list(named[0]["keypoints"]) if named else []
        self.keypoint_flip_pairs = keypoint_flip_pairs_from_names(self.keypoint_names)
        limbs = (named[0].get("skeleton") or []) if named else []
        self.skeleton: list[tuple[int, int]] = [(i - 1, j - 1) for i, j in limbs]

    def __len__(self) -> int:
        return len(self._images)

    @property
    def num_categories(self) -> int:
        """K, the number of object categories (labels are 1..K)."""
        return len(self.categories)

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids in dataset order."""
        return [img["id"] for img in self._images]

    def image_info(self, index: int) -> dict[str, Any]:
        """The JSON ``images`` entry of sample ``index``."""
        return self._images[index]

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """The JSON ``annotations`` of sample ``index`` (valid ones only)."""
        return self._annotations[self._images[index]["id"]]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        info = self._images[index]
        path = self.image_root / info["file_name"]
        image = read_rgb_image(path)  # (3, H, W)
        height, width = image.shape[-2:]
        if (width, height) != (info["width"], info["height"]):
            raise DatasetError(
                f"{self.annotation_file}: {_image_record(index, info)}: image file {path} is "
                f"{width}x{height} (width x height) but the JSON says "
                f"{info['width']}x{info['height']}"
            )
        target = self._target(info, self._annotations[info["id"]])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _target(self, info: dict[str, Any], anns: list[dict[str, Any]]) -> dict[str, Tensor]:
        height, width = int(info["height"]), int(info["width"])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        target = {
            "boxes": boxes,  # (N, 4)
            "labels": torch.tensor(
                [self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64
            ),
            "area": torch.tensor(
                [a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], dtype=torch.float32
            ),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.int64),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
        }
        if self.with_masks:
            target["masks"] = self._masks(anns, height, width)  # (N, H, W)
        if self.num_keypoints > 0:
            target["keypoints"] = self._keypoints(anns)  # (N, K, 3)
        return target

    def _masks(self, anns: list[dict[str, Any]], height: int, width: int) -> Tensor:
        if not anns:
            return torch.zeros((0, height, width), dtype=torch.uint8)
        rles = [
            _segmentation_to_rle(a["segmentation"], height, width)
            if a.get("segmentation")
            else _box_rle(a["bbox"], height, width)
            for a in anns
        ]
        with warnings.catch_warnings():
            # pycocotools' decode trips numpy 2's __array__(copy=...) DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = mask_utils.decode(rles)  # (H, W, N) uint8
        return torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1)))

    def _keypoints(self, anns: list[dict[str, Any]]) -> Tensor:
        keypoints = torch.zeros((len(anns), self.num_keypoints, 3), dtype=torch.float32)
        for i, ann in enumerate(anns):
            values = ann.get("keypoints") or []
            if values:
                keypoints[i, : len(values) // 3] = torch.tensor(values).reshape(-1, 3)
        return keypoints
