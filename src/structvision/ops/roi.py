"""Region-of-interest pooling (Fast R-CNN's RoIPool, Mask R-CNN's RoIAlign).

Both take a batch of feature maps ``(B, C, H, W)`` and boxes given in *image* pixels as
``xyxy``; ``spatial_scale`` (e.g. ``1 / 16`` for a stride-16 feature map) maps a box coordinate
``u`` to the feature-map coordinate ``u * spatial_scale``. Boxes are either one ``(K, 5)``
tensor of rows ``(batch_index, x1, y1, x2, y2)`` or a list of ``B`` tensors ``(N_i, 4)``, one
per image; the outputs of the list form are concatenated in image order.

Coordinates. Feature cell ``(i, j)`` has its centre at continuous position
``(j + 0.5, i + 0.5)`` and covers ``[j, j + 1) x [i, i + 1)``.

* :func:`roi_align` with ``aligned=True`` honours this: the scaled box is shifted by ``-0.5``
  before bilinear sampling, so a box ``(0, 0, W, H)`` samples exactly the whole map. With
  ``aligned=False`` (the original Mask R-CNN / Detectron behaviour, and torchvision's Mask R-CNN
  weights) there is no shift, i.e. the box is read half a cell down and right, and its size is
  clamped to at least one cell.
* :func:`roi_pool` rounds the scaled box corners to integer cells and treats ``x2`` as
  inclusive (a box ``(0, 0, 3, 3)`` covers 4 x 4 cells), then max-pools each bin.

Operations run on torchvision's kernels (CPU and CUDA, differentiable). Its CPU kernels use
one thread; at inference (no gradient wanted) on the CPU, :func:`roi_align` and
:func:`roi_pool` split many boxes into one chunk per PyTorch thread and run the chunks at
once (the kernels release the GIL). Every box is pooled on its own, so the result is the same
to the bit; a Mask R-CNN with a ResNet-50 FPN at 800 px spent a third of its int8 inference in
RoIAlign on one thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torchvision.ops
from torch import Tensor, nn

from structvision.ops.tracing import is_tracing

#: Fewest boxes per thread for which :func:`roi_align` / :func:`roi_pool` use several threads.
MIN_BOXES_PER_THREAD = 16

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0
_pool_lock = threading.Lock()

__all__ = ["RoIAlign", "RoIPool", "roi_align", "roi_pool"]

OutputSize = int | tuple[int, int]


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: OutputSize,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Average of bilinearly sampled feature values in each bin of each box (RoIAlign).

    Each box is split into ``output_size`` bins; each bin averages a grid of
    ``sampling_ratio x sampling_ratio`` bilinear samples (adaptive when ``<= 0``:
    ``ceil(box_size / output_size)`` per axis). Samples more than one cell outside the map read 0.

    Args:
        input: ``(B, C, H, W)`` feature maps.
        boxes: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` or a list of ``B`` ``(N_i, 4)``
            ``xyxy`` tensors, in image pixels; same dtype as ``input`` (outside autocast).
        output_size: ``(h, w)`` bins per box, or one int for both.
        spatial_scale: feature-map cells per image pixel.
        sampling_ratio: samples per bin along each axis; ``<= 0`` for adaptive.
        aligned: shift the scaled box by ``-0.5`` cell (see the module docstring).

    Returns:
        ``(K, C, h, w)`` pooled features, ``K`` = total number of boxes.
    """
    _check_roi_inputs(input, boxes)
    settings = {
        "output_size": _pair(output_size),
        "spatial_scale": float(spatial_scale),
        "sampling_ratio": int(sampling_ratio),
        "aligned": bool(aligned),
    }
    return _in_threads(torchvision.ops.roi_align, input, boxes, settings)


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: OutputSize,
    spatial_scale: float = 1.0,
) -> Tensor:
    """Maximum of the feature cells in each bin of each box (Fast R-CNN's RoIPool).

    The scaled box corners are rounded to cells, the box (inclusive of its last cell, at least
    one cell) is divided into ``output_size`` bins with floor/ceil boundaries, and each bin takes
    the maximum of its cells (0 for an empty bin).

    Args:
        input: ``(B, C, H, W)`` feature maps.
        boxes: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` or a list of ``B`` ``(N_i, 4)``
            ``xyxy`` tensors, in image pixels.
        output_size: ``(h, w)`` bins per box, or one int for both.
        spatial_scale: feature-map cells per image pixel.

    Returns:
        ``(K, C, h, w)`` pooled features.
    """
    _check_roi_inputs(input, boxes)
    settings = {"output_size": _pair(output_size), "spatial_scale": float(spatial_scale)}
    return _in_threads(torchvision.ops.roi_pool, input, boxes, settings)


