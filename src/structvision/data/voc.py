"""Reading Pascal VOC detection datasets.

The standard layout (one ``VOCdevkit/VOC2007`` folder, say)::

    JPEGImages/<id>.jpg
    Annotations/<id>.xml
    ImageSets/Main/<image_set>.txt      one image id per line

:class:`VOCDetection` turns it into samples that follow the structvision contract::

    image   (3, H, W) float32 in [0, 1], RGB
    target  {"boxes": (N, 4) float32 absolute-pixel xyxy,
             "labels": (N,) int64 in 1..20 (index into VOC_CLASSES; 0 is background),
             "difficult": (N,) bool (VOC's "difficult" flag; evaluation ignores these),
             "area": (N,) float32 box area in pixels²,
             "iscrowd": (N,) int64, all zeros,
             "image_id": int64 scalar, the sample's index in the dataset}

The string id of sample ``i`` (``"000005"``) is ``dataset.ids[i]``.

Coordinates: VOC boxes are 1-based *inclusive* pixel indices (``xmin=1`` is the first pixel
column, a box with ``xmin == xmax`` is one pixel wide). structvision boxes are continuous, with
pixel ``(0, 0)`` covering ``[0, 1) x [0, 1)``, so a VOC box becomes
``[xmin - 1, ymin - 1, xmax, ymax]``. Its width ``xmax - xmin + 1`` is the same number VOC's
devkit uses, so areas and IoUs agree with the devkit's ``+1`` formulas.

XML is parsed with :mod:`xml.etree.ElementTree`; files that declare a DOCTYPE or ENTITY are
rejected (VOC annotations never do, and refusing them rules out entity-expansion attacks).
Every annotation is parsed when the dataset is built, so a missing file, an unknown class or a
malformed box raises :class:`~structvision.data.coco.DatasetError` naming the file right away;
the image size written in the XML is compared with the decoded image in ``__getitem__``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from structvision.data.coco import DatasetError, read_rgb_image

__all__ = [
    "VOC_CLASSES",
    "VOCAnnotation",
    "VOCDetection",
    "VOCObject",
    "parse_voc_xml",
    "resolve_voc_root",
]

# Index = label; the 20 classes in the devkit's (alphabetical) order.
VOC_CLASSES: tuple[str, ...] = (
    "__background__",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
BACKGROUND = "__background__"
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
# DOCTYPE / ENTITY declarations are refused before parsing (entity-expansion attacks).
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

Transforms = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class VOCObject:
    """One ``<object>`` of a VOC annotation; ``box`` is already converted to continuous xyxy."""

    name: str
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2), pixels
    difficult: bool


@dataclass(frozen=True)
class VOCAnnotation:
    """One parsed VOC XML file. ``width``/``height`` are ``None`` when there is no ``<size>``."""

    path: Path
    width: int | None
    height: int | None
    objects: tuple[VOCObject, ...]


# --------------------------------------------------------------------------------------------
# XML parsing
# --------------------------------------------------------------------------------------------


def _read_xml(path: Path) -> ET.Element:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read annotation file: {err}") from err
    if _DECLARATION.search(data):
        raise DatasetError(f"{path}: DOCTYPE/ENTITY declarations are not allowed in VOC XML")
    try:
        return ET.fromstring(data)
    except ET.ParseError as err:
        raise DatasetError(f"{path}: invalid XML: {err}") from err


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip()


def _parse_number(path: Path, where: str, tag: str, text: str | None) -> float:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{path}: {where}: <{tag}> must be a finite number, got {text!r}")
    return value


def _parse_size(path: Path, root: ET.Element) -> tuple[int | None, int | None]:
    size = root.find("size")
    if size is None:
        return None, None
    values = []
    for tag in ("width", "height"):
        value = _parse_number(path, "<size>", tag, _text(size.find(tag)))
        if value <= 0 or not value.is_integer():
            raise DatasetError(f"{path}: <size>: <{tag}> must be a positive integer, got {value}")
        values.append(int(value))
    return values[0], values[1]


def _parse_difficult(path: Path, where: str, obj: ET.Element) -> bool:
    text = _text(obj.find("difficult"))
    if text in (None, ""):
        return False
    if text not in ("0", "1"):
        raise DatasetError(f"{path}: {where}: <difficult> must be 0 or 1, got {text!r}")
    return text == "1"


def _parse_box(path: Path, where: str, obj: ET.Element) -> tuple[float, float, float, float]:
    """``<bndbox>`` (1-based inclusive pixel indices) -> continuous ``(x1, y1, x2, y2)``."""
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise DatasetError(f"{path}: {where}: missing <bndbox>")
    xmin, ymin, xmax, ymax = (
        _parse_number(path, where, tag, _text(bndbox.find(tag))) for tag in BOX_TAGS
    )
    if xmax < xmin or ymax < ymin:
        raise DatasetError(
            f"{path}: {where}: malformed box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, "
            f"ymax={ymax:g}): xmax must be >= xmin and ymax >= ymin"
        )
    return xmin - 1.0, ymin - 1.0, xmax, ymax


def parse_voc_xml(path: str | Path) -> VOCAnnotation:
    """Parse one VOC annotation file.

    Returns every ``<object>`` in file order with its class name (surrounding whitespace
    stripped), ``difficult`` flag (missing = 0) and box converted from VOC's 1-based inclusive
    pixel indices to continuous xyxy (``[xmin - 1, ymin - 1, xmax, ymax]``). Raises
    :class:`DatasetError` naming the file and object on a missing file, invalid XML, a
    DOCTYPE/ENTITY declaration, a missing/non-numeric coordinate or ``xmax < xmin``.
    """
    path = Path(path)
    root = _read_xml(path)
    if root.tag != "annotation":
        raise DatasetError(f"{path}: root element must be <annotation>, got <{root.tag}>")
    width, height = _parse_size(path, root)
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj.find("name"))
        where = f"object #{k} ({name!r})"
        if not name:
            raise DatasetError(f"{path}: object #{k}: missing <name>")
        box = _parse_box(path, where, obj)
        objects.append(VOCObject(name, box, _parse_difficult(path, where, obj)))
    return VOCAnnotation(path, width, height, tuple(objects))


# --------------------------------------------------------------------------------------------
# Folder layout
# --------------------------------------------------------------------------------------------


def _is_voc_folder(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() or (folder / "JPEGImages").is_dir()


def resolve_voc_root(root: str | Path, *, year_folder: str | None = None) -> Path:
    """The folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/``.

    ``root`` is that folder itself, or a ``VOCdevkit`` folder: then ``year_folder`` (e.g.
    ``"VOC2007"``) picks the sub-folder, and may be omitted when there is exactly one.
    """
    root = Path(root)
    if year_folder is not None:
        folder = root / year_folder
        if not _is_voc_folder(folder):
            raise DatasetError(f"{folder}: not a VOC folder (no Annotations/ or JPEGImages/)")
        return folder
    if _is_voc_folder(root):
        return root
    if not root.is_dir():
        raise DatasetError(f"{root}: VOC root folder not found")
    found = sorted(p for p in root.iterdir() if p.is_dir() and _is_voc_folder(p))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(
            f"{root}: not a VOC folder: expected Annotations/ and JPEGImages/ in it or in one "
            "sub-folder such as VOC2007/"
        )
    names = ", ".join(p.name for p in found)
    raise DatasetError(f"{root}: several VOC folders ({names}); pick one with year_folder=")


def _read_image_set(path: Path) -> list[str]:
    """Image ids from an ``ImageSets/Main`` list: the first token of each non-empty line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: image set file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read image set file: {err}") from err
    ids = [line.split()[0] for line in lines if line.strip()]
    seen: set[str] = set()
    for line_number, image_id in enumerate(ids, start=1):
        if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise DatasetError(f"{path}: entry {line_number}: invalid image id {image_id!r}")
        if image_id in seen:
            raise DatasetError(f"{path}: entry {line_number}: duplicate image id {image_id!r}")
        seen.add(image_id)
    return ids


