"""COCOEvaluator against hand-computable cases and pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from structvision.evaluation.coco import COCOEvaluator, metric_names

SIZE = 128  # images are SIZE x SIZE


def rect_mask(x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def make_targets() -> list[dict[str, torch.Tensor]]:
    """Three images; small (< 32²), medium and large (> 96²) objects; labels 1 and 2."""
    rects = [
        [(2, 2, 12, 10), (20, 30, 70, 70)],  # small, medium
        [(5, 5, 120, 110)],  # large
        [(40, 40, 50, 48), (60, 10, 100, 60), (0, 70, 30, 100)],  # small, medium, medium
    ]
    labels = [[1, 2], [2], [1, 1, 2]]
    targets = []
    for image_id, (image_rects, image_labels) in enumerate(zip(rects, labels, strict=True)):
        masks = torch.stack([rect_mask(*r) for r in image_rects])
        targets.append(
            {
                "boxes": torch.tensor(image_rects, dtype=torch.float32),
                "labels": torch.tensor(image_labels),
                "masks": masks,
                "area": masks.flatten(1).sum(1).float(),
                "iscrowd": torch.zeros(len(image_rects), dtype=torch.int64),
                "image_id": torch.tensor(100 + image_id),
            }
        )
    return targets


def perfect_predictions(targets: list[dict]) -> list[dict]:
    return [
        {
            "boxes": t["boxes"].clone(),
            "labels": t["labels"].clone(),
            "scores": torch.ones(len(t["boxes"])),
            "masks": t["masks"][:, None].float() * 0.9,  # (N, 1, H, W) probabilities
        }
        for t in targets
    ]


def coco_gt_dict(targets: list[dict], category_ids: dict[int, int]) -> dict:
    """The same ground truth as a COCO JSON dict (polygon rectangles)."""
    images, annotations = [], []
    for t in targets:
        image_id = int(t["image_id"])
        images.append(
            {"id": image_id, "file_name": f"{image_id}.png", "width": SIZE, "height": SIZE}
        )
        for box, label, crowd in zip(
            t["boxes"].tolist(), t["labels"].tolist(), t["iscrowd"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": crowd,
                    "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
                }
            )
    categories = [{"id": c, "name": f"class {c}"} for c in sorted(category_ids.values())]
    return {"images": images, "annotations": annotations, "categories": categories}


def single_box_case(gt_boxes: list, pred_boxes: list, scores: list) -> dict[str, float]:
    target = {
        "boxes": torch.tensor(gt_boxes, dtype=torch.float32),
        "labels": torch.ones(len(gt_boxes), dtype=torch.int64),
        "image_id": torch.tensor(1),
    }
    prediction = {
        "boxes": torch.tensor(pred_boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(pred_boxes), dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }
    evaluator = COCOEvaluator(iou_types=("bbox",))
    evaluator.update([target], [prediction])
    return evaluator.compute()


def test_metric_names_follow_pycocotools_stats_order() -> None:
    assert metric_names("bbox") == [
        "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
    ]  # fmt: skip
    assert metric_names("keypoints") == [
        "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
    ]  # fmt: skip


def test_ground_truth_against_itself_without_coco_gt() -> None:
    targets = make_targets()
    evaluator = COCOEvaluator(iou_types=("bbox", "segm"))
    evaluator.update(targets, perfect_predictions(targets))
    metrics = evaluator.compute()
    assert len(metrics) == 24
    for key, value in metrics.items():
        if not key.endswith("/AR1"):
            assert value == pytest.approx(1.0), key
    # one detection per image and class: class 1 recalls 2 of its 3 objects (image 102 has two)
    assert metrics["bbox/AR1"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["segm/AR1"] == pytest.approx((2 / 3 + 1) / 2)
    assert "Average Precision" in evaluator.summary()


def test_ground_truth_against_itself_with_coco_gt_file(tmp_path: Path) -> None:
    targets = make_targets()
    mapping = {1: 4, 2: 11}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(coco_gt_dict(targets, mapping)))
    evaluator = COCOEvaluator(iou_types=("bbox", "segm"), coco_gt=gt_path)
    assert evaluator.label_to_category_id == mapping  # sorted-category default
    evaluator.update(targets, perfect_predictions(targets))
    metrics = evaluator.compute()
    for key in (
        "bbox/AP",
        "bbox/AP75",
        "bbox/APs",
        "bbox/ARl",
        "segm/AP",
        "segm/AP75",
        "segm/APs",
        "segm/AR100",
    ):
        assert metrics[key] == pytest.approx(1.0), key


def test_one_of_two_objects_detected() -> None:
    metrics = single_box_case(
        gt_boxes=[[0, 0, 10, 10], [50, 50, 60, 60]], pred_boxes=[[0, 0, 10, 10]], scores=[0.9]
    )
    # precision 1 up to recall 0.5, nothing beyond: 51 of the 101 recall points
    assert metrics["bbox/AP50"] == pytest.approx(51 / 101)
    assert metrics["bbox/AP"] == pytest.approx(51 / 101)
    assert metrics["bbox/AR100"] == pytest.approx(0.5)


def test_iou_062_counts_at_ap50_not_ap75() -> None:
    metrics = single_box_case(gt_boxes=[[0, 0, 10, 10]], pred_boxes=[[0, 0, 10, 6.2]], scores=[0.8])
    # matched at IoU thresholds 0.50, 0.55, 0.60 of the ten -> AP = 0.3
    expected = {
        "AP": 0.3, "AP50": 1.0, "AP75": 0.0, "APs": 0.3, "APm": -1.0, "APl": -1.0,
        "AR1": 0.3, "AR10": 0.3, "AR100": 0.3, "ARs": 0.3, "ARm": -1.0, "ARl": -1.0,
    }  # fmt: skip
    assert {k.split("/")[1]: v for k, v in metrics.items()} == pytest.approx(expected)


def test_half_precision_predictions() -> None:
    targets = make_targets()
    predictions = perfect_predictions(targets)
    for prediction in predictions:
        prediction["scores"] = prediction["scores"].to(torch.bfloat16)
        prediction["masks"] = prediction["masks"].to(torch.float16)
    evaluator = COCOEvaluator(iou_types=("bbox", "segm"))
    evaluator.update(targets, predictions)
    metrics = evaluator.compute()
    assert metrics["bbox/AP"] == pytest.approx(1.0) and metrics["segm/AP"] == pytest.approx(1.0)


def test_non_contiguous_category_ids() -> None:
    targets = make_targets()
    gt = coco_gt_dict(targets, {1: 5, 2: 17})
    predictions = perfect_predictions(targets)
    evaluator = COCOEvaluator(coco_gt=gt, label_to_category_id={1: 5, 2: 17})
    evaluator.update(targets, predictions)
    assert evaluator.compute()["bbox/AP"] == pytest.approx(1.0)
    assert {r["category_id"] for r in evaluator.coco_results()} == {5, 17}
    swapped = COCOEvaluator(coco_gt=gt, label_to_category_id={1: 17, 2: 5})
    swapped.update(targets, predictions)
    assert swapped.compute()["bbox/AP"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"labels \[2\] that label_to_category_id does not map"):
        COCOEvaluator(coco_gt=gt, label_to_category_id={1: 5}).update(targets, predictions)


def test_detection_on_crowd_region_is_ignored() -> None:
    def run(iscrowd: int) -> float:
        target = {
            "boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 100.0, 100.0]]),
            "labels": torch.tensor([1, 1]),
            "iscrowd": torch.tensor([0, iscrowd]),
            "image_id": torch.tensor(3),
        }
        if not iscrowd:  # no crowd annotation at all: the second detection is a false positive
            target = {k: v[:1] if v.ndim else v for k, v in target.items()}
        prediction = {
            "boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [50.0, 50.0, 70.0, 70.0]]),
            "labels": torch.tensor([1, 1]),
            "scores": torch.tensor([0.5, 0.9]),  # the one on the crowd ranks first
        }
        evaluator = COCOEvaluator()
        evaluator.update([target], [prediction])
        return evaluator.compute()["bbox/AP50"]

    assert run(iscrowd=1) == pytest.approx(1.0)
    assert run(iscrowd=0) == pytest.approx(0.5)  # precision 1/2 at recall 1


def test_results_json_loads_with_pycocotools(tmp_path: Path) -> None:
    targets = make_targets()
    gt = coco_gt_dict(targets, {1: 1, 2: 2})
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    evaluator = COCOEvaluator(iou_types=("bbox", "segm"), coco_gt=gt_path)
    evaluator.update(targets, perfect_predictions(targets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        for iou_type in (None, "bbox", "segm"):
            path = evaluator.results_json(tmp_path / f"results_{iou_type}.json", iou_type)
            loaded = json.loads(path.read_text())
            assert len(loaded) == 6
            results = coco.loadRes(str(path))
            assert len(results.getAnnIds()) == 6
    entry = loaded[0]
    assert set(entry) == {"image_id", "category_id", "score", "segmentation"}
    assert isinstance(entry["segmentation"]["counts"], str)
    first = evaluator.coco_results()[0]
    assert first["bbox"] == [2.0, 2.0, 10.0, 8.0] and first["image_id"] == 100
    with warnings.catch_warnings():  # pycocotools vs numpy 2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(
            {**first["segmentation"], "counts": first["segmentation"]["counts"].encode()}
        )
    assert np.array_equal(decoded, rect_mask(2, 2, 12, 10).numpy())


def test_records_pickle_and_merge_like_distributed_gather() -> None:
    targets = make_targets()
    predictions = perfect_predictions(targets)
    # degrade some predictions so the metrics are not trivially 1.0
    predictions[0]["boxes"][1] += torch.tensor([6.0, 0.0, 6.0, 0.0])
    predictions[2]["scores"] = torch.tensor([0.3, 0.8, 0.1])
    predictions[2]["labels"] = torch.tensor([1, 2, 2])
    whole = COCOEvaluator(iou_types=("bbox", "segm"))
    whole.update(targets, predictions)
    expected = whole.compute()
    assert expected["bbox/AP"] < 0.9

    rank0, rank1 = (
        COCOEvaluator(iou_types=("bbox", "segm")),
        COCOEvaluator(iou_types=("bbox", "segm")),
    )
    rank0.update(targets[:2], predictions[:2])
    rank1.update(targets[2:], predictions[2:])
    rank1.update(targets[:1], predictions[:1])  # DistributedSampler padding repeats a sample
    gathered = [pickle.loads(pickle.dumps(r.records)) for r in (rank0, rank1)]
    merged = COCOEvaluator(iou_types=("bbox", "segm"))
    merged.records = [record for records in gathered for record in records]
    assert merged.compute() == pytest.approx(expected)


def test_no_predictions_gives_zeros() -> None:
    targets = make_targets()
    empty = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
         "masks": torch.zeros(0, 1, SIZE, SIZE)}
        for _ in targets
    ]  # fmt: skip
    evaluator = COCOEvaluator(iou_types=("bbox", "segm"))
    evaluator.update(targets, empty)
    metrics = evaluator.compute()
    assert len(metrics) == 24 and all(v == 0.0 for v in metrics.values())
    assert COCOEvaluator().compute() == {f"bbox/{n}": 0.0 for n in metric_names("bbox")}


def test_keypoints_against_themselves() -> None:
    keypoints = torch.tensor(
        [[[10, 10, 2], [30, 12, 2], [20, 40, 1]], [[70, 70, 2], [0, 0, 0], [90, 100, 2]]],
        dtype=torch.float32,
    )
    target = {
        "boxes": torch.tensor([[5.0, 5.0, 40.0, 45.0], [60.0, 60.0, 100.0, 110.0]]),
        "labels": torch.tensor([1, 1]),
        "keypoints": keypoints,
        "area": torch.tensor([1400.0, 2000.0]),
        "image_id": torch.tensor(9),
    }
    prediction = {
        "boxes": target["boxes"],
        "labels": target["labels"],
        "scores": torch.tensor([0.9, 0.8]),
        "keypoints": keypoints,
    }
    evaluator = COCOEvaluator(iou_types=("keypoints", "bbox"), keypoint_sigmas=[0.05, 0.05, 0.1])
    evaluator.update([target], [prediction])
    metrics = evaluator.compute()
    assert metrics["keypoints/AP"] == pytest.approx(1.0)
    assert metrics["keypoints/APl"] == -1.0  # both objects are medium
    assert len([k for k in metrics if k.startswith("keypoints/")]) == 10
    # a far-off prediction scores zero
    prediction["keypoints"] = keypoints + torch.tensor([30.0, 30.0, 0.0])
    shifted = COCOEvaluator(iou_types=("keypoints",), keypoint_sigmas=[0.05, 0.05, 0.1])
    shifted.update([target], [prediction])
    assert shifted.compute()["keypoints/AP"] == pytest.approx(0.0)
    no_sigmas = COCOEvaluator(iou_types=("keypoints",))
    no_sigmas.update([target], [prediction])
    with pytest.raises(ValueError, match="keypoint_sigmas is required for 3 keypoints"):
        no_sigmas.compute()


def test_bad_inputs_are_named() -> None:
    targets = make_targets()
    predictions = perfect_predictions(targets)
    with pytest.raises(ValueError, match="iou_types"):
        COCOEvaluator(iou_types=("boxes",))
    with pytest.raises(ValueError, match=r"prediction\['boxes'\] must have shape \(N, 4\)"):
        COCOEvaluator().update(targets[:1], [{**predictions[0], "boxes": torch.zeros(2, 5)}])
    with pytest.raises(ValueError, match=r"prediction is missing 'scores'"):
        COCOEvaluator().update(
            targets[:1], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}]
        )
    evaluator = COCOEvaluator(coco_gt=coco_gt_dict(targets[:1], {1: 1, 2: 2}))
    evaluator.update(targets, predictions)
    with pytest.raises(ValueError, match=r"coco_gt has no images with ids \[101, 102\]"):
        evaluator.compute()
    no_masks = COCOEvaluator(iou_types=("segm",))
    no_masks.update([{k: v for k, v in targets[0].items() if k != "masks"}], predictions[:1])
    with pytest.raises(ValueError, match="'segm' but some targets have no 'masks'"):
        no_masks.compute()
