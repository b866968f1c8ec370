"""OpenCV's trackers behind the library's tracker interface: CSRT (discriminative correlation
filter with channel and spatial reliability, Lukezic et al. 2017), KCF (kernelised correlation
filters, Henriques et al. 2015) and MIL (multiple-instance learning, Babenko et al. 2009), at
OpenCV's default parameters."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from structvision.models.tracking.base import Tracker, as_box

__all__ = ["OPENCV_TRACKERS", "OpenCVTracker"]

OPENCV_TRACKERS = {
    "csrt": cv2.TrackerCSRT_create,
    "kcf": cv2.TrackerKCF_create,
    "mil": cv2.TrackerMIL_create,
}


def _bgr(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` float RGB in ``[0, 1]`` -> ``(H, W, 3)`` uint8 BGR, as OpenCV wants."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"a frame must be (3, H, W), got {tuple(image.shape)}")
    rgb = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()[..., ::-1])


class OpenCVTracker(Tracker):
    """One of :data:`OPENCV_TRACKERS`; when OpenCV reports a lost target the last box is kept
    (the one-pass evaluation then scores it as it scores any other box)."""

    def __init__(self, method: str = "csrt") -> None:
        if method not in OPENCV_TRACKERS:
            raise ValueError(f"method must be one of {sorted(OPENCV_TRACKERS)}, got {method!r}")
        self.name = method
        self._tracker = None
        self._box: Tensor | None = None

    def init(self, image: Tensor, box: Tensor | Sequence[float]) -> None:
        x1, y1, x2, y2 = as_box(box).tolist()
        self._tracker = OPENCV_TRACKERS[self.name]()
        rect = (round(x1), round(y1), max(1, round(x2 - x1)), max(1, round(y2 - y1)))
        self._tracker.init(_bgr(image), rect)
        self._box = as_box(box)

    def update(self, image: Tensor) -> Tensor:
        if self._tracker is None or self._box is None:
            raise RuntimeError("update before init: call init(image, box) on the first frame")
        found, (x, y, w, h) = self._tracker.update(_bgr(image))
        if found and w > 0 and h > 0:
            self._box = torch.tensor([x, y, x + w, y + h], dtype=torch.float64)
        return self._box.clone()
