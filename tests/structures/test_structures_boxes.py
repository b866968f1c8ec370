import math

import pytest
import torch
from torchvision.models.detection import _utils as tv_det_utils

from structvision.structures import (
    BoxCoder,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)


def random_boxes(num: int, *, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """(num, 4) xyxy boxes with sizes in [1, 101) pixels."""
    top_left = torch.rand(num, 2, generator=generator, dtype=dtype) * 200
    size = torch.rand(num, 2, generator=generator, dtype=dtype) * 100 + 1
    return torch.cat((top_left, top_left + size), dim=1)


def test_box_convert_hand_case_and_round_trip():
    xyxy = torch.tensor([[10.0, 20.0, 40.0, 30.0]])
    assert torch.equal(box_convert(xyxy, "xyxy", "xywh"), torch.tensor([[10.0, 20.0, 30.0, 10.0]]))
    assert torch.equal(
        box_convert(xyxy, "xyxy", "cxcywh"), torch.tensor([[25.0, 25.0, 30.0, 10.0]])
    )
    boxes = random_boxes(50, generator=torch.Generator().manual_seed(0))
    for fmt in ("xywh", "cxcywh"):
        back = box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy")
        torch.testing.assert_close(back, boxes)
    same = box_convert(boxes, "xyxy", "xyxy")
    assert torch.equal(same, boxes) and same.data_ptr() != boxes.data_ptr()


def test_box_convert_rejects_bad_format_and_shape():
    with pytest.raises(ValueError, match="in_fmt"):
        box_convert(torch.zeros(1, 4), "xyx", "xyxy")
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        box_convert(torch.zeros(3, 5), "xyxy", "xywh")


def test_box_area_and_iou_hand_cases():
    boxes1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 3.0]])
    boxes2 = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    assert torch.equal(box_area(boxes1), torch.tensor([4.0, 3.0]))
    iou = box_iou(boxes1, boxes2)  # (2, 3)
    expected = torch.tensor([[1 / 7, 0.0, 1.0], [0.0, 0.0, 2 / 5]])
    torch.testing.assert_close(iou, expected)
    assert box_iou(boxes1, torch.zeros(0, 4)).shape == (2, 0)
    with pytest.raises(ValueError, match="boxes2 must have shape"):
        box_iou(boxes1, torch.zeros(4))


def test_clip_and_remove_small_boxes():
    boxes = torch.tensor([[-5.0, 2.0, 30.0, 50.0], [1.0, 1.0, 1.5, 9.0]])
    clipped = clip_boxes_to_image(boxes, image_size=(40, 20))  # H=40, W=20
    assert torch.equal(clipped, torch.tensor([[0.0, 2.0, 20.0, 40.0], [1.0, 1.0, 1.5, 9.0]]))
    assert torch.equal(remove_small_boxes(clipped, min_size=1.0), torch.tensor([0]))
    assert torch.equal(remove_small_boxes(clipped, min_size=0.5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="image_size"):
        clip_boxes_to_image(boxes, image_size=(40,))


@pytest.mark.parametrize(
    "weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (20, 20, 10, 10)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_coder_equals_torchvision_exactly(weights, dtype):
    gen = torch.Generator().manual_seed(1)
    num = 333  # odd size exercises the vectorised loops' scalar tails
    gt_boxes = random_boxes(num, generator=gen, dtype=dtype)
    proposal_boxes = random_boxes(num, generator=gen, dtype=dtype)
    ours = BoxCoder(weights)
    theirs = tv_det_utils.BoxCoder(weights)

    deltas = ours.encode(gt_boxes, proposal_boxes)
    assert torch.equal(deltas, theirs.encode_single(gt_boxes, proposal_boxes))

    # Class-specific deltas, with some far beyond bbox_xform_clip to exercise the clamp.
    num_classes = 3
    class_deltas = torch.randn(num, 4 * num_classes, generator=gen, dtype=dtype) * 3
    class_deltas[::7, 2::4] = 50.0
    expected = theirs.decode(class_deltas, [proposal_boxes])  # (N, C, 4)
    decoded = ours.decode(class_deltas, proposal_boxes)
    assert decoded.shape == (num, num_classes, 4)
    assert torch.equal(decoded, expected)
    assert torch.equal(
        ours.decode(class_deltas.reshape(num, num_classes, 4), proposal_boxes), expected
    )
    assert torch.equal(
        ours.decode(deltas, proposal_boxes), theirs.decode_single(deltas, proposal_boxes)
    )


def test_box_coder_hand_case_and_clamp():
    proposal_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt_boxes = torch.tensor([[5.0, 5.0, 25.0, 15.0]])  # centre (15, 10), size (20, 10)
    deltas = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(gt_boxes, proposal_boxes)
    torch.testing.assert_close(deltas, torch.tensor([[10.0, 5.0, 5 * math.log(2.0), 0.0]]))

    coder = BoxCoder()
    huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    box = coder.decode(huge, proposal_boxes)  # width clamped to 10 * exp(log(1000 / 16))
    torch.testing.assert_close(box, torch.tensor([[5 - 312.5, 5 - 312.5, 5 + 312.5, 5 + 312.5]]))


def test_box_coder_round_trip_and_empty():
    gen = torch.Generator().manual_seed(2)
    gt_boxes = random_boxes(200, generator=gen, dtype=torch.float64)
    proposal_boxes = random_boxes(200, generator=gen, dtype=torch.float64)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0), bbox_xform_clip=math.inf)
    decoded = coder.decode(coder.encode(gt_boxes, proposal_boxes), proposal_boxes)
    torch.testing.assert_close(decoded, gt_boxes, rtol=0, atol=1e-9)

    empty = torch.zeros(0, 4)
    assert coder.encode(empty, empty).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), empty).shape == (0, 2, 4)
    assert coder.decode(torch.zeros(0, 4), empty).shape == (0, 4)


def test_box_coder_rejects_bad_shapes():
    coder = BoxCoder()
    with pytest.raises(ValueError, match="same length"):
        coder.encode(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="deltas"):
        coder.decode(torch.zeros(2, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="deltas"):
        coder.decode(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="proposal_boxes"):
        coder.decode(torch.zeros(2, 4), torch.zeros(2, 5))
