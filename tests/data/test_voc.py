"""VOCDetection / parse_voc_xml on hand-written VOC folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from structvision.data.coco import DatasetError
from structvision.data.voc import (
    VOC_CLASSES,
    VOCDetection,
    parse_voc_xml,
    resolve_voc_root,
)

# (width, height) of each image.
SIZES = {"000001": (20, 16), "000002": (12, 10), "000003": (8, 6)}


def object_xml(name: str, box: tuple, difficult: int | None = 0) -> str:
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>{flag}"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
        f"<ymax>{ymax}</ymax></bndbox></object>"
    )


def annotation_xml(image_id: str, size: tuple[int, int], objects: list[str]) -> str:
    width, height = size
    return (
        f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{''.join(objects)}</annotation>"
    )


OBJECTS = {
    "000001": [
        object_xml("dog", (1, 1, 20, 16)),
        object_xml(" person ", (3, 4, 5, 9), difficult=1),  # whitespace is stripped
        object_xml("tvmonitor", (7, 7, 7, 7), difficult=None),  # one pixel, no <difficult>
    ],
    "000002": [object_xml("aeroplane", (2.5, 3, 10, 8))],
    "000003": [],
}


def write_voc(folder: Path, *, image_set: str = "trainval") -> Path:
    """A 3-image VOC folder; image colours encode the id so decoding can be checked."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for k, (image_id, size) in enumerate(SIZES.items()):
        colour = (40 * k + 20, 200, 10)
        Image.new("RGB", size, colour).save(folder / "JPEGImages" / f"{image_id}.jpg", quality=95)
        xml = annotation_xml(image_id, size, OBJECTS[image_id])
        (folder / "Annotations" / f"{image_id}.xml").write_text(xml)
    (folder / "ImageSets" / "Main" / f"{image_set}.txt").write_text("000001\n000002\n\n000003\n")
    return folder


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return write_voc(tmp_path / "VOCdevkit" / "VOC2007")


def test_voc_classes_order() -> None:
    assert len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "__background__"
    assert VOC_CLASSES[1] == "aeroplane" and VOC_CLASSES[20] == "tvmonitor"
    assert VOC_CLASSES.index("dog") == 12 and VOC_CLASSES.index("person") == 15
    assert list(VOC_CLASSES[1:]) == sorted(VOC_CLASSES[1:])


def test_targets_exact(voc: Path) -> None:
    dataset = VOCDetection(voc)
    assert len(dataset) == 3
    assert dataset.ids == ["000001", "000002", "000003"]
    image, target = dataset[0]
    assert image.shape == (3, 16, 20) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert torch.allclose(image[:, 8, 10], torch.tensor([20, 200, 10]) / 255.0, atol=0.03)
    # 1-based inclusive -> continuous: (x1 - 1, y1 - 1, x2, y2)
    expected_boxes = torch.tensor([[0, 0, 20, 16], [2, 3, 5, 9], [6, 6, 7, 7]], dtype=torch.float32)
    assert target["boxes"].dtype == torch.float32
    assert torch.equal(target["boxes"], expected_boxes)
    assert torch.equal(target["labels"], torch.tensor([12, 15, 20]))
    assert target["labels"].dtype == torch.int64
    assert torch.equal(target["difficult"], torch.tensor([False, True, False]))
    assert torch.equal(target["area"], torch.tensor([320.0, 18.0, 1.0]))
    assert torch.equal(target["iscrowd"], torch.zeros(3, dtype=torch.int64))
    assert target["image_id"].dtype == torch.int64 and int(target["image_id"]) == 0

    _, target = dataset[1]
    assert torch.equal(target["boxes"], torch.tensor([[1.5, 2.0, 10.0, 8.0]]))
    assert int(target["image_id"]) == 1

    image, target = dataset[2]
    assert image.shape == (3, 6, 8)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["difficult"].shape == (0,) and target["area"].shape == (0,)


def test_drop_difficult(voc: Path) -> None:
    _, target = VOCDetection(voc, keep_difficult=False)[0]
    assert torch.equal(target["labels"], torch.tensor([12, 20]))
    assert torch.equal(target["boxes"], torch.tensor([[0.0, 0, 20, 16], [6, 6, 7, 7]]))
    assert not target["difficult"].any()


def test_categories_for_coco_evaluator(voc: Path) -> None:
    dataset = VOCDetection(voc)
    assert dataset.class_names == VOC_CLASSES
    assert dataset.num_categories == 20
    assert dataset.categories[0] == {"id": 1, "name": "aeroplane"}
    assert dataset.categories[-1] == {"id": 20, "name": "tvmonitor"}
    assert dataset.label_to_category_id == {i: i for i in range(1, 21)}


