"""voc_ap and VOCEvaluator against hand-computed values and slow devkit-style references."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from structvision.evaluation.voc import VOCEvaluator, voc_ap

CLASSES = ("__background__", "cat", "dog", "bird")
CAT, DOG, BIRD = 1, 2, 3


# --------------------------------------------------------------------------------------------
# Slow references
# --------------------------------------------------------------------------------------------


def slow_voc_ap(recall: list[float], precision: list[float], use_07_metric: bool) -> float:
    """Straight from the definitions, one point at a time."""
    if use_07_metric:
        total = 0.0
        for k in range(11):
            best = 0.0
            for r, p in zip(recall, precision, strict=True):
                if r >= k / 10:
                    best = max(best, p)
            total += best
        return total / 11
    # Step function p_interp(r) = max precision at recall >= r, integrated over [0, 1].
    area, previous = 0.0, 0.0
    for level in sorted(set(recall)):
        best = max(p for r, p in zip(recall, precision, strict=True) if r >= level)
        area += (level - previous) * best
        previous = level
    return area


def slow_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def devkit_class_ap(targets, predictions, label: int, use_07_metric: bool) -> float | None:
    """The devkit's voc_eval loop: one class, all detections ranked, greedy matching."""
    gts = {}
    npos = 0
    for i, t in enumerate(targets):
        keep = [j for j in range(len(t["labels"])) if int(t["labels"][j]) == label]
        difficult = [bool(t["difficult"][j]) for j in keep]
        gts[i] = {
            "boxes": [t["boxes"][j].tolist() for j in keep],
            "difficult": difficult,
            "det": [False] * len(keep),
        }
        npos += sum(not d for d in difficult)
    if npos == 0:
        return None
    dets = []
    for i, p in enumerate(predictions):
        for j in range(len(p["labels"])):
            if int(p["labels"][j]) == label:
                dets.append((-float(p["scores"][j]), len(dets), i, p["boxes"][j].tolist()))
    dets.sort()
    tp, fp = [], []
    for _, _, i, box in dets:
        gt = gts[i]
        ious = [slow_iou(box, g) for g in gt["boxes"]]
        best = max(range(len(ious)), key=lambda k: ious[k]) if ious else None
        if best is not None and ious[best] > 0.5:
            if gt["difficult"][best]:
                continue
            if not gt["det"][best]:
                gt["det"][best] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    tp_sum, fp_sum = np.cumsum(tp), np.cumsum(fp)
    recall = (tp_sum / npos).tolist()
    precision = (tp_sum / np.maximum(tp_sum + fp_sum, 1)).tolist()
    return slow_voc_ap(recall, precision, use_07_metric)


# --------------------------------------------------------------------------------------------
# voc_ap
# --------------------------------------------------------------------------------------------


def test_voc_ap_hand_computed() -> None:
    recall, precision = [0.5, 1.0], [1.0, 0.5]
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)


def test_voc_ap_envelope_and_thresholds() -> None:
    # Precision rises again at the end: the envelope lifts the dip at recall 0.4.
    recall, precision = [0.2, 0.4, 0.6], [1.0, 0.5, 0.75]
    # 11-point: t=0..0.2 -> 1.0 (3 points), t=0.3..0.6 -> 0.75 (4 points), t>=0.7 -> 0.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((3 + 4 * 0.75) / 11)
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.2 + 0.4 * 0.75)
    # Recall exactly 0.3 reaches the 0.3 threshold (thresholds are k / 10 exactly).
    assert voc_ap([0.3], [1.0], use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap(torch.tensor([1.0]), torch.tensor([1.0]), use_07_metric=True) == 1.0
    assert voc_ap([], [], use_07_metric=False) == 0.0


def test_voc_ap_matches_slow_reference_on_random_curves() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 30))
        recall = np.sort(rng.choice(np.linspace(0, 1, 21), size=n))  # ties and exact 0.1 steps
        if trial % 2:
            recall = np.sort(rng.random(n))
        precision = rng.random(n)
        for use_07 in (True, False):
            expected = slow_voc_ap(recall.tolist(), precision.tolist(), use_07)
            got = voc_ap(recall, precision, use_07_metric=use_07)
            assert got == pytest.approx(expected, abs=1e-12), (trial, use_07)


def test_voc_ap_rejects_bad_curves() -> None:
    with pytest.raises(ValueError, match="same shape"):
        voc_ap([0.1, 0.2], [1.0], use_07_metric=True)
    with pytest.raises(ValueError, match="non-decreasing"):
        voc_ap([0.5, 0.2], [1.0, 1.0], use_07_metric=False)
    with pytest.raises(ValueError, match="recall must be 1-D"):
        voc_ap([[0.5]], [[1.0]], use_07_metric=False)


# --------------------------------------------------------------------------------------------
# VOCEvaluator
# --------------------------------------------------------------------------------------------


