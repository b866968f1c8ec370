import math

import pytest
import torch

from structvision.ops import batched_nms, batched_soft_nms, nms


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Slow greedy NMS with torchvision's float32 IoU formula; returns kept indices by score."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        width = torch.minimum(boxes[i, 2], boxes[:, 2]) - torch.maximum(boxes[i, 0], boxes[:, 0])
        height = torch.minimum(boxes[i, 3], boxes[:, 3]) - torch.maximum(boxes[i, 1], boxes[:, 1])
        inter = width.clamp(min=0) * height.clamp(min=0)
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou.double() > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def boxes_near_threshold(num_pairs: int, iou_threshold: float, *, seed: int):
    """(2 * num_pairs, 4) boxes where each pair's IoU is within 0.1% of the threshold."""
    gen = torch.Generator().manual_seed(seed)
    top_left = torch.rand(num_pairs, 2, generator=gen) * 400
    size = torch.rand(num_pairs, 2, generator=gen) * 30 + 1
    boxes = torch.cat((top_left, top_left + size), dim=1)
    # widen a copy in x by d so that IoU = w / (w + d) ~ threshold
    jitter = 1 + (torch.rand(num_pairs, generator=gen) - 0.5) * 2e-3
    widen = size[:, 0] * (1 - iou_threshold) / iou_threshold * jitter
    partners = boxes.clone()
    partners[:, 2] += widen
    scores = torch.rand(2 * num_pairs, generator=gen)
    return torch.cat((boxes, partners)), scores


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_equals_slow_reference_near_threshold(iou_threshold):
    boxes, scores = boxes_near_threshold(500, iou_threshold, seed=int(iou_threshold * 10))
    keep = nms(boxes, scores, iou_threshold)
    assert keep.dtype == torch.int64
    expected = reference_nms(boxes, scores, iou_threshold)
    assert torch.equal(keep, expected)
    # the construction straddles the threshold: many pairs keep both boxes, many keep one
    kept = torch.zeros(1000, dtype=torch.bool)
    kept[keep] = True
    both_kept = int((kept[:500] & kept[500:]).sum())
    one_kept = int((kept[:500] ^ kept[500:]).sum())
    assert both_kept > 100 and one_kept > 100, (both_kept, one_kept)


def test_nms_hand_case_and_empty():
    boxes = torch.tensor([[0.0, 0.0, 10, 10], [1.0, 1.0, 11, 11], [20.0, 20, 30, 30]])
    scores = torch.tensor([0.5, 0.9, 0.8])
    # IoU(0, 1) = 81 / 119 = 0.68
    assert torch.equal(nms(boxes, scores, 0.5), torch.tensor([1, 2]))
    assert torch.equal(nms(boxes, scores, 0.7), torch.tensor([1, 2, 0]))
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


@pytest.mark.parametrize("num_pairs", [300, 700])  # 700 pairs take torchvision's per-class loop
def test_batched_nms_equals_per_class_nms(num_pairs):
    boxes, scores = boxes_near_threshold(num_pairs, 0.5, seed=num_pairs)
    labels = torch.randint(0, 4, (len(scores),), generator=torch.Generator().manual_seed(1))
    keep = batched_nms(boxes, scores, labels, 0.5)
    per_class = []
    for label in labels.unique():
        class_idxs = torch.where(labels == label)[0]
        per_class.append(class_idxs[nms(boxes[class_idxs], scores[class_idxs], 0.5)])
    expected = torch.cat(per_class)
    expected = expected[torch.argsort(scores[expected], descending=True)]
    assert torch.equal(keep, expected)
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).shape == (0,)


def test_nms_validation():
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \(3,\)"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"idxs must have shape \(3,\)"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(4), 0.5)


def test_soft_nms_hand_case():
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0], [0, 0, 10, 10]]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    groups = torch.tensor([1, 1, 1, 2])  # the last box is another class: never lowered
    keep, kept = batched_soft_nms(boxes, scores, groups, 0.5)
    # box 1 overlaps box 0 with IoU 0.5: its score becomes 0.8 * exp(-0.25 / 0.5)
    lowered = 0.8 * math.exp(-0.5)
    assert keep.tolist() == [0, 2, 3, 1]
    torch.testing.assert_close(kept, torch.tensor([0.9, 0.7, 0.6, lowered]))
    keep, _ = batched_soft_nms(boxes, scores, groups, 0.5, max_kept=2)
    assert keep.tolist() == [0, 2]
    keep, _ = batched_soft_nms(boxes, scores, groups, 0.5, min_score=0.5)  # 0.485 < 0.5
    assert keep.tolist() == [0, 2, 3]
    empty, empty_scores = batched_soft_nms(boxes[:0], scores[:0], groups[:0], 0.5)
    assert empty.shape == (0,) and empty_scores.shape == (0,)
    with pytest.raises(ValueError, match="sigma must be positive"):
        batched_soft_nms(boxes, scores, groups, 0.0)


def test_soft_nms_limits():
    generator = torch.Generator().manual_seed(5)
    corners = torch.rand(60, 2, generator=generator) * 50
    boxes = torch.cat([corners, corners + 5 + torch.rand(60, 2, generator=generator) * 20], 1)
    scores = torch.rand(60, generator=generator)
    groups = torch.randint(0, 3, (60,), generator=generator)
    # a vanishing width deletes every box that overlaps a kept one: NMS at IoU 0
    keep, kept = batched_soft_nms(boxes, scores, groups, 1e-6)
    assert keep.tolist() == batched_nms(boxes, scores, groups, 0.0).tolist()
    assert torch.equal(kept, scores[keep])
    # a huge width lowers nothing: every box, by score
    keep, kept = batched_soft_nms(boxes, scores, groups, 1e9)
    assert keep.tolist() == scores.argsort(descending=True).tolist()
