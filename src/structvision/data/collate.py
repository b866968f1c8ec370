"""Batch collation for ``torch.utils.data.DataLoader``.

Detection-style samples have a different number of objects (and often a different image size)
per image, so :func:`collate_detection` keeps lists. Dense tasks with equal-sized samples are
stacked into ``(B, ...)`` tensors by :func:`collate_dense`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["collate_dense", "collate_detection"]

Sample = tuple[Tensor, dict[str, Any]]


def collate_detection(batch: Sequence[Sample]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """``[(image, target), ...]`` -> ``([image, ...], [target, ...])``, nothing stacked.

    Each image stays ``(3, H_i, W_i)``; each target stays a per-image dict.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def _stack(values: list[Any], key: str) -> Any:
    if not all(isinstance(v, Tensor) for v in values):
        return values
    shapes = [tuple(v.shape) for v in values]
    for index, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise ValueError(
                f"collate_dense: {key} of sample {index} has shape {shape}, sample 0 has "
                f"{shapes[0]}; dense batching needs equal sizes (resize/crop first, or use "
                "collate_detection)"
            )
    return torch.stack(values)


def collate_dense(batch: Sequence[Sample]) -> tuple[Tensor, dict[str, Any]]:
    """Stack equal-sized samples: images ``(B, 3, H, W)``, each target entry ``(B, ...)``.

    Target entries must be present in every sample; tensors are stacked (a scalar
    ``image_id`` becomes ``(B,)``), non-tensor values are returned as lists.
    """
    if not batch:
        raise ValueError("collate_dense: batch is empty")
    images = _stack([image for image, _ in batch], "image")
    keys = list(batch[0][1])
    for index, (_, target) in enumerate(batch):
        if set(target) != set(keys):
            raise ValueError(
                f"collate_dense: sample {index} has target keys {sorted(target)}, sample 0 "
                f"has {sorted(keys)}"
            )
    targets = {key: _stack([target[key] for _, target in batch], key) for key in keys}
    return images, targets