def target(boxes, labels, difficult, image_id: int) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
        "image_id": torch.tensor(image_id),
    }


def prediction(boxes, labels, scores) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


A, D, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 60, 60]
CAT_BOX, BIRD_BOX = [0, 20, 10, 30], [70, 70, 80, 80]


def hand_case() -> tuple[list[dict], list[dict]]:
    """Dogs: A (image 0), difficult D (image 0), B and a missed C (image 1); 3 positives.

    Dog detections by score: 0.95 background (FP), 0.92 on difficult D (ignored), 0.9 on A (TP),
    0.85 on B (TP), 0.8 duplicate of A (FP). Without the ignored one: FP, TP, TP, FP ->
    recall 0, 1/3, 2/3, 2/3; precision 0, 1/2, 2/3, 1/2.
    Cats: one GT; a cat detection on dog A (0.99, FP) then the cat (0.5, TP) -> recall 0, 1;
    precision 0, 1/2. Birds: only a difficult GT, so no bird AP.
    """
    targets = [
        target([A, D], [DOG, DOG], [False, True], 0),
        target([B, C, CAT_BOX, BIRD_BOX], [DOG, DOG, CAT, BIRD], [False] * 3 + [True], 1),
    ]
    predictions = [
        prediction(
            [D, A, [1, 0, 10, 10], A],
            [DOG, DOG, DOG, CAT],
            [0.92, 0.9, 0.8, 0.99],
        ),
        prediction(
            [[100, 100, 110, 110], B, CAT_BOX, BIRD_BOX],
            [DOG, DOG, CAT, BIRD],
            [0.95, 0.85, 0.5, 0.7],
        ),
    ]
    return targets, predictions


def test_hand_built_case_07() -> None:
    evaluator = VOCEvaluator(class_names=CLASSES, use_07_metric=True)
    targets, predictions = hand_case()
    evaluator.update(targets, predictions)
    metrics = evaluator.compute()
    # Dog 11-point: t = 0..0.6 (7 thresholds) reach max precision 2/3; t >= 0.7 -> 0.
    dog = 7 * (2 / 3) / 11
    cat = 0.5  # every threshold reaches precision 1/2
    assert set(metrics) == {"voc/mAP", "voc/AP/cat", "voc/AP/dog"}
    assert metrics["voc/AP/dog"] == pytest.approx(dog)
    assert metrics["voc/AP/cat"] == pytest.approx(cat)
    assert metrics["voc/mAP"] == pytest.approx((dog + cat) / 2)


def test_hand_built_case_area() -> None:
    evaluator = VOCEvaluator(class_names=CLASSES, use_07_metric=False)
    evaluator.update(*hand_case())
    metrics = evaluator.compute()
    assert metrics["voc/AP/dog"] == pytest.approx((2 / 3) * (2 / 3))
    assert metrics["voc/AP/cat"] == pytest.approx(0.5)
    assert metrics["voc/mAP"] == pytest.approx((4 / 9 + 0.5) / 2)


def test_perfect_detections() -> None:
    targets, _ = hand_case()
    predictions = [
        prediction(t["boxes"].tolist(), t["labels"].tolist(), [0.9] * len(t["labels"]))
        for t in targets
    ]
    for use_07 in (True, False):
        evaluator = VOCEvaluator(class_names=CLASSES, use_07_metric=use_07)
        evaluator.update(targets, predictions)
        metrics = evaluator.compute()
        assert metrics == {"voc/mAP": 1.0, "voc/AP/cat": 1.0, "voc/AP/dog": 1.0}


def test_iou_threshold_is_strict_and_best_gt_decides() -> None:
    evaluator = VOCEvaluator(class_names=CLASSES)
    # IoU exactly 0.5 -> false positive; then a perfect one -> TP: precision 1/2 at recall 1.
    evaluator.update(
        [target([A], [DOG], [False], 0)],
        [prediction([[0, 0, 10, 5], A], [DOG, DOG], [0.9, 0.8])],
    )
    assert evaluator.compute()["voc/AP/dog"] == pytest.approx(0.5)
    # The best-overlapping GT is difficult -> ignored, although an easy GT overlaps > 0.5.
    evaluator = VOCEvaluator(class_names=CLASSES)
    evaluator.update(
        [target([[0, 0, 10, 10], [0, 0, 10, 9]], [DOG, DOG], [False, True], 0)],
        [prediction([[0, 0, 10, 9], [0, 0, 10, 10]], [DOG, DOG], [0.9, 0.8])],
    )
    assert evaluator.compute()["voc/AP/dog"] == 1.0


def test_no_detections_and_no_ground_truth() -> None:
    evaluator = VOCEvaluator(class_names=CLASSES)
    evaluator.update([target([A], [CAT], [False], 0)], [prediction([], [], [])])
    assert evaluator.compute() == {"voc/mAP": 0.0, "voc/AP/cat": 0.0}
    evaluator = VOCEvaluator(class_names=CLASSES)
    evaluator.update([target([], [], [], 0)], [prediction([A], [CAT], [0.5])])
    assert evaluator.compute() == {"voc/mAP": -1.0}


