"""Pascal VOC semantic segmentation: ``JPEGImages/``, ``SegmentationClass/`` and
``ImageSets/Segmentation/``.

``SegmentationClass/<id>.png`` is a palette ("P" mode) PNG whose pixel *values* are the class
indices ``0 .. 20`` (0 = background) and 255 for the "void" band around objects; the palette
only colours them for display. The file is read with PIL without any colour conversion, so
the values are the labels. Grayscale ("L") PNGs with the same values are accepted too.

``dataset[i]`` returns ``(image, target)``: ``image (3, H, W)`` float32 RGB in ``[0, 1]`` and
``target = {"semantic": (H, W) int64 (255 = ignore), "image_id": int64 scalar}`` where
``image_id`` is the index ``i`` (the string id is ``dataset.ids[i]``).

Missing files are reported when the dataset is built; a label map whose size differs from its
JPEG or that holds a value other than ``0 .. num_classes - 1`` and 255 raises
:class:`~structvision.data.coco.DatasetError` naming the file when the sample is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from structvision.data.coco import DatasetError, read_rgb_image
from structvision.data.voc import VOC_CLASSES, Transforms, _read_image_set, resolve_voc_root

__all__ = ["VOC_SEGMENTATION_CLASSES", "VOCSegmentation", "read_label_png"]

# Index = label value in the PNGs; 0 is the background class (which is evaluated).
VOC_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES[1:])
IGNORE_INDEX = 255


def read_label_png(path: str | Path, *, num_classes: int) -> Tensor:
    """The ``(H, W)`` int64 label map stored in a palette or grayscale PNG's pixel values.

    Raises :class:`DatasetError` naming the file when it cannot be decoded, is not a
    single-channel ("P"/"L") image, or holds values outside ``0 .. num_classes - 1`` and 255.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.array(im) if mode in ("P", "L") else None
    except FileNotFoundError:
        raise DatasetError(f"{path}: label PNG not found") from None
    except Exception as err:  # PIL raises many types for corrupt files
        raise DatasetError(f"cannot decode label PNG {path}: {type(err).__name__}: {err}") from err
    if array is None:
        raise DatasetError(
            f"{path}: label PNG must be a palette ('P') or grayscale ('L') image whose pixel "
            f"values are class indices, got mode {mode!r}"
        )
    labels = torch.from_numpy(array.astype(np.int64))  # (H, W)
    invalid = (labels >= num_classes) & (labels != IGNORE_INDEX)
    if bool(invalid.any()):
        bad = sorted(set(labels[invalid].tolist()))
        raise DatasetError(
            f"{path}: label values must be in 0..{num_classes - 1} or {IGNORE_INDEX}, "
            f"found {bad[:10]}"
        )
    return labels


class VOCSegmentation(Dataset):
    """A torch ``Dataset`` over the segmentation part of a Pascal VOC folder.

    Args:
        root: the VOC folder (holding ``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/``)
            or a ``VOCdevkit`` folder containing it.
        image_set: name of the list in ``ImageSets/Segmentation/`` (``"train"``, ``"val"``,
            ``"trainval"``). Only the first token of each line is read.
        transforms: optional ``(image, target) -> (image, target)`` callable applied last.
        year_folder: sub-folder of ``root`` to use (``"VOC2012"``); needed only when ``root``
            holds several.
        class_names: label value -> name (VOC's 21 classes, ``"background"`` first).

    Attributes:
        root: the resolved VOC folder.
        ids: string image id of each sample.
        class_names: as given (a tuple); ``num_classes`` is its length.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_set: str = "train",
        transforms: Transforms | None = None,
        year_folder: str | None = None,
        class_names: Sequence[str] = VOC_SEGMENTATION_CLASSES,
    ) -> None:
        names = tuple(class_names)
        if not 2 <= len(names) <= IGNORE_INDEX:
            raise ValueError(f"class_names must have 2 to 255 names, got {len(names)}")
        self.class_names = names
        self.root = resolve_voc_root(root, year_folder=year_folder)
        self.image_set = image_set
        self.transforms = transforms
        self.ids = _read_image_set(self.root / "ImageSets" / "Segmentation" / f"{image_set}.txt")
        for image_id in self.ids:
            for path in (self.image_path_of(image_id), self.label_path_of(image_id)):
                if not path.is_file():
                    raise DatasetError(f"{path}: file not found (image id {image_id!r})")

    @property
    def num_classes(self) -> int:
        """C, the number of classes including background (labels ``0 .. C - 1``)."""
        return len(self.class_names)

    def image_path_of(self, image_id: str) -> Path:
        """Path of the JPEG of string id ``image_id``."""
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path_of(self, image_id: str) -> Path:
        """Path of the label PNG of string id ``image_id``."""
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_id = self.ids[index]
        image_path, label_path = self.image_path_of(image_id), self.label_path_of(image_id)
        image = read_rgb_image(image_path)  # (3, H, W)
        semantic = read_label_png(label_path, num_classes=self.num_classes)  # (H, W)
        if tuple(semantic.shape) != tuple(image.shape[-2:]):
            raise DatasetError(
                f"{label_path}: label map is {semantic.shape[1]}x{semantic.shape[0]} "
                f"(width x height) but image {image_path} is {image.shape[2]}x{image.shape[1]}"
            )
        target = {"semantic": semantic, "image_id": torch.tensor(index, dtype=torch.int64)}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
