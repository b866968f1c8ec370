"""What the flow models share: how they take frame pairs, pad them and read flow targets.

Inputs. ``model(image1, image2)`` with ``(B, 3, H, W)`` frames in ``[0, 1]`` (or lists of
``(3, H, W)``), or ``model(pairs)`` with ``(6, H, W)`` pairs (frame 1's channels, then frame 2's)
as the flow recipes' collate function makes them, so that the training engine's
``model(images, targets)`` / ``model(images)`` calls reach a two-view model unchanged.

Padding. Each network needs ``H`` and ``W`` to be multiples of its stride; frames are padded by
replicating their borders, split evenly between the two sides (the convention of RAFT's
reference code), and the flow is cropped back, so any input size works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FramePairs", "crop_padding", "flow_targets", "pad_to_multiple", "split_inputs"]

FramePairs = Tensor | Sequence[Tensor]


def _stack(images: FramePairs, what: str) -> Tensor:
    if isinstance(images, Tensor):
        batch = images if images.ndim == 4 else images[None]
    else:
        if not len(images):
            raise ValueError(f"{what}: no images")
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) != 1:
            raise ValueError(f"{what}: every image of a batch must have one size, got {sizes}")
        batch = torch.stack(list(images))
    if batch.ndim != 4 or not batch.is_floating_point():
        raise ValueError(f"{what}: expected float (B, C, H, W) images, got {tuple(batch.shape)}")
    return batch


def _is_images(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    return isinstance(value, Sequence) and bool(value) and isinstance(value[0], Tensor)


def split_inputs(
    image1: FramePairs, image2: Any = None, targets: Any = None
) -> tuple[Tensor, Tensor, Any]:
    """``(frames_1 (B, 3, H, W), frames_2, targets)`` from either calling convention (module
    docstring); ``image2`` may also be the targets (the engine's ``model(pairs, targets)``)."""
    if image2 is not None and not _is_images(image2):
        targets, image2 = image2, None
    if image2 is None:
        pairs = _stack(image1, "frame pairs")
        if pairs.shape[1] != 6:
            raise ValueError(
                "a flow model takes model(image1, image2) with (B, 3, H, W) frames, or (B, 6, H, "
                f"W) frame pairs; got one input of shape {tuple(pairs.shape)}"
            )
        return pairs[:, :3], pairs[:, 3:], targets
    first, second = _stack(image1, "image1"), _stack(image2, "image2")
    if first.shape != second.shape or first.shape[1] != 3:
        raise ValueError(
            f"image1 and image2 must both be (B, 3, H, W) of one size, got {tuple(first.shape)} "
            f"and {tuple(second.shape)}"
        )
    return first, second, targets


def pad_to_multiple(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """``images (B, C, H, W)`` padded (replicate) to multiples of ``multiple``, and the padding
    ``(left, right, top, bottom)``."""
    height, width = images.shape[-2:]
    extra_h, extra_w = -height % multiple, -width % multiple
    padding = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    if extra_h == 0 and extra_w == 0:
        return images, padding
    return F.pad(images, padding, mode="replicate"), padding


def crop_padding(flow: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple` on ``(B, C, H_p, W_p)``."""
    left, right, top, bottom = padding
    height, width = flow.shape[-2:]
    return flow[..., top : height - bottom, left : width - right]


def flow_targets(
    targets: Any, shape: tuple[int, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(flow (B, 2, H, W), known (B, H, W) bool)`` from per-image targets: ``flow`` and, when
    present, ``flow_valid`` (where ground truth exists; else every finite pixel)."""
    if targets is None:
        raise ValueError("targets must be given in training mode (each with 'flow')")
    items: Sequence[Mapping[str, Any]] = [targets] if isinstance(targets, Mapping) else targets
    flows, known = [], []
    for index, target in enumerate(items):
        if "flow" not in target:
            raise ValueError(f"target {index} has no 'flow' (has {sorted(target)})")
        flow = target["flow"].to(device=device, dtype=torch.float32)
        if flow.shape != (2, *shape[-2:]):
            raise ValueError(
                f"target {index}: flow of shape {tuple(flow.shape)} for frames of size "
                f"{tuple(shape[-2:])}"
            )
        valid = torch.isfinite(flow).all(dim=0)
        if "flow_valid" in target:
            valid &= target["flow_valid"].to(device=device, dtype=torch.bool)
        flows.append(torch.where(valid, flow, 0.0))
        known.append(valid)
    return torch.stack(flows), torch.stack(known)