def test_devkit_root_and_year_folder(voc: Path, tmp_path: Path) -> None:
    devkit = voc.parent
    assert VOCDetection(devkit).root == voc  # the only VOC folder inside
    assert VOCDetection(devkit, year_folder="VOC2007").root == voc
    write_voc(devkit / "VOC2012", image_set="val")
    with pytest.raises(DatasetError, match=r"several VOC folders.*VOC2007, VOC2012"):
        resolve_voc_root(devkit)
    assert len(VOCDetection(devkit, year_folder="VOC2012", image_set="val")) == 3
    with pytest.raises(DatasetError, match="VOC2099"):
        VOCDetection(devkit, year_folder="VOC2099")
    with pytest.raises(DatasetError, match="not a VOC folder"):
        VOCDetection(tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages")


def test_transforms_applied(voc: Path) -> None:
    def flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        return image.flip(-1), {**target, "flipped": torch.tensor(True)}

    image, target = VOCDetection(voc, transforms=flip)[0]
    assert bool(target["flipped"]) and image.shape == (3, 16, 20)


def test_custom_class_names(voc: Path) -> None:
    names = ("__background__", "aeroplane", "dog", "person", "tvmonitor")
    dataset = VOCDetection(voc, class_names=names)
    assert torch.equal(dataset[0][1]["labels"], torch.tensor([2, 3, 4]))
    assert dataset.categories[1] == {"id": 2, "name": "dog"}
    with pytest.raises(ValueError, match="class_names must start with '__background__'"):
        VOCDetection(voc, class_names=("dog", "person"))


def test_missing_files(voc: Path) -> None:
    (voc / "Annotations" / "000002.xml").unlink()
    with pytest.raises(DatasetError, match=r"000002\.xml: annotation file not found"):
        VOCDetection(voc)
    write_voc(voc)
    (voc / "JPEGImages" / "000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"000003\.jpg: image file not found"):
        VOCDetection(voc)
    with pytest.raises(DatasetError, match=r"Main[/\\]test\.txt: image set file not found"):
        VOCDetection(voc, image_set="test")


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ([object_xml("dragon", (1, 1, 3, 3))], r"object #0: unknown class name 'dragon'"),
        ([object_xml("dog", (5, 1, 4, 3))], r"object #0 \('dog'\): malformed box .*xmin=5"),
        (
            [object_xml("dog", (1, 4, 3, 3))],
            r"object #0 \(.dog.\): malformed box \(xmin=1, ymin=4, xmax=3, ymax=3\)",
        ),
        ([object_xml("dog", (1, "a", 3, 3))], r"<ymin> must be a finite number, got 'a'"),
        ([object_xml("dog", (1, 1, "nan", 3))], r"<xmax> must be a finite number"),
        ([object_xml("dog", (1, 1, 3, 3), difficult=2)], r"<difficult> must be 0 or 1"),
        (["<object><name>dog</name></object>"], r"object #0 \('dog'\): missing <bndbox>"),
        (["<object><bndbox/></object>"], r"object #0: missing <name>"),
    ],
)
def test_bad_objects_name_the_file(voc: Path, objects: list[str], message: str) -> None:
    path = voc / "Annotations" / "000002.xml"
    path.write_text(annotation_xml("000002", SIZES["000002"], objects))
    with pytest.raises(DatasetError, match=r"000002\.xml: (object #0 \(.dog.\): )?" + message):
        VOCDetection(voc)


def test_invalid_xml_and_entities(voc: Path) -> None:
    path = voc / "Annotations" / "000001.xml"
    path.write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"000001\.xml: invalid XML"):
        parse_voc_xml(path)
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]>'
        "<annotation><filename>&lol;</filename></annotation>"
    )
    with pytest.raises(DatasetError, match=r"000001\.xml: DOCTYPE/ENTITY declarations"):
        parse_voc_xml(path)
    path.write_text("<image><size/></image>")
    with pytest.raises(DatasetError, match=r"root element must be <annotation>, got <image>"):
        parse_voc_xml(path)


def test_size_mismatch_checked_lazily(voc: Path) -> None:
    path = voc / "Annotations" / "000002.xml"
    path.write_text(annotation_xml("000002", (13, 10), OBJECTS["000002"]))
    dataset = VOCDetection(voc)  # construction does not decode images
    dataset[0]
    with pytest.raises(
        DatasetError, match=r"000002\.xml: <size> says 13x10 .*000002\.jpg is 12x10"
    ):
        dataset[1]


def test_missing_size_skips_check(voc: Path) -> None:
    xml = annotation_xml("000002", SIZES["000002"], OBJECTS["000002"])
    start, end = xml.index("<size>"), xml.index("</size>") + len("</size>")
    (voc / "Annotations" / "000002.xml").write_text(xml[:start] + xml[end:])
    annotation = VOCDetection(voc).annotation(1)
    assert annotation.width is None and annotation.height is None
    image, _ = VOCDetection(voc)[1]
    assert image.shape == (3, 10, 12)


def test_bad_image_set_entries(voc: Path) -> None:
    image_set = voc / "ImageSets" / "Main" / "trainval.txt"
    image_set.write_text("000001\n000002\n000001\n")
    with pytest.raises(DatasetError, match=r"trainval\.txt: entry 3: duplicate image id '000001'"):
        VOCDetection(voc)
    image_set.write_text("../000001\n")
    with pytest.raises(DatasetError, match=r"trainval\.txt: entry 1: invalid image id"):
        VOCDetection(voc)
    image_set.write_text("000002  1\n000003 -1\n")  # class-style lists: first token is the id
    assert VOCDetection(voc).ids == ["000002", "000003"]


def test_greyscale_jpeg_decoded_to_rgb(voc: Path) -> None:
    grey = np.full((10, 12), 128, dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(voc / "JPEGImages" / "000002.jpg")
    image, _ = VOCDetection(voc)[1]
    assert image.shape == (3, 10, 12)
    assert torch.allclose(image, torch.full_like(image, 128 / 255), atol=0.01)