def _check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(class_names)
    if len(names) < 2 or names[0] != BACKGROUND:
        raise ValueError(
            f"class_names must start with {BACKGROUND!r} followed by at least one class "
            f"(label i is class_names[i]), got {names[:3]}..."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {names}")
    return names


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class VOCDetection(Dataset):
    """A torch ``Dataset`` over a Pascal VOC detection folder.

    ``dataset[i]`` returns ``(image, target)`` following the structvision contract (see the
    module docstring for the keys and the coordinate conversion).

    Args:
        root: the VOC folder (holding ``Annotations/``, ``JPEGImages/``, ``ImageSets/``) or a
            ``VOCdevkit`` folder containing it.
        year_folder: sub-folder of ``root`` to use (``"VOC2007"``, ``"VOC2012"``); needed only
            when ``root`` holds several.
        image_set: name of the list in ``ImageSets/Main/`` (``"train"``, ``"val"``,
            ``"trainval"``, ``"test"``). Only the first token of each line is read.
        transforms: optional ``(image, target) -> (image, target)`` callable applied last.
        keep_difficult: keep objects flagged ``difficult`` (their ``difficult`` entry is True;
            :class:`~structvision.evaluation.voc.VOCEvaluator` ignores them). ``False`` drops
            them from the targets.
        class_names: label -> name, ``class_names[0]`` being ``"__background__"``. An object
            whose name is not in it raises :class:`DatasetError`.

    Attributes:
        root: the resolved VOC folder.
        ids: string image id of each sample.
        class_names: as given (a tuple).
        categories: COCO-style ``[{"id": 1, "name": "aeroplane"}, ...]``.
        label_to_category_id: identity ``{1: 1, ..., K: K}`` (for ``COCOEvaluator``).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        year_folder: str | None = None,
        image_set: str = "trainval",
        transforms: Transforms | None = None,
        keep_difficult: bool = True,
        class_names: Sequence[str] = VOC_CLASSES,
    ) -> None:
        self.class_names = _check_class_names(class_names)
        self.root = resolve_voc_root(root, year_folder=year_folder)
        self.image_set = image_set
        self.transforms = transforms
        self.keep_difficult = keep_difficult
        self.categories = [{"id": i, "name": n} for i, n in enumerate(self.class_names) if i > 0]
        self.label_to_category_id = {c["id"]: c["id"] for c in self.categories}
        self._name_to_label = {name: i for i, name in enumerate(self.class_names) if i > 0}
        self.ids = _read_image_set(self.root / "ImageSets" / "Main" / f"{image_set}.txt")
        self._annotations = [self._load(image_id) for image_id in self.ids]

    def _load(self, image_id: str) -> VOCAnnotation:
        image_path = self.image_path_of(image_id)
        if not image_path.is_file():
            raise DatasetError(f"{image_path}: image file not found (image id {image_id!r})")
        annotation = parse_voc_xml(self.root / "Annotations" / f"{image_id}.xml")
        for k, obj in enumerate(annotation.objects):
            if obj.name not in self._name_to_label:
                raise DatasetError(
                    f"{annotation.path}: object #{k}: unknown class name {obj.name!r} "
                    f"(known: {', '.join(self.class_names[1:])})"
                )
        return annotation

    def image_path_of(self, image_id: str) -> Path:
        """Path of the JPEG of string id ``image_id``."""
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_categories(self) -> int:
        """K, the number of object classes (labels are 1..K)."""
        return len(self.class_names) - 1

    def annotation(self, index: int) -> VOCAnnotation:
        """The parsed XML of sample ``index`` (all objects, difficult ones included)."""
        return self._annotations[index]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        annotation = self._annotations[index]
        path = self.image_path_of(self.ids[index])
        image = read_rgb_image(path)  # (3, H, W)
        height, width = image.shape[-2:]
        if annotation.width is not None and (width, height) != (
            annotation.width,
            annotation.height,
        ):
            raise DatasetError(
                f"{annotation.path}: <size> says {annotation.width}x{annotation.height} "
                f"(width x height) but image file {path} is {width}x{height}"
            )
        target = self._target(index, annotation)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _target(self, index: int, annotation: VOCAnnotation) -> dict[str, Any]:
        objects = [o for o in annotation.objects if self.keep_difficult or not o.difficult]
        boxes = torch.tensor([o.box for o in objects], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": boxes,  # (N, 4) xyxy
            "labels": torch.tensor(
                [self._name_to_label[o.name] for o in objects], dtype=torch.int64
            ),  # (N,)
            "difficult": torch.tensor([o.difficult for o in objects], dtype=torch.bool),
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),  # (N,)
            "iscrowd": torch.zeros(len(objects), dtype=torch.int64),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
