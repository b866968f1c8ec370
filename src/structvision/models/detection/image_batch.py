"""A batch of differently sized images padded into one tensor, with their true sizes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ImageBatch"]


@dataclass
class ImageBatch:
    """Images padded to a common size, plus each image's size before padding.

    Attributes:
        tensors: ``(B, 3, H_pad, W_pad)`` normalised images, zero-padded at the bottom and right.
        image_sizes: ``(h, w)`` of each image after resizing and before padding, in pixels;
            ``len(image_sizes) == B``.
    """

    tensors: Tensor  # (B, 3, H_pad, W_pad)
    image_sizes: list[tuple[int, int]]

    def __post_init__(self) -> None:
        if not isinstance(self.tensors, Tensor) or self.tensors.ndim != 4:
            shape = getattr(self.tensors, "shape", type(self.tensors).__name__)
            raise ValueError(f"tensors must have shape (B, C, H_pad, W_pad), got {tuple(shape)}")
        if len(self.image_sizes) != self.tensors.shape[0]:
            raise ValueError(
                f"image_sizes must have one (h, w) per image: expected {self.tensors.shape[0]}, "
                f"got {len(self.image_sizes)}"
            )

    def to(self, device: torch.device | str) -> ImageBatch:
        """The same batch with ``tensors`` moved to ``device``."""
        return ImageBatch(tensors=self.tensors.to(device), image_sizes=list(self.image_sizes))
