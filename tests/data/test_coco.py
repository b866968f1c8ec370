"""CocoDataset / check_coco on hand-written COCO folders."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from structvision.data.coco import (
    CocoDataset,
    DatasetError,
    Problem,
    check_coco,
    drop_crowd,
    keypoint_flip_pairs_from_names,
    read_rgb_image,
    resolve_image_root,
)

W1, H1 = 40, 30  # rgb.png


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Reference COCO uncompressed RLE: column-major run lengths, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_mask() -> np.ndarray:
    mask = np.zeros((H1, W1), dtype=np.uint8)
    mask[5:15, 20:30] = 1
    mask[8:12, 24:27] = 0  # a hole
    return mask


def crowd_mask() -> np.ndarray:
    mask = np.zeros((H1, W1), dtype=np.uint8)
    mask[20:28, 2:38] = 1
    return mask


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((H1, W1, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = np.arange(W1, dtype=np.uint8)[None, :]
    rgb[..., 2] = 7
    Image.fromarray(rgb, "RGB").save(folder / "rgb.png")
    gray = np.full((16, 20), 128, dtype=np.uint8)
    gray[0, 0] = 255
    Image.fromarray(gray, "L").save(folder / "gray.png")
    rgba = np.zeros((20, 24, 4), dtype=np.uint8)
    rgba[...] = (10, 20, 30, 0)  # fully transparent: alpha must simply be dropped
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.full((12, 10, 3), 90, dtype=np.uint8), "RGB").save(folder / "empty.jpg")
    palette = Image.fromarray(np.full((8, 8), 1, dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(folder / "palette.png")


def coco_dict() -> dict:
    compressed = mask_utils.encode(np.asfortranarray(rle_mask()))
    compressed["counts"] = compressed["counts"].decode("ascii")
    return {
        "info": {"description": "hand-written test set"},
        "images": [
            {"id": 10, "file_name": "rgb.png", "width": W1, "height": H1},
            {"id": 3, "file_name": "gray.png", "width": 20, "height": 16},
            {"id": 7, "file_name": "rgba.png", "width": 24, "height": 20},
            {"id": 12, "file_name": "empty.jpg", "width": 10, "height": 12},
            {"id": 15, "file_name": "palette.png", "width": 8, "height": 8},
        ],
        "categories": [
            {"id": 9, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"]},
            {"id": 3, "name": "square"},
            {"id": 7, "name": "circle"},
        ],
        "annotations": [
            {  # polygon: the rectangle x in [2, 12], y in [3, 9]
                "id": 1,
                "image_id": 10,
                "category_id": 3,
                "bbox": [2, 3, 10, 6],
                "area": 60.0,
                "iscrowd": 0,
                "segmentation": [[2, 3, 12, 3, 12, 9, 2, 9]],
            },
            {  # compressed RLE
                "id": 2,
                "image_id": 10,
                "category_id": 7,
                "bbox": [20, 5, 10, 10],
                "area": float(rle_mask().sum()),
                "iscrowd": 0,
                "segmentation": compressed,
            },
            {  # crowd region as uncompressed RLE
                "id": 3,
                "image_id": 10,
                "category_id": 3,
                "bbox": [2, 20, 36, 8],
                "area": float(crowd_mask().sum()),
                "iscrowd": 1,
                "segmentation": uncompressed_rle(crowd_mask()),
            },
            {  # keypoints; right_eye not labelled
                "id": 4,
                "image_id": 3,
                "category_id": 9,
                "bbox": [4, 2, 10, 12],
                "area": 100.0,
                "iscrowd": 0,
                "segmentation": [[4, 2, 14, 2, 14, 14, 4, 14]],
                "keypoints": [9, 5, 2, 7.5, 4, 1, 0, 0, 0],
                "num_keypoints": 2,
            },
            {  # grayscale-free RGBA image, polygon triangle
                "id": 5,
                "image_id": 7,
                "category_id": 7,
                "bbox": [1, 1, 10, 10],
                "area": 50.0,
                "iscrowd": 0,
                "segmentation": [[1, 1, 11, 1, 1, 11]],
            },
        ],
    }


def write_coco(folder: Path, data: dict, *, layout: str = "images") -> Path:
    """Write ``data`` + images; layout 'images' (images/ beside JSON), 'flat', or 'coco'."""
    if layout == "images":
        json_path, image_dir = folder / "annotations.json", folder / "images"
    elif layout == "flat":
        json_path, image_dir = folder / "annotations.json", folder
    else:
        json_path, image_dir = folder / "annotations" / "instances_val.json", folder / "val"
    write_images(image_dir)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data))
    return json_path


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "set", coco_dict())


def sample_by_id(dataset: CocoDataset, image_id: int) -> tuple[torch.Tensor, dict]:
    return dataset[dataset.image_ids.index(image_id)]


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def test_valid_file_has_no_problems(coco_file: Path) -> None:
    assert check_coco(coco_file) == []


def test_label_mapping_and_ordering(coco_file: Path) -> None:
    dataset = CocoDataset(coco_file)
    assert len(dataset) == 5
    assert dataset.image_ids == [3, 7, 10, 12, 15]  # sorted by COCO image id
    assert dataset.label_to_category_id == {1: 3, 2: 7, 3: 9}
    assert dataset.category_id_to_label == {3: 1, 7: 2, 9: 3}
    assert dataset.class_names == ["__background__", "square", "circle", "person"]
    assert dataset.num_categories == 3
    assert dataset.num_keypoints == 3
    assert dataset.keypoint_names == ["nose", "left_eye", "right_eye"]
    assert dataset.keypoint_flip_pairs == [(1, 2)]


def test_rgb_image_with_polygon_rle_and_crowd(coco_file: Path) -> None:
    image, target = sample_by_id(CocoDataset(coco_file), 10)
    assert image.shape == (3, H1, W1) and image.dtype == torch.float32
    assert torch.allclose(image[0], torch.full((H1, W1), 200 / 255))
    assert torch.allclose(image[1, 0], torch.arange(W1, dtype=torch.float32) / 255)
    assert target["image_id"].item() == 10 and target["image_id"].dtype == torch.int64
    expected_boxes = torch.tensor([[2, 3, 12, 9], [20, 5, 30, 15], [2, 20, 38, 28]])
    assert torch.equal(target["boxes"], expected_boxes.float())
    assert target["labels"].tolist() == [1, 2, 1]
    assert target["iscrowd"].tolist() == [0, 0, 1]
    assert target["area"].tolist() == [60.0, float(rle_mask().sum()), float(crowd_mask().sum())]
    masks = target["masks"]
    assert masks.shape == (3, H1, W1) and masks.dtype == torch.uint8
    # polygon rectangle: interior set, outside the box empty
    assert masks[0, 4:8, 3:11].all()
    outside = torch.ones(H1, W1, dtype=torch.bool)
    outside[3:10, 2:13] = False
    assert not masks[0][outside].any()
    # RLE masks decode exactly (compressed, and uncompressed via the reference encoder)
    assert np.array_equal(masks[1].numpy(), rle_mask())
    assert np.array_equal(masks[2].numpy(), crowd_mask())
    # keypoints present for every image of a keypoint dataset; zeros for non-person objects
    assert target["keypoints"].shape == (3, 3, 3)
    assert not target["keypoints"].any()


def test_grayscale_image_and_keypoints(coco_file: Path) -> None:
    image, target = sample_by_id(CocoDataset(coco_file), 3)
    assert image.shape == (3, 16, 20)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert image[0, 0, 0].item() == 1.0 and image[0, 1, 1].item() == pytest.approx(128 / 255)
    expected = torch.tensor([[[9, 5, 2], [7.5, 4, 1], [0, 0, 0]]], dtype=torch.float32)
    assert torch.equal(target["keypoints"], expected)
    assert target["labels"].tolist() == [3]


def test_rgba_palette_jpeg_and_empty_image(coco_file: Path) -> None:
    dataset = CocoDataset(coco_file)
    rgba, target = sample_by_id(dataset, 7)
    assert rgba.shape == (3, 20, 24)
    assert torch.allclose(rgba[:, 5, 5], torch.tensor([10, 20, 30]) / 255)
    triangle = target["masks"][0]
    assert triangle.sum().item() == pytest.approx(50, abs=12)  # area of the triangle
    palette, _ = sample_by_id(dataset, 15)
    assert torch.equal(palette[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    empty_image, empty = sample_by_id(dataset, 12)
    assert empty_image.shape == (3, 12, 10)
    assert (empty_image - 90 / 255).abs().max() < 0.03  # JPEG is lossy
    assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
    assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.int64
    assert empty["masks"].shape == (0, 12, 10) and empty["masks"].dtype == torch.uint8
    assert empty["keypoints"].shape == (0, 3, 3)


def test_without_masks_and_transforms(coco_file: Path) -> None:
    calls = []

    def transforms(image, target):
        calls.append(target["image_id"].item())
        return image * 0, target

    dataset = CocoDataset(coco_file, with_masks=False, transforms=transforms)
    image, target = sample_by_id(dataset, 10)
    assert "masks" not in target
    assert calls == [10] and image.abs().sum() == 0


def test_drop_crowd(coco_file: Path) -> None:
    _, target = sample_by_id(CocoDataset(coco_file), 10)
    kept = drop_crowd(target)
    assert kept["iscrowd"].tolist() == [0, 0]
    assert torch.equal(kept["boxes"], target["boxes"][:2])
    assert torch.equal(kept["masks"], target["masks"][:2])
    assert kept["keypoints"].shape == (2, 3, 3) and kept["area"].shape == (2,)
    assert kept["image_id"] is target["image_id"]


@pytest.mark.parametrize("layout", ["images", "flat", "coco"])
def test_image_root_resolution(tmp_path: Path, layout: str) -> None:
    json_path = write_coco(tmp_path, coco_dict(), layout=layout)
    dataset = CocoDataset(json_path, with_masks=False)
    expected = {"images": tmp_path / "images", "flat": tmp_path, "coco": tmp_path / "val"}
    assert dataset.image_root.resolve() == expected[layout].resolve()
    assert resolve_image_root(json_path, ["rgb.png"]).resolve() == expected[layout].resolve()
    assert dataset[0][0].shape == (3, 16, 20)


def test_explicit_image_root(tmp_path: Path) -> None:
    data = coco_dict()
    json_path = tmp_path / "json" / "a.json"
    json_path.parent.mkdir()
    json_path.write_text(json.dumps(data))
    write_images(tmp_path / "pictures")
    assert str(check_coco(json_path)[0]).startswith("image id 10 ('rgb.png')")
    dataset = CocoDataset(json_path, tmp_path / "pictures")
    assert len(dataset) == 5


def test_flip_pairs_from_names() -> None:
    names = ["nose", "left_eye", "right_eye", "L-knee", "R-knee", "leftover", "right hand"]
    assert keypoint_flip_pairs_from_names(names) == [(1, 2), (3, 4)]


def test_read_rgb_image_16bit(tmp_path: Path) -> None:
    array = np.full((4, 5), 65535 // 2, dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    image = read_rgb_image(tmp_path / "deep.png")
    assert image.shape == (3, 4, 5)
    assert image.max().item() == pytest.approx(0.5, abs=1e-4)


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


def broken_coco(folder: Path) -> Path:
    """A copy of the valid set with one hand-made fault per record listed in EXPECTED."""
    data = coco_dict()
    data["images"] += [
        {"id": 20, "file_name": "missing.png", "width": 8, "height": 8},
        {"id": 21, "file_name": "corrupt.png", "width": 8, "height": 8},
        {"id": 22, "file_name": "wrongsize.png", "width": 9, "height": 8},
        {"id": 10, "file_name": "rgb_again.png", "width": W1, "height": H1},
    ]
    base = {"image_id": 10, "category_id": 3, "iscrowd": 0, "area": 4.0}
    data["annotations"] += [
        {**base, "id": 30, "bbox": [1, 1, -2, 3]},
        {**base, "id": 31, "bbox": [float("nan"), 1, 2, 3]},
        {**base, "id": 32, "bbox": [35, 1, 10, 3]},
        {**base, "id": 33, "bbox": [1, 1, 2, 3], "category_id": 99},
        {**base, "id": 1, "bbox": [1, 1, 2, 3]},
        {**base, "id": 34, "bbox": [1, 1, 2, 3], "image_id": 404},
        {**base, "id": 35, "bbox": [1, 1, 2, 3], "segmentation": [[1, 1, 2, 2, 3]]},
        {
            **base,
            "id": 36,
            "bbox": [1, 1, 2, 3],
            "image_id": 3,
            "category_id": 9,
            "keypoints": [1, 1, 2, 3, 3, 2],
        },
        {**base, "id": 37, "bbox": [1, 1, 2, 3], "area": 5.0},  # valid
    ]
    json_path = write_coco(folder, data)
    (folder / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "images" / "wrongsize.png")
    shutil.copy(folder / "images" / "rgb.png", folder / "images" / "rgb_again.png")
    return json_path


EXPECTED = [  # (record, message fragment)
    ("image id 20 ('missing.png')", "image file not found"),
    ("image id 21 ('corrupt.png')", "cannot decode image file"),
    ("image id 22 ('wrongsize.png')", "image file is 8x8 (width x height) but the JSON says 9x8"),
    ("image id 10 ('rgb_again.png')", "duplicate image id 10"),
    ("annotation id 30 (image id 10, 'rgb.png')", "zero or negative size"),
    ("annotation id 31 (image id 10, 'rgb.png')", "non-finite"),
    ("annotation id 32 (image id 10, 'rgb.png')", "outside the 40x30 image"),
    ("annotation id 33 (image id 10, 'rgb.png')", "unknown category id 99"),
    ("annotation id 1 (image id 10, 'rgb.png')", "duplicate annotation id 1"),
    ("annotation id 34 (image id 404)", "unknown image id 404"),
    ("annotation id 35 (image id 10, 'rgb.png')", "polygon 0 must be a flat list"),
    (
        "annotation id 36 (image id 3, 'gray.png')",
        "has 2 points (6 values), the category defines 3",
    ),
]


def assert_expected(problems: list[Problem]) -> None:
    for record, fragment in EXPECTED:
        matching = [p for p in problems if p.record == record and fragment in p.message]
        assert matching, f"no problem {record}: {fragment!r} in\n" + "\n".join(map(str, problems))


def test_check_coco_lists_every_problem(tmp_path: Path) -> None:
    problems = check_coco(broken_coco(tmp_path))
    assert_expected(problems)
    assert len(problems) == len(EXPECTED), "\n".join(map(str, problems))
    assert str(problems[0]) == f"{problems[0].record}: {problems[0].message}"


def test_check_coco_without_decoding_skips_image_content(tmp_path: Path) -> None:
    problems = check_coco(broken_coco(tmp_path), check_images=False)
    messages = " ".join(p.message for p in problems)
    assert "image file not found" in messages
    assert "cannot decode" not in messages and "JSON says" not in messages
    assert len(problems) == len(EXPECTED) - 2


def test_dataset_raises_naming_problems(tmp_path: Path) -> None:
    json_path = broken_coco(tmp_path)
    with pytest.raises(DatasetError) as info:
        CocoDataset(json_path)
    message = str(info.value)
    assert str(json_path) in message
    assert "10 problem(s)" in message  # the two decode-level problems are left to check_coco
    for record, fragment in EXPECTED[:1] + EXPECTED[3:]:
        assert f"{record}: " in message and fragment in message


def test_dataset_skip_invalid_keeps_good_records(tmp_path: Path) -> None:
    json_path = broken_coco(tmp_path)
    with pytest.warns(UserWarning, match="skipped 10 invalid record"):
        dataset = CocoDataset(json_path, skip_invalid=True)
    assert len(dataset.skipped) == 10
    # image 10 has a duplicate id -> dropped with its annotations; 20 is missing
    assert dataset.image_ids == [3, 7, 12, 15, 21, 22]
    _, target = sample_by_id(dataset, 3)
    assert target["boxes"].shape == (1, 4)  # annotation 36 (bad keypoints) dropped
    with pytest.raises(DatasetError, match=r"corrupt\.png"):
        sample_by_id(dataset, 21)
    with pytest.raises(DatasetError, match="JSON says 9x8"):
        sample_by_id(dataset, 22)


def test_skip_invalid_drops_only_bad_annotations(tmp_path: Path) -> None:
    data = coco_dict()
    data["annotations"].append(
        {"id": 50, "image_id": 10, "category_id": 3, "bbox": [0, 0, 0, 4], "iscrowd": 0}
    )
    json_path = write_coco(tmp_path, data)
    with pytest.warns(UserWarning):
        dataset = CocoDataset(json_path, skip_invalid=True)
    assert [str(p) for p in dataset.skipped] == [
        "annotation id 50 (image id 10, 'rgb.png'): bbox has zero or negative size (w=0, h=4)"
    ]
    _, target = sample_by_id(dataset, 10)
    assert target["boxes"].shape == (3, 4)


def test_invalid_json_and_missing_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    problems = check_coco(bad)
    assert len(problems) == 1 and problems[0].record == str(bad)
    assert "invalid JSON" in problems[0].message
    with pytest.raises(DatasetError, match=r"bad\.json.*invalid JSON"):
        CocoDataset(bad, skip_invalid=True)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"images": [], "annotations": {}}))
    messages = [p.message for p in check_coco(partial)]
    assert messages == [
        "top-level 'annotations' must be a list, got dict",
        "missing top-level key 'categories'",
    ]
    with pytest.raises(DatasetError, match="missing top-level key 'categories'"):
        CocoDataset(partial, skip_invalid=True)
    problems = check_coco(tmp_path / "nope.json")
    assert problems[0].message == "annotation file not found"


def test_bad_categories_are_fatal(tmp_path: Path) -> None:
    data = coco_dict()
    data["categories"].append({"id": 3, "name": "again"})
    json_path = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match="duplicate category id 3"):
        CocoDataset(json_path, skip_invalid=True)


def test_error_lists_first_twenty_and_count(tmp_path: Path) -> None:
    data = coco_dict()
    data["annotations"] += [
        {"id": 100 + i, "image_id": 10, "category_id": 3, "bbox": [0, 0, -1, 1]} for i in range(25)
    ]
    json_path = write_coco(tmp_path, data)
    with pytest.raises(DatasetError) as info:
        CocoDataset(json_path)
    message = str(info.value)
    assert "25 problem(s)" in message and "... and 5 more" in message
    assert "annotation id 119 " in message and "annotation id 120 " not in message


def test_large_file_loads_fast(tmp_path: Path) -> None:
    """20k annotations on 2k images: structure checks + indexing well under a few seconds."""
    write_images(tmp_path / "images")
    images = [{"id": i, "file_name": "rgb.png", "width": W1, "height": H1} for i in range(2000)]
    polygon = [[2, 3, 12, 3, 12, 9, 2, 9]]
    annotations = [
        {"id": i, "image_id": i % 2000, "category_id": 1 + i % 3, "bbox": [2, 3, 10, 6],
         "area": 60.0, "iscrowd": 0, "segmentation": polygon}
        for i in range(20000)
    ]  # fmt: skip
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    json_path = tmp_path / "big.json"
    json_path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    start = time.perf_counter()
    dataset = CocoDataset(json_path)
    elapsed = time.perf_counter() - start
    assert len(dataset) == 2000 and len(dataset.annotations(0)) == 10
    assert elapsed < 5.0, f"loading took {elapsed:.2f} s"


def test_dataset_targets_evaluate_perfectly_against_the_file(coco_file: Path) -> None:
    """CocoDataset's label mapping and COCOEvaluator's default mapping agree; crowd RLE in
    the file is ignored by the evaluation."""
    from structvision.evaluation.coco import COCOEvaluator

    dataset = CocoDataset(coco_file)
    evaluator = COCOEvaluator(iou_types=("bbox", "segm"), coco_gt=coco_file)
    assert evaluator.label_to_category_id == dataset.label_to_category_id
    for index in range(len(dataset)):
        _, target = dataset[index]
        predicted = drop_crowd(target)
        predicted["scores"] = torch.ones(len(predicted["boxes"]))
        evaluator.update([target], [predicted])
    metrics = evaluator.compute()
    assert metrics["bbox/AP"] == pytest.approx(1.0)
    assert metrics["segm/AP"] == pytest.approx(1.0)
