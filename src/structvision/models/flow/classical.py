"""Classical optical flow from OpenCV, behind the learned models' call.

* ``"dis"``: Dense Inverse Search (Kroeger et al. 2016), ``cv2.DISOpticalFlow`` with one of its
  presets (``ultrafast``, ``fast``, ``medium``).
* ``"farneback"``: Farneback's polynomial-expansion method (2003), ``cv2.calcOpticalFlowFarneback``
  with OpenCV's documented example settings (pyramid scale 0.5, 5 levels, 15-pixel window,
  3 iterations, ``poly_n = 5``, ``poly_sigma = 1.2``).
* ``"tvl1"``: the TV-L1 variational method (Zach et al. 2007), opencv-contrib's
  ``cv2.optflow.DualTVL1OpticalFlow`` at its defaults.

Each works on the grey-level frames (8 bit) and gives OpenCV's forward flow, frame 1 to frame 2,
in the library's convention. ``ClassicalFlow(method)(image1, image2)`` returns
``[{"flow": (2, H, W)}]`` like :class:`~structvision.models.flow.RAFT` in eval mode.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from structvision.models.flow.common import split_inputs

__all__ = ["CLASSICAL_METHODS", "ClassicalFlow"]

CLASSICAL_METHODS = ("dis", "farneback", "tvl1")

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _grey(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` float in ``[0, 1]`` -> ``(H, W)`` uint8 (ITU-R 601 luma, OpenCV's)."""
    rgb = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()), cv2.COLOR_RGB2GRAY)


class ClassicalFlow(nn.Module):
    """An OpenCV flow method (module docstring) with the learned models' interface.

    Args:
        method: ``"dis"``, ``"farneback"`` or ``"tvl1"``.
        preset: DIS only: ``"ultrafast"``, ``"fast"`` or ``"medium"``.
    """

    def __init__(self, method: str = "dis", *, preset: str = "medium") -> None:
        super().__init__()
        if method not in CLASSICAL_METHODS:
            raise ValueError(f"method must be one of {CLASSICAL_METHODS}, got {method!r}")
        if method == "dis" and preset not in _DIS_PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(_DIS_PRESETS)}, got {preset!r}")
        self.method = method
        self.preset = preset

    def _solver(self) -> Any:
        if self.method == "dis":
            return cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
        if self.method == "tvl1":
            return cv2.optflow.DualTVL1OpticalFlow_create()
        return None

    def flow(self, image1: Tensor, image2: Tensor) -> Tensor:
        """``(3, H, W)`` frames -> ``(2, H, W)`` flow in pixels."""
        first, second = _grey(image1), _grey(image2)
        solver = self._solver()
        if self.method == "farneback":
            flow = cv2.calcOpticalFlowFarneback(first, second, None, 0.5, 5, 15, 3, 5, 1.2, 0)
        else:
            flow = solver.calc(first, second, None)
        return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))

    def forward(
        self, image1: Any, image2: Any = None, targets: Any = None
    ) -> list[dict[str, Tensor]]:
        first, second, _ = split_inputs(image1, image2, targets)
        return [
            {"flow": self.flow(a, b).to(first.device)} for a, b in zip(first, second, strict=True)
        ]
