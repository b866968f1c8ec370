import math
import warnings

import numpy as np
import pytest
import torch

from structvision.models.detection.proposals import (
    ProposalCache,
    plot_recall,
    proposal_recall,
    recall_curve,
    selective_search,
)
from structvision.structures import box_iou

# xyxy pixel boxes of two flat rectangles: columns 8..39 x rows 10..39 and 50..89 x 45..74
RECT_BOXES = torch.tensor([[8.0, 10.0, 40.0, 40.0], [50.0, 45.0, 90.0, 75.0]])


def two_rectangles() -> np.ndarray:
    """(80, 96, 3) uint8 RGB: a red and a blue rectangle on a light grey background."""
    image = np.full((80, 96, 3), 200, dtype=np.uint8)
    image[10:40, 8:40] = (230, 30, 30)
    image[45:75, 50:90] = (20, 90, 220)
    return image


def assert_valid_boxes(boxes: torch.Tensor, height: int, width: int) -> None:
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes >= 0).all()
    assert (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_selective_search_finds_rectangles(mode):
    image = two_rectangles()
    boxes = selective_search(image, mode=mode)
    assert_valid_boxes(boxes, 80, 96)
    assert box_iou(RECT_BOXES, boxes).amax(dim=1).min() > 0.8
    assert len(torch.unique(boxes, dim=0)) == len(boxes)  # no duplicates
    # float (3, H, W) tensor input gives the same boxes, and the order is reproducible
    tensor_image = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    assert torch.equal(selective_search(tensor_image, mode=mode), boxes)
    capped = selective_search(image, mode=mode, max_proposals=3)
    assert torch.equal(capped, boxes[:3])


def test_selective_search_order_reproducible_on_textured_image():
    gen = np.random.default_rng(0)
    image = np.repeat(np.repeat(gen.integers(0, 255, (8, 8, 3), dtype=np.uint8), 8, 0), 8, 1)
    first = selective_search(image, max_proposals=50)
    assert len(first) > 10
    assert torch.equal(first, selective_search(image, max_proposals=50))


def test_selective_search_min_size_and_resize_to_original_coordinates():
    image = two_rectangles()
    boxes = selective_search(image, min_size=31)
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert (sizes >= 31).all()
    # searched at 48 x 40, mapped back to 96 x 80
    resized = selective_search(image, resize_to=48)
    assert_valid_boxes(resized, 80, 96)
    assert resized[:, 2].max() > 48  # original coordinates, not the half-size image's
    assert box_iou(RECT_BOXES, resized).amax(dim=1).min() > 0.8
    assert torch.equal(resized, torch.round(resized))


def test_selective_search_bad_input():
    with pytest.raises(ValueError, match="mode"):
        selective_search(two_rectangles(), mode="slow")
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        selective_search(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        selective_search(two_rectangles().astype(np.float32))


def test_cache_hit_miss_and_invalidation(tmp_path):
    image = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(0))
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.tensor([[1.0, 2.0, 5.0, 7.0], [0.0, 0.0, 16.0, 12.0]]) + len(calls)

    settings = {"method": "selective_search", "mode": "fast", "max_proposals": 2000}
    cache = ProposalCache(tmp_path, method_settings=settings)
    first = cache.get_or_compute(image, "img/001.jpg", compute)
    assert len(calls) == 1 and first.dtype == torch.float32
    hit = ProposalCache(tmp_path, method_settings=dict(reversed(settings.items())))
    assert torch.equal(hit.get_or_compute(image, "img/001.jpg", compute), first)
    assert len(calls) == 1  # served from disk, compute not called
    assert cache.path_for("img/001.jpg").parent.parent == tmp_path

    changed_image = image.clone()
    changed_image[0, 0, 0] = 1.0 - changed_image[0, 0, 0]
    recomputed = cache.get_or_compute(changed_image, "img/001.jpg", compute)
    assert len(calls) == 2 and not torch.equal(recomputed, first)
    assert torch.equal(cache.get_or_compute(changed_image, "img/001.jpg", compute), recomputed)
    assert len(calls) == 2

    other = ProposalCache(tmp_path, method_settings={**settings, "mode": "quality"})
    assert other.folder != cache.folder
    other.get_or_compute(changed_image, "img/001.jpg", compute)
    assert len(calls) == 3
    assert not list(cache.folder.glob(".tmp-*"))  # temporary files renamed away


def test_cache_corrupt_file_is_recomputed(tmp_path):
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    cache = ProposalCache(tmp_path, method_settings={"mode": "fast"})
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    cache.get_or_compute(image, "a", lambda: boxes)
    path = cache.path_for("a")
    path.write_bytes(b"\x00garbage, not a safetensors file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = cache.get_or_compute(image, "a", lambda: boxes * 2)
    assert torch.equal(again, boxes * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file reads cleanly
        assert torch.equal(cache.get_or_compute(image, "a", lambda: boxes), boxes * 2)


def test_proposal_recall_hand_case():
    gt_boxes = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
        torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        torch.zeros(0, 4),
        torch.tensor([[5.0, 5.0, 9.0, 9.0]]),  # an image without proposals: never recalled
    ]
    proposals = [
        torch.tensor([[20.0, 20.0, 30.0, 28.0], [0.0, 0.0, 10.0, 10.0]]),  # IoU 0.8, then 1.0
        torch.tensor([[0.0, 0.0, 10.0, 6.0], [50.0, 50.0, 60.0, 60.0]]),  # IoU 0.6, then 0.0
        torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
        torch.zeros(0, 4),
    ]
    metrics = proposal_recall(
        proposals, gt_boxes, iou_thresholds=(0.5, 0.9), num_proposals=(1, 2, 100)
    )
    assert metrics == pytest.approx(
        {
            "recall@0.5/1": 2 / 4,
            "recall@0.5/2": 3 / 4,
            "recall@0.5/100": 3 / 4,
            "recall@0.9/1": 0 / 4,
            "recall@0.9/2": 1 / 4,
            "recall@0.9/100": 1 / 4,
        }
    )
    curve = recall_curve(proposals, gt_boxes, iou_thresholds=(0.6,))
    assert curve["num_proposals"].tolist() == [1, 2]
    assert curve["recall"].tolist() == [[2 / 4, 3 / 4]]  # IoU exactly 0.6 counts (>=)
    assert int(curve["num_gt"]) == 4
    empty = proposal_recall([torch.zeros(0, 4)], [torch.zeros(0, 4)], num_proposals=(1,))
    assert all(math.isnan(value) for value in empty.values())
    with pytest.raises(ValueError, match="one tensor per image"):
        proposal_recall(proposals, gt_boxes[:2])


def test_plot_recall_writes_png(tmp_path):
    gt_boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    proposals = [torch.tensor([[0.0, 0.0, 8.0, 10.0], [0.0, 0.0, 10.0, 10.0]])]
    curves = {
        "ss-fast": recall_curve(proposals, gt_boxes),
        "oracle": recall_curve(gt_boxes, gt_boxes),
    }
    path = plot_recall(curves, tmp_path / "plots" / "recall.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
