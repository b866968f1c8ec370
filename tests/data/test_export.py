"""Tests of COCO export: pycocotools and torchvision must read back exactly what we wrote."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

from structvision.data.export import (
    annotations_from_target,
    coco_dict_from_samples,
    mask_to_polygons,
    mask_to_uncompressed_rle,
    write_coco,
)
from structvision.data.synthetic import ShapesDataset

# pycocotools' decode warns under numpy 2 (its own __array__ signature); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CATEGORIES = [{"id": 1, "name": "a", "supercategory": "x"}, {"id": 2, "name": "b"}]


@pytest.fixture(scope="module")
def dataset():
    return ShapesDataset(num_images=4, seed=11, image_size=64, max_objects=5, clutter=3)


@pytest.fixture(scope="module")
def rle_export(dataset, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("coco_rle")
    return write_coco(dataset, out_dir, mask_format="rle")


def _xyxy_to_xywh(boxes: torch.Tensor) -> list[list[float]]:
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()


def _filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: background regions (4-connected) that do not touch the
    image border become foreground."""
    count, components = cv2.connectedComponents((mask == 0).astype(np.uint8), connectivity=4)
    border = set(
        np.concatenate([components[0], components[-1], components[:, 0], components[:, -1]])
    )
    holes = [c for c in range(1, count) if c not in border]
    return (mask.astype(bool) | np.isin(components, holes)).astype(np.uint8)


# ----------------------------------------------------------------------------- RLE / pycocotools


def test_uncompressed_rle_matches_pycocotools_encoding():
    rng = np.random.default_rng(0)
    masks = [rng.random((7, 9)) < 0.5, np.ones((4, 5)), np.zeros((3, 3)), np.eye(6)]
    for mask in masks:
        mask = mask.astype(np.uint8)
        ours = mask_to_uncompressed_rle(mask)
        assert sum(ours["counts"]) == mask.size
        compressed = mask_utils.frPyObjects(ours, *mask.shape)
        assert compressed["counts"] == mask_utils.encode(np.asfortranarray(mask))["counts"]
        np.testing.assert_array_equal(mask_utils.decode(compressed), mask)
    assert mask_to_uncompressed_rle(np.array([[1, 1], [0, 1]]))["counts"] == [0, 1, 1, 2]


def test_pycocotools_reads_back_masks_boxes_and_labels_exactly(dataset, rle_export):
    coco = COCO(str(rle_export))
    assert coco.loadCats(coco.getCatIds()) == dataset.categories
    assert sorted(coco.getImgIds()) == list(range(len(dataset)))
    for index in range(len(dataset)):
        image, target = dataset[index]
        info = coco.loadImgs(index)[0]
        assert info["file_name"] == f"{index:06d}.png"
        assert (info["height"], info["width"]) == (64, 64)
        pixels = np.asarray(Image.open(rle_export.parent / "images" / info["file_name"]))
        np.testing.assert_array_equal(pixels, (image * 255).round().byte().permute(1, 2, 0))
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=index)), key=lambda a: a["id"])
        assert len(anns) == len(target["labels"])
        masks = np.stack([coco.annToMask(a) for a in anns]) if anns else np.zeros((0, 64, 64))
        np.testing.assert_array_equal(masks, target["masks"].numpy())
        assert [a["bbox"] for a in anns] == _xyxy_to_xywh(target["boxes"])
        assert [a["category_id"] for a in anns] == target["labels"].tolist()
        assert [a["area"] for a in anns] == target["area"].tolist()
        assert all(a["iscrowd"] == 0 for a in anns)
        rle_boxes = [mask_utils.toBbox(coco.annToRLE(a)).tolist() for a in anns]
        assert rle_boxes == _xyxy_to_xywh(target["boxes"])
    all_ids = sorted(coco.getAnnIds())
    assert all_ids == list(range(1, len(all_ids) + 1))


def test_torchvision_coco_wrapper_reads_back_our_targets(dataset, rle_export):
    coco_detection = CocoDetection(str(rle_export.parent / "images"), str(rle_export))
    wrapped = wrap_dataset_for_transforms_v2(
        coco_detection, target_keys={"boxes", "labels", "masks", "image_id"}
    )
    assert len(wrapped) == len(dataset)
    for index in range(len(dataset)):
        _, ours = dataset[index]
        _, theirs = wrapped[index]
        assert theirs["image_id"] == index
        if len(ours["labels"]) == 0:
            continue
        torch.testing.assert_close(theirs["boxes"].as_subclass(torch.Tensor), ours["boxes"])
        assert torch.equal(theirs["labels"], ours["labels"])
        assert torch.equal(theirs["masks"].as_subclass(torch.Tensor), ours["masks"])


# ----------------------------------------------------------------------------- polygons


def test_polygons_are_exact_without_holes_and_fill_holes(dataset, tmp_path):
    path = write_coco(dataset, tmp_path, mask_format="polygon")
    coco = COCO(str(path))
    ious = []
    for index in range(len(dataset)):
        _, target = dataset[index]
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=index)), key=lambda a: a["id"])
        for ann, mask in zip(anns, target["masks"].numpy(), strict=True):
            assert isinstance(ann["segmentation"], list)
            decoded = coco.annToMask(ann)
            np.testing.assert_array_equal(decoded, _filled(mask))
            ious.append((decoded & mask).sum() / (decoded | mask).sum())
    assert min(ious) > 0.9


