import json

import pytest
import torch
import torchvision.ops
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks

from structvision.models.detection.mask_rcnn import mask_targets
from structvision.structures import (
    mask_to_rle,
    masks_to_boxes,
    paste_masks_in_image,
    paste_masks_where_sampled,
    polygons_to_mask,
    rle_to_mask,
)


def test_polygons_to_mask_hand_cases():
    square = polygons_to_mask([[1, 1, 4, 1, 4, 4, 1, 4]], 6, 5)  # covers pixels 1..3
    expected = torch.zeros(6, 5, dtype=torch.uint8)
    expected[1:4, 1:4] = 1
    assert torch.equal(square, expected)

    union = polygons_to_mask([[0, 0, 2, 0, 2, 2, 0, 2], [1, 1, 3, 1, 3, 3, 1, 3]], 4, 4)
    expected = torch.zeros(4, 4, dtype=torch.uint8)
    expected[0:2, 0:2] = 1
    expected[1:3, 1:3] = 1
    assert torch.equal(union, expected)
    assert torch.equal(polygons_to_mask([], 3, 2), torch.zeros(3, 2, dtype=torch.uint8))


def test_polygons_to_mask_rejects_degenerate_polygon():
    with pytest.raises(ValueError, match=r"polygons\[1\]"):
        polygons_to_mask([[0, 0, 2, 0, 2, 2], [0, 0, 1, 1]], 4, 4)


def test_rle_round_trip_through_json():
    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(13, 17, generator=gen) > 0.6).to(torch.uint8)
    rle = mask_to_rle(mask)
    assert rle["size"] == [13, 17] and isinstance(rle["counts"], str)
    decoded = rle_to_mask(json.loads(json.dumps(rle)))
    assert decoded.dtype == torch.uint8 and torch.equal(decoded, mask)
    # non-zero values of any dtype count as foreground
    assert torch.equal(rle_to_mask(mask_to_rle(mask.float() * 3)), mask)


def test_rle_to_mask_uncompressed_counts_hand_case():
    # column-major runs: 1 zero, 2 ones, 3 zeros over a 2 x 3 mask
    mask = rle_to_mask({"size": [2, 3], "counts": [1, 2, 3]})
    assert torch.equal(mask, torch.tensor([[0, 1, 0], [1, 0, 0]], dtype=torch.uint8))
    with pytest.raises(ValueError, match="counts"):
        rle_to_mask({"size": [2, 3], "counts": 5})
    with pytest.raises(ValueError, match="'size'"):
        rle_to_mask({"counts": "abc"})


def test_masks_to_boxes_matches_torchvision_and_handles_empty():
    masks = torch.zeros(3, 7, 9, dtype=torch.uint8)
    masks[0, 2:5, 1:4] = 1
    masks[1, 6, 8] = 1
    boxes = masks_to_boxes(masks)
    assert torch.equal(boxes[:2], torch.tensor([[1.0, 2.0, 3.0, 4.0], [8.0, 6.0, 8.0, 6.0]]))
    assert torch.equal(boxes[2], torch.zeros(4))
    assert torch.equal(boxes[:2], torchvision.ops.masks_to_boxes(masks[:2]))
    assert masks_to_boxes(torch.zeros(0, 5, 5)).shape == (0, 4)


def paste_reference(masks, boxes, image_size, padding):
    return tv_paste_masks(masks[:, None], boxes, image_size, padding=padding)[:, 0]


def test_paste_masks_hand_case_constant_mask():
    masks = torch.ones(1, 4, 4)
    boxes = torch.tensor([[2.0, 3.0, 5.0, 7.0]])
    pasted = paste_masks_in_image(masks, boxes, (10, 8), padding=0)
    expected = torch.zeros(1, 10, 8)
    expected[0, 3:8, 2:6] = 1.0  # pixels x1..x2, y1..y2 inclusive
    torch.testing.assert_close(pasted, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_paste_masks_equals_torchvision(padding):
    gen = torch.Generator().manual_seed(padding)
    height, width = 37, 45
    for trial in range(30):
        num_masks = 6
        mask_size = int(torch.randint(1, 20, (), generator=gen))
        masks = torch.rand(num_masks, mask_size, mask_size, generator=gen)
        top_left = torch.rand(num_masks, 2, generator=gen) * torch.tensor([width, height]) - 4
        size_scale = 0.08 if trial % 3 == 0 else 0.9  # tiny boxes every third trial
        size = torch.rand(num_masks, 2, generator=gen) * torch.tensor([width, height]) * size_scale
        boxes = torch.cat((top_left, top_left + size), dim=1)
        # torchvision crashes on most boxes wholly outside the image; keep an overlap
        boxes[:, 0].clamp_(max=width - 1)
        boxes[:, 1].clamp_(max=height - 1)
        boxes[:, 2:].clamp_(min=1)
        expected = paste_reference(masks, boxes, (height, width), padding)
        pasted = paste_masks_in_image(masks, boxes, (height, width), padding=padding)
        torch.testing.assert_close(pasted, expected, rtol=0, atol=1e-5, msg=f"trial {trial}")


def test_paste_masks_border_and_degenerate_boxes():
    gen = torch.Generator().manual_seed(11)
    masks = torch.rand(6, 14, 14, generator=gen)
    boxes = torch.tensor(
        [
            [0.0, 0.0, 20.0, 16.0],  # whole image
            [-10.0, -6.0, 8.0, 5.0],  # over the top-left corner
            [12.0, 9.0, 31.0, 25.0],  # over the bottom-right corner
            [5.0, 5.0, 5.0, 5.0],  # zero size
            [3.2, 7.9, 3.6, 8.1],  # sub-pixel
            [-30.0, -30.0, -20.0, -20.0],  # wholly outside
        ]
    )
    pasted = paste_masks_in_image(masks, boxes, (16, 20))
    expected = paste_reference(masks[:5], boxes[:5], (16, 20), padding=1)
    torch.testing.assert_close(pasted[:5], expected, rtol=0, atol=1e-5)
    assert bool(pasted[0].all())  # the whole-image box paints every pixel
    assert int((pasted[3] > 0).sum()) == 1  # a zero-size box still covers its pixel (inclusive)
    assert not bool(pasted[5].any())  # torchvision raises here

    beyond = paste_masks_in_image(masks[:1], torch.tensor([[30.0, 30.0, 40.0, 40.0]]), (16, 20))
    assert not bool(beyond.any())


def test_paste_masks_empty_and_dtypes():
    empty = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6))
    assert empty.shape == (0, 5, 6) and empty.dtype == torch.float32
    masks64 = torch.rand(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[1.0, 1.0, 9.0, 7.0], [0.0, 2.0, 4.0, 3.0]])
    pasted = paste_masks_in_image(masks64, boxes, (8, 10))
    assert pasted.dtype == torch.float64
    torch.testing.assert_close(pasted, paste_reference(masks64, boxes, (8, 10), 1))


