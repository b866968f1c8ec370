"""VOCSegmentation on a tiny VOC-layout folder written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from structvision.data.coco import DatasetError
from structvision.data.voc_segmentation import (
    VOC_SEGMENTATION_CLASSES,
    VOCSegmentation,
    read_label_png,
)
from structvision.viz.draw import semantic_palette


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _label_maps() -> dict[str, np.ndarray]:
    first = np.zeros((12, 16), dtype=np.uint8)
    first[2:8, 3:10] = 12  # dog
    first[1, 2:11] = 255  # void band
    second = np.full((10, 14), 15, dtype=np.uint8)  # person
    second[:, :4] = 0
    second[9, :] = 20  # tvmonitor
    second[:, 4] = 255
    return {"2007_000001": first, "2007_000002": second}


def _save_palette_png(labels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(labels, mode="P")
    image.putpalette(semantic_palette(256).flatten().tolist())
    image.save(path)


def write_voc_segmentation(folder: Path, maps: dict[str, np.ndarray]) -> Path:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for image_id, labels in maps.items():
        height, width = labels.shape
        Image.new("RGB", (width, height), (30, 160, 220)).save(
            folder / "JPEGImages" / f"{image_id}.jpg", quality=95
        )
        _save_palette_png(labels, folder / "SegmentationClass" / f"{image_id}.png")
    (folder / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(maps) + "\n\n")
    return folder


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return write_voc_segmentation(tmp_path / "VOCdevkit" / "VOC2012", _label_maps())


def test_classes() -> None:
    assert len(VOC_SEGMENTATION_CLASSES) == 21
    assert VOC_SEGMENTATION_CLASSES[0] == "background"
    assert VOC_SEGMENTATION_CLASSES[12] == "dog" and VOC_SEGMENTATION_CLASSES[20] == "tvmonitor"


def test_targets_exact(voc: Path) -> None:
    dataset = VOCSegmentation(voc.parent)  # the VOCdevkit folder: VOC2012 found inside
    assert dataset.root == voc
    assert dataset.ids == ["2007_000001", "2007_000002"]
    assert len(dataset) == 2 and dataset.num_classes == 21
    for index, labels in enumerate(_label_maps().values()):
        image, target = dataset[index]
        assert image.shape == (3, *labels.shape) and image.dtype == torch.float32
        torch.testing.assert_close(
            image[:, 3, 3], torch.tensor([30, 160, 220]) / 255.0, atol=0.03, rtol=0
        )
        assert target["semantic"].dtype == torch.int64
        assert torch.equal(target["semantic"], torch.from_numpy(labels.astype(np.int64)))
        assert int(target["image_id"]) == index


def test_palette_png_is_read_as_indices_not_colours(voc: Path) -> None:
    path = voc / "SegmentationClass" / "2007_000001.png"
    with Image.open(path) as im:
        assert im.mode == "P"
        dog_colour = im.convert("RGB").getpixel((4, 4))
    assert dog_colour == tuple(semantic_palette()[12].tolist()) == (64, 0, 128)  # VOC dog
    assert int(read_label_png(path, num_classes=21)[4, 4]) == 12


def test_transforms_are_applied(voc: Path) -> None:
    def flip(image, target):
        return image.flip(-1), {**target, "semantic": target["semantic"].flip(-1)}

    _, target = VOCSegmentation(voc, transforms=flip)[0]
    assert torch.equal(
        target["semantic"], torch.from_numpy(_label_maps()["2007_000001"][:, ::-1].copy()).long()
    )


def test_missing_png_is_named(voc: Path) -> None:
    (voc / "SegmentationClass" / "2007_000002.png").unlink()
    with pytest.raises(DatasetError, match=r"2007_000002\.png"):
        VOCSegmentation(voc)


def test_missing_image_set_is_named(voc: Path) -> None:
    with pytest.raises(DatasetError, match=r"val\.txt"):
        VOCSegmentation(voc, image_set="val")


def test_size_mismatch_is_named(voc: Path) -> None:
    _save_palette_png(
        np.zeros((5, 5), dtype=np.uint8), voc / "SegmentationClass" / "2007_000002.png"
    )
    dataset = VOCSegmentation(voc)
    dataset[0]
    with pytest.raises(DatasetError, match=r"2007_000002\.png.*5x5.*14x10"):
        dataset[1]


def test_bad_label_values_are_named(voc: Path) -> None:
    labels = _label_maps()["2007_000001"].copy()
    labels[0, 0] = 21
    labels[0, 1] = 100
    _save_palette_png(labels, voc / "SegmentationClass" / "2007_000001.png")
    with pytest.raises(DatasetError, match=r"2007_000001\.png.*\[21, 100\]"):
        VOCSegmentation(voc)[0]


def test_rgb_label_png_is_refused(voc: Path) -> None:
    Image.new("RGB", (16, 12)).save(voc / "SegmentationClass" / "2007_000001.png")
    with pytest.raises(DatasetError, match="mode 'RGB'"):
        VOCSegmentation(voc)[0]
