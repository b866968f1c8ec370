"""Segmentation metrics against hand-computed values."""

from __future__ import annotations

import pickle

import pytest
import torch

from structvision.evaluation.segmentation import (
    SegmentationEvaluator,
    boundary_counts,
    confusion_matrix,
    label_boundaries,
)

# cm[gt, pred] of a hand-made 3-class case.
HAND_CM = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pixels_from_cm(cm: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N,)`` predictions and targets whose confusion matrix is ``cm``, in shuffled order."""
    gt, pred = [], []
    for g, row in enumerate(cm):
        for p, count in enumerate(row):
            gt += [g] * count
            pred += [p] * count
    order = torch.randperm(len(gt), generator=torch.Generator().manual_seed(0))
    return torch.tensor(pred)[order], torch.tensor(gt)[order]


def _evaluate(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, **kwargs) -> dict:
    evaluator = SegmentationEvaluator(num_classes=num_classes, **kwargs)
    evaluator.update([{"semantic": gt}], [{"semantic": pred}])
    return evaluator.compute()


def test_confusion_matrix_hand_case() -> None:
    pred, gt = _pixels_from_cm(HAND_CM)
    cm = confusion_matrix(pred, gt, 3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == HAND_CM
    # 2-D maps and ignored pixels: same counts
    gt_map = torch.cat([gt, torch.full((4,), 255)]).reshape(4, 5)
    pred_map = torch.cat([pred, torch.tensor([0, 1, 2, 2])]).reshape(4, 5)
    assert confusion_matrix(pred_map, gt_map, 3).tolist() == HAND_CM


def test_metrics_on_hand_made_confusion_matrix() -> None:
    pred, gt = _pixels_from_cm(HAND_CM)  # 16 pixels
    metrics = _evaluate(pred.reshape(4, 4), gt.reshape(4, 4), 3, class_names=["a", "b", "c"])
    # diag 5, 3, 4; gt (row) sums 6, 6, 4; pred (column) sums 7, 4, 5
    iou = [5 / (6 + 7 - 5), 3 / (6 + 4 - 3), 4 / (4 + 5 - 4)]
    assert metrics["pixel_accuracy"] == pytest.approx(12 / 16)
    assert metrics["mean_class_accuracy"] == pytest.approx((5 / 6 + 3 / 6 + 4 / 4) / 3)
    assert metrics["miou"] == pytest.approx(sum(iou) / 3)
    assert metrics["fw_iou"] == pytest.approx(6 / 16 * iou[0] + 6 / 16 * iou[1] + 4 / 16 * iou[2])
    assert metrics["iou/a"] == pytest.approx(5 / 8)
    assert metrics["iou/b"] == pytest.approx(3 / 7)
    assert metrics["iou/c"] == pytest.approx(4 / 5)


def test_absent_class_is_skipped_but_predicted_only_class_counts() -> None:
    pred, gt = _pixels_from_cm(HAND_CM)
    pred, gt = pred.reshape(4, 4), gt.reshape(4, 4)
    three = _evaluate(pred, gt, 3)
    four = _evaluate(pred, gt, 4)  # class 3 absent from both: skipped
    assert four["miou"] == pytest.approx(three["miou"])
    assert four["mean_class_accuracy"] == pytest.approx(three["mean_class_accuracy"])
    assert "iou/3" not in four and "iou/2" in four
    pred_with_3 = pred.clone()
    pred_with_3[0, 0] = 3  # predicted but never true: IoU 0, and it counts in the mean
    metrics = _evaluate(pred_with_3, gt, 4)
    assert metrics["iou/3"] == 0.0
    cm = confusion_matrix(pred_with_3, gt, 4).double()
    tp, union = cm.diag(), cm.sum(0) + cm.sum(1) - cm.diag()
    assert metrics["miou"] == pytest.approx(float((tp / union).mean()))


def test_ignore_pixels_are_excluded() -> None:
    gt = torch.tensor([[0, 0, 1, 1], [255, 255, 255, 1]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 1]])
    metrics = _evaluate(pred, gt, 2)
    assert metrics["pixel_accuracy"] == 1.0
    assert metrics["miou"] == 1.0
    assert confusion_matrix(pred, gt, 2).sum() == 5


def test_bad_labels_are_named() -> None:
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(torch.zeros(3, dtype=torch.int64), torch.tensor([0, 1, 7]), 3)
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(torch.tensor([0, -1, 0]), torch.zeros(3, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 3)
    evaluator = SegmentationEvaluator(num_classes=2)
    with pytest.raises(ValueError, match="semantic"):
        evaluator.update([{"labels": torch.zeros(1)}], [{"semantic": torch.zeros(2, 2)}])


def test_records_merge_and_pickle() -> None:
    generator = torch.Generator().manual_seed(1)
    gts = [torch.randint(0, 4, (9, 11), generator=generator) for _ in range(4)]
    preds = [torch.randint(0, 4, (9, 11), generator=generator) for _ in range(4)]
    gts[2][:3] = 255
    targets = [{"semantic": g, "image_id": torch.tensor(i)} for i, g in enumerate(gts)]
    predictions = [{"semantic": p} for p in preds]
    whole = SegmentationEvaluator(num_classes=4)
    whole.update(targets, predictions)
    first, second = SegmentationEvaluator(num_classes=4), SegmentationEvaluator(num_classes=4)
    first.update(targets[:1], predictions[:1])
    second.update(targets[1:], predictions[1:])
    merged = SegmentationEvaluator(num_classes=4)
    merged.records = pickle.loads(pickle.dumps(first.records + second.records + first.records))
    assert merged.compute() == pytest.approx(whole.compute())  # the repeated image counts once
    assert all(r["confusion"].shape == (4, 4) for r in merged.records)
    # the dataset matrix is the matrix of all pixels at once
    expected = confusion_matrix(torch.stack(preds), torch.stack(gts), 4)
    assert torch.equal(whole.confusion(), expected)


# --------------------------------------------------------------------------------------------
# Boundary F-score
# --------------------------------------------------------------------------------------------


def test_label_boundaries_hand_case() -> None:
    labels = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    expected = torch.tensor([[0, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(label_boundaries(labels), expected)


def test_boundary_f_is_one_for_identical_maps() -> None:
    gt = torch.zeros(12, 12, dtype=torch.int64)
    gt[3:8, 2:9] = 1
    gt[9:, :4] = 2
    assert _evaluate(gt, gt, 3, boundary_width=0)["boundary_f"] == 1.0
    assert _evaluate(gt, gt, 3)["boundary_f"] == 1.0
    flat = torch.zeros(5, 5, dtype=torch.int64)
    assert _evaluate(flat, flat, 3)["boundary_f"] == 1.0  # no boundaries anywhere
    two_regions = flat.clone()
    two_regions[:, 3:] = 1
    assert _evaluate(flat, two_regions, 3)["boundary_f"] == 0.0  # boundaries missed: R = 0


@pytest.mark.parametrize(("width", "expected_f"), [(1, 0.0), (2, 0.5), (3, 1.0)])
def test_boundary_f_for_a_shifted_edge(width: int, expected_f: float) -> None:
    """Vertical edge between columns 3|4 in the truth, 6|7 in the prediction: boundary columns
    {3, 4} vs {6, 7}. With width 2, column 6 is within 2 of column 4 and column 7 is not, so
    P = 1/2, and symmetrically R = 1/2: F = 0.5."""
    gt = torch.zeros(4, 8, dtype=torch.int64)
    gt[:, 4:] = 1
    pred = torch.zeros(4, 8, dtype=torch.int64)
    pred[:, 7:] = 1
    counts = boundary_counts(pred, gt, boundary_width=width)
    assert counts[1] == 8 and counts[3] == 8
    assert _evaluate(pred, gt, 2, boundary_width=width)["boundary_f"] == pytest.approx(expected_f)


def test_boundary_inside_ignore_band() -> None:
    """Truth: 0 | 255 255 | 1; the predicted edge sits inside the ignore band. Its boundary
    pixels are not counted (no false positives there) but recall the band's edges."""
    gt = torch.tensor([[0, 0, 0, 0, 255, 255, 1, 1, 1, 1]] * 3)
    pred = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]] * 3)
    assert boundary_counts(pred, gt, boundary_width=2).tolist() == [0, 0, 6, 6]
    assert _evaluate(pred, gt, 2)["boundary_f"] == 1.0
    assert _evaluate(pred, gt, 2, boundary_width=0)["boundary_f"] == 0.0