def _in_threads(
    kernel: Callable[..., Tensor], input: Tensor, boxes: Tensor | list[Tensor], settings: dict
) -> Tensor:
    """``kernel(input, boxes, **settings)``; at CPU inference with many boxes, the boxes split
    into one chunk per PyTorch thread, pooled at once and concatenated in order."""
    threads = torch.get_num_threads()
    box_tensors = [boxes] if isinstance(boxes, Tensor) else list(boxes)
    count = sum(len(b) for b in box_tensors)
    wants_grad = torch.is_grad_enabled() and (
        input.requires_grad or any(b.requires_grad for b in box_tensors)
    )
    parallel = (
        input.device.type == "cpu"
        and threads > 1
        and count >= 2 * MIN_BOXES_PER_THREAD
        and not wants_grad
        and not is_tracing()
    )
    if not parallel:
        return kernel(input, boxes, **settings)
    chunks = _as_rows(boxes).chunk(min(threads, count // MIN_BOXES_PER_THREAD))
    inference = torch.is_inference_mode_enabled()

    def pool(chunk: Tensor) -> Tensor:
        # grad and inference modes are per thread: the caller's hold in the worker too
        with torch.inference_mode(inference), torch.no_grad():
            return kernel(input, chunk, **settings)

    return torch.cat(list(_executor(len(chunks)).map(pool, chunks)))


def _as_rows(boxes: Tensor | list[Tensor]) -> Tensor:
    """Boxes as ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)``."""
    if isinstance(boxes, Tensor):
        return boxes
    return torch.cat(
        [torch.cat([b.new_full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)]
    )


def _executor(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool with at least ``workers`` threads."""
    global _pool, _pool_size, _pool_pid
    with _pool_lock:
        forked = _pool_pid != os.getpid()  # a forked child has the pool but not its threads
        if _pool is None or forked or _pool_size < workers:
            if _pool is not None and not forked:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="structvision-roi")
            _pool_size, _pool_pid = workers, os.getpid()
        return _pool


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` with fixed ``output_size``, scale and sampling."""

    def __init__(
        self,
        output_size: OutputSize,
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        """``(B, C, H, W)`` features and boxes -> ``(K, C, h, w)`` pooled features."""
        return roi_align(
            input,
            boxes,
            self.output_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool` with fixed ``output_size`` and scale."""

    def __init__(self, output_size: OutputSize, spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        """``(B, C, H, W)`` features and boxes -> ``(K, C, h, w)`` pooled features."""
        return roi_pool(input, boxes, self.output_size, spatial_scale=self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


def _pair(output_size: OutputSize) -> tuple[int, int]:
    if isinstance(output_size, int):
        size = (output_size, output_size)
    else:
        size = tuple(int(s) for s in output_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"output_size must be a positive int or (h, w), got {output_size!r}")
    return size


def _check_roi_inputs(input: Tensor, boxes: Tensor | list[Tensor]) -> None:
    """Raise ``ValueError`` for malformed features or boxes (torchvision would assert)."""
    if not isinstance(input, Tensor) or input.ndim != 4:
        shape = getattr(input, "shape", type(input).__name__)
        raise ValueError(f"input must have shape (B, C, H, W), got {tuple(shape)}")
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes as a Tensor must have shape (K, 5) with rows "
                f"(batch_index, x1, y1, x2, y2), got {tuple(boxes.shape)}"
            )
        box_tensors = [boxes]
    elif isinstance(boxes, (list, tuple)):
        if len(boxes) != input.shape[0]:
            raise ValueError(
                f"boxes as a list must hold one (N_i, 4) tensor per image: input has batch size "
                f"{input.shape[0]}, got {len(boxes)} tensors"
            )
        for image_idx, image_boxes in enumerate(boxes):
            if not isinstance(image_boxes, Tensor) or image_boxes.ndim != 2:
                shape = getattr(image_boxes, "shape", type(image_boxes).__name__)
                raise ValueError(f"boxes[{image_idx}] must have shape (N, 4), got {tuple(shape)}")
            if image_boxes.shape[1] != 4:
                raise ValueError(
                    f"boxes[{image_idx}] must have shape (N, 4), got {tuple(image_boxes.shape)}"
                )
        box_tensors = list(boxes)
    else:
        raise ValueError(
            f"boxes must be a (K, 5) Tensor or a list of (N_i, 4) Tensors, got {type(boxes).__name__}"
        )
    if not _autocast_enabled(input):
        for box_tensor in box_tensors:
            if box_tensor.dtype != input.dtype:
                raise ValueError(
                    f"boxes must have the dtype of input ({input.dtype}), got {box_tensor.dtype}"
                )


def _autocast_enabled(input: Tensor) -> bool:
    """Whether autocast is active for ``input``'s device (it then reconciles the dtypes)."""
    try:
        return torch.is_autocast_enabled(input.device.type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_enabled()
