"""OpenCV's trackers behind the tracker interface follow a moving textured square."""

from __future__ import annotations

import pytest
import torch

from structvision.evaluation.tracking import center_errors, paired_iou
from structvision.models.tracking import OpenCVTracker, as_box


def _sequence(frames=20):
    generator = torch.Generator().manual_seed(0)
    background = torch.rand(3, 24, 32, generator=generator) * 0.3
    background = torch.nn.functional.interpolate(background[None], size=(96, 128))[0]
    patch = torch.rand(3, 20, 20, generator=generator) * 0.5 + 0.5
    images, boxes = [], []
    for t in range(frames):
        x, y = 20 + 3 * t, 30 + t
        image = background.clone()
        image[:, y : y + 20, x : x + 20] = patch
        images.append(image)
        boxes.append([x, y, x + 20, y + 20])
    return images, torch.tensor(boxes, dtype=torch.float64)


@pytest.mark.parametrize("method", ["csrt", "kcf", "mil"])
def test_opencv_trackers_follow_the_target(method):
    images, truth = _sequence()
    boxes, seconds = OpenCVTracker(method).track(images, truth[0])
    assert boxes.shape == (20, 4) and seconds > 0
    assert torch.equal(boxes[0], truth[0])
    # a box drifting off the target would soon score 0; MIL lags its target by a few pixels
    assert paired_iou(boxes, truth)[1:].mean() > (0.35 if method == "mil" else 0.5)
    assert center_errors(boxes, truth)[-1] < 10


def test_bad_boxes_and_order_are_named():
    with pytest.raises(ValueError, match="x2 > x1"):
        as_box([5, 5, 5, 9])
    with pytest.raises(RuntimeError, match="update before init"):
        OpenCVTracker("kcf").update(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="method must be one of"):
        OpenCVTracker("boosting")
