"""The tracker interface (got10k's): ``init(image, box)``, ``update(image) -> box`` and
``track(frames, box) -> (boxes, seconds per frame)``.

Images are ``(3, H, W)`` float tensors in ``[0, 1]`` (or what
:func:`~structvision.tasks.predictor.as_image` reads); boxes are ``xyxy`` pixels, float, inside
the library (OTB text files use ``x, y, w, h``; the readers and writers convert).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["Tracker", "as_box", "module_device"]


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s parameters (or, for an exported model without any, its buffers) are;
    the CPU when it has neither."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def as_box(box: Tensor | Sequence[float]) -> Tensor:
    """``box`` as a float64 ``(4,)`` ``xyxy`` tensor with positive width and height."""
    value = torch.as_tensor(box, dtype=torch.float64).flatten()
    if value.shape != (4,) or not torch.isfinite(value).all():
        raise ValueError(f"a box is 4 finite numbers x1, y1, x2, y2; got {box!r}")
    if not (value[2] > value[0] and value[3] > value[1]):
        raise ValueError(f"a box needs x2 > x1 and y2 > y1; got {value.tolist()}")
    return value


class Tracker:
    """A single-object tracker: subclasses implement :meth:`init` and :meth:`update`."""

    name = "tracker"

    def init(self, image: Tensor, box: Tensor | Sequence[float]) -> None:
        raise NotImplementedError

    def update(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def track(
        self, frames: Iterable[Tensor], box: Tensor | Sequence[float]
    ) -> tuple[Tensor, float]:
        """Run over ``frames`` from the true ``box`` on the first: ``(boxes (T, 4) xyxy,
        seconds per frame)`` (the first row is ``box``; the time covers ``init`` and every
        ``update``)."""
        boxes, seconds = [], 0.0
        for index, frame in enumerate(frames):
            started = time.perf_counter()
            if index == 0:
                self.init(frame, box)
                boxes.append(as_box(box))
            else:
                boxes.append(torch.as_tensor(self.update(frame), dtype=torch.float64))
            seconds += time.perf_counter() - started
        if not boxes:
            raise ValueError("track: no frames")
        return torch.stack(boxes), seconds / len(boxes)