def test_polygons_of_hand_made_masks():
    ring = np.zeros((20, 24), np.uint8)
    cv2.circle(ring, (12, 10), 8, 1, -1)
    cv2.circle(ring, (12, 10), 3, 0, -1)
    diagonal = np.zeros((20, 24), np.uint8)
    diagonal[[2, 3, 4], [5, 6, 7]] = 1  # 8-connected staircase
    corner = np.zeros((20, 24), np.uint8)
    corner[0, 0] = corner[19, 23] = 1  # single pixels at opposite image corners
    line = np.zeros((20, 24), np.uint8)
    line[5, 3:20] = 1
    for mask in (ring, diagonal, corner, line):
        polygons = mask_to_polygons(mask)
        assert all(len(p) >= 8 and len(p) % 2 == 0 for p in polygons)
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 20, 24)))
        np.testing.assert_array_equal(decoded, _filled(mask))
    assert len(mask_to_polygons(corner)) == 2
    assert _filled(ring).sum() > ring.sum()  # the ring really has a hole


# ----------------------------------------------------------------------------- file writing


def test_write_coco_reports_progress_and_leaves_no_temporary_files(dataset, tmp_path):
    calls = []
    path = write_coco(
        dataset, tmp_path, num_images=3, mask_format="none", progress=lambda *a: calls.append(a)
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.json", "images"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
    data = json.loads(path.read_text())
    assert all("segmentation" not in a for a in data["annotations"])
    assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
    assert "ShapesDataset" in data["info"]["dataset"]
    write_coco(dataset, tmp_path, num_images=1)  # overwriting works
    assert len(json.loads(path.read_text())["images"]) == 1


class _FailingDataset:
    categories = CATEGORIES

    def __len__(self):
        return 3

    def __getitem__(self, index):
        if index == 2:
            raise RuntimeError("disk on fire")
        return torch.zeros(3, 8, 8), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}


def test_a_failed_export_writes_no_annotation_file(tmp_path):
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_coco(_FailingDataset(), tmp_path, mask_format="none")
    assert not (tmp_path / "annotations.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["images"]


def test_write_coco_argument_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        write_coco(dataset, tmp_path, num_images=99)
    with pytest.raises(ValueError, match="mask_format"):
        write_coco(dataset, tmp_path, mask_format="bitmap")
    with pytest.raises(ValueError, match="categories"):
        write_coco([(torch.zeros(3, 4, 4), {})], tmp_path)


# ----------------------------------------------------------------------------- in-memory dicts


def _target(labels, masks, **extra):
    masks = torch.as_tensor(np.asarray(masks, dtype=np.uint8))
    boxes = torch.zeros(len(labels), 4)
    return {"boxes": boxes, "labels": torch.tensor(labels), "masks": masks, **extra}


def test_coco_dict_from_samples_builds_loadable_ground_truth():
    mask = np.zeros((1, 6, 8), np.uint8)
    mask[0, 1:3, 2:5] = 1
    samples = [
        (_target([2], mask, image_id=torch.tensor(7)), "a.png", (6, 8)),
        (_target([], np.zeros((0, 6, 8))), "b.png", (6, 8)),  # no objects; id = position
    ]
    coco_dict = coco_dict_from_samples(samples, categories=CATEGORIES)
    assert [i["id"] for i in coco_dict["images"]] == [7, 1]
    assert len(coco_dict["annotations"]) == 1
    annotation = coco_dict["annotations"][0]
    assert annotation["area"] == 6.0  # from the mask when the target has no area
    coco = COCO()
    coco.dataset = coco_dict
    coco.createIndex()
    np.testing.assert_array_equal(coco.annToMask(coco.loadAnns(1)[0]), mask[0])


def test_keypoints_are_written_flat_with_visible_count():
    keypoints = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0], [5.0, 6.0, 1.0]]])
    target = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 3.0]]), "labels": torch.tensor([1])}
    records = annotations_from_target(
        {**target, "keypoints": keypoints},
        image_id=0,
        image_size=(8, 8),
        first_annotation_id=5,
        mask_format="none",
    )
    assert records[0]["keypoints"] == [1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 5.0, 6.0, 1.0]
    assert records[0]["num_keypoints"] == 2
    assert records[0]["id"] == 5 and records[0]["bbox"] == [0.0, 0.0, 4.0, 3.0]
    assert records[0]["area"] == 12.0  # box area without masks or area


def test_coco_dict_errors_name_the_problem():
    mask = np.ones((1, 4, 4))
    with pytest.raises(ValueError, match=r"labels \[3\]"):
        coco_dict_from_samples([(_target([3], mask), "a.png", (4, 4))], categories=CATEGORIES)
    with pytest.raises(ValueError, match="duplicate image id 0"):
        coco_dict_from_samples(
            [(_target([1], mask, image_id=0), "a.png", (4, 4))] * 2, categories=CATEGORIES
        )
    with pytest.raises(ValueError, match=r"masks must have shape \(1, 5, 4\)"):
        coco_dict_from_samples([(_target([1], mask), "a.png", (5, 4))], categories=CATEGORIES)
    with pytest.raises(ValueError, match="'labels'"):
        coco_dict_from_samples([({"boxes": torch.zeros(0, 4)}, "a.png", (4, 4))], categories=[])