def test_paste_masks_validation():
    with pytest.raises(ValueError, match=r"masks must have shape \(N, M, M\)"):
        paste_masks_in_image(torch.rand(2, 1, 5, 5), torch.zeros(2, 4), (8, 8))
    with pytest.raises(ValueError, match="one row per mask"):
        paste_masks_in_image(torch.rand(2, 5, 5), torch.zeros(3, 4), (8, 8))
    with pytest.raises(ValueError, match="floating"):
        paste_masks_in_image(torch.ones(1, 5, 5, dtype=torch.uint8), torch.zeros(1, 4), (8, 8))


def _blobs(height, width, count, generator):
    """Random rectangles and discs: ``(count, H, W)`` uint8 masks and their tight boxes."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    masks = []
    for index in range(count):
        x, y = (
            torch.randint(2, width - 12, (), generator=generator),
            torch.randint(2, height - 12, (), generator=generator),
        )
        w, h = torch.randint(3, 11, (2,), generator=generator)
        if index % 2:
            masks.append((xs >= x) & (xs < x + w) & (ys >= y) & (ys < y + h))
        else:
            masks.append((xs - x - w / 2) ** 2 + (ys - y - w / 2) ** 2 <= (w / 2) ** 2)
    masks = torch.stack(masks).to(torch.uint8)
    boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # pixel edges
    return masks, boxes


@pytest.mark.parametrize("cells", [28, 20])  # about two cells per pixel of these boxes
def test_masks_pasted_where_sampled_are_the_masks_the_targets_came_from(cells):
    # Mask R-CNN's targets of true masks at true boxes, pasted back, are the true masks;
    # torchvision's paste of the same targets moves edges by a pixel
    masks, boxes = _blobs(40, 48, 12, torch.Generator().manual_seed(cells))
    targets = mask_targets(masks, boxes, torch.arange(len(boxes)), cells)
    pasted = paste_masks_where_sampled(targets, boxes, (40, 48))
    assert torch.equal((pasted > 0.5).to(torch.uint8), masks)
    torchvision_paste = (paste_masks_in_image(targets, boxes, (40, 48)) > 0.5).to(torch.uint8)
    assert not torch.equal(torchvision_paste, masks)


def test_masks_pasted_where_sampled_at_the_detectors_input_scale():
    # the detector resized the image 2x: targets sampled on the input image, pasted into
    # the original one, are the original masks
    masks, boxes = _blobs(30, 36, 10, torch.Generator().manual_seed(3))
    upsampled = masks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    targets = mask_targets(upsampled, boxes * 2, torch.arange(len(boxes)), 28)
    pasted = paste_masks_where_sampled(targets, boxes, (30, 36), scale=(2.0, 2.0))
    assert torch.equal((pasted > 0.5).to(torch.uint8), masks)


def test_paste_where_sampled_hand_case_constant_mask():
    # targets sample pixel k at coordinate k: the box [2, 5] x [3, 7] reads pixel centres
    # moved half a pixel back, k in 2..5 and 3..7 (inclusive), and nothing else
    pasted = paste_masks_where_sampled(
        torch.ones(1, 4, 4), torch.tensor([[2.0, 3.0, 5.0, 7.0]]), (10, 8)
    )
    expected = torch.zeros(1, 10, 8)
    expected[0, 3:8, 2:6] = 1.0
    torch.testing.assert_close(pasted, expected, rtol=0, atol=1e-6)
    empty = paste_masks_where_sampled(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6))
    assert empty.shape == (0, 5, 6)
    with pytest.raises(ValueError, match="one row per mask"):
        paste_masks_where_sampled(torch.rand(2, 5, 5), torch.zeros(3, 4), (8, 8))