def test_difficult_is_optional() -> None:
    evaluator = VOCEvaluator(class_names=CLASSES)
    t = target([A], [DOG], [False], 0)
    del t["difficult"]
    evaluator.update([t], [prediction([A], [DOG], [0.3])])
    assert evaluator.compute()["voc/AP/dog"] == 1.0


def test_split_records_merge_and_pickle() -> None:
    targets, predictions = hand_case()
    whole = VOCEvaluator(class_names=CLASSES)
    whole.update(targets, predictions)
    rank0, rank1 = VOCEvaluator(class_names=CLASSES), VOCEvaluator(class_names=CLASSES)
    rank0.update(targets[1:], predictions[1:])
    rank1.update(targets[:1], predictions[:1])
    merged = VOCEvaluator(class_names=CLASSES)
    merged.records = pickle.loads(pickle.dumps(rank0.records)) + pickle.loads(
        pickle.dumps(rank1.records)
    )
    merged.records += rank0.records  # a padded duplicate image is counted once
    assert merged.compute() == pytest.approx(whole.compute())
    assert all(r["pred_boxes"].device.type == "cpu" for r in merged.records)


def random_dataset(rng: np.random.Generator, num_images: int):
    targets, predictions = [], []
    for image_id in range(num_images):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 40, size=(g, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(4, 20, size=(g, 2))], axis=1)
        gt_labels = rng.integers(1, 4, size=g)
        difficult = rng.random(g) < 0.2
        # Detections: jittered copies of GTs (some duplicated) plus random boxes.
        source = rng.integers(0, max(g, 1), size=int(rng.integers(0, 8))) if g else []
        jittered = gt_boxes[source] + rng.normal(0, 2.0, size=(len(source), 4)) if g else []
        d = int(rng.integers(0, 4))
        xy = rng.uniform(0, 40, size=(d, 2))
        noise = np.concatenate([xy, xy + rng.uniform(4, 20, size=(d, 2))], axis=1)
        pred_boxes = np.concatenate([np.reshape(jittered, (-1, 4)), noise], axis=0)
        pred_labels = np.concatenate(
            [
                np.where(rng.random(len(source)) < 0.85, gt_labels[source], 1) if g else [],
                rng.integers(1, 4, size=d),
            ]
        )
        scores = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], size=len(pred_boxes))  # with ties
        targets.append(target(gt_boxes.tolist(), gt_labels.tolist(), difficult.tolist(), image_id))
        predictions.append(prediction(pred_boxes.tolist(), pred_labels.tolist(), scores.tolist()))
    return targets, predictions


@pytest.mark.parametrize("use_07", [True, False])
def test_matches_devkit_loop_on_random_data(use_07: bool) -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        targets, predictions = random_dataset(rng, 12)
        evaluator = VOCEvaluator(class_names=CLASSES, use_07_metric=use_07)
        evaluator.update(targets, predictions)
        metrics = evaluator.compute()
        expected = {}
        for label in (CAT, DOG, BIRD):
            ap = devkit_class_ap(targets, predictions, label, use_07)
            if ap is not None:
                expected[f"voc/AP/{CLASSES[label]}"] = ap
        assert {k: v for k, v in metrics.items() if k != "voc/mAP"} == pytest.approx(expected)
        assert metrics["voc/mAP"] == pytest.approx(np.mean(list(expected.values())))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="class_names must start with '__background__'"):
        VOCEvaluator(class_names=("cat", "dog"))
    evaluator = VOCEvaluator(class_names=CLASSES)
    with pytest.raises(ValueError, match=r"prediction\['labels'\] must be in 1\.\.3"):
        evaluator.update([target([A], [DOG], [False], 0)], [prediction([A], [0], [0.5])])
    with pytest.raises(ValueError, match=r"target\['labels'\] must be in 1\.\.3"):
        evaluator.update([target([A], [4], [False], 0)], [prediction([A], [1], [0.5])])
    with pytest.raises(ValueError, match=r"prediction\['boxes'\] must have shape \(N, 4\)"):
        bad = {"boxes": torch.zeros(2, 3), "labels": torch.ones(2), "scores": torch.ones(2)}
        evaluator.update([target([A], [DOG], [False], 0)], [bad])
    with pytest.raises(ValueError, match=r"prediction\['scores'\] must have shape \(1,\)"):
        evaluator.update([target([A], [DOG], [False], 0)], [prediction([A], [1], [0.5, 0.2])])
    with pytest.raises(ValueError, match="target is missing 'image_id'"):
        evaluator.update([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], [{}])
    with pytest.raises(ValueError, match="1 targets and 0 predictions"):
        evaluator.update([target([A], [DOG], [False], 0)], [])
    assert evaluator.records == []
