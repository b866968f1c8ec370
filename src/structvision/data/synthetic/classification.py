"""``shapes-cls``: one object per crop, cut from ``shapes`` scenes, plus background crops.

For pretraining the trunks of the other recipes on built-in data, as every system of the field
starts from an ImageNet classifier. Crops come from full ``shapes`` scenes, so they carry the
same colours, textures, clutter and occlusion: an object crop is a square around the object's
box grown by a random context factor (1.2 to 1.8) and shifted a little, so neighbours and
occluders may show at its edges; a background crop is a square of 20-50% of the image side
with less than 5% of its pixels on any object. Crops are resized to ``crop_size`` pixels.

``dataset[i]`` is ``(image (3, S, S), {"label": int64, "image_id": int64, "object_size":
float32})``; label 0 is the background, ``1..K`` the shape classes (``class_names``);
``object_size`` is the longer side of the object's box in the scene, pixels (0 for background
crops), for accuracy by size. Samples are fixed by ``(seed, split, i)``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from structvision.data.synthetic.shapes import ShapesDataset

__all__ = ["ShapesClassificationDataset"]

_TAG = zlib.crc32(b"structvision.shapes-cls")


class ShapesClassificationDataset(Dataset):
    """Classification crops of ``shapes`` scenes (module docstring).

    Args:
        split, num_images, seed: ``(seed, split, i)`` fixes a sample; splits never share.
        crop_size: side of the square crops, pixels.
        background_fraction: share of background crops (default: one class's share,
            ``1 / (K + 1)``).
        transforms: optional ``transforms(image, target) -> (image, target)``.
        **config_overrides: ``ShapesConfig`` fields of the scenes the crops come from.
    """

    def __init__(
        self,
        *,
        split: str = "train",
        num_images: int = 10000,
        seed: int = 0,
        crop_size: int = 32,
        background_fraction: float | None = None,
        transforms: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
        **config_overrides: Any,
    ) -> None:
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 8:
            raise ValueError(f"crop_size must be an int >= 8, got {crop_size!r}")
        self.scenes = ShapesDataset(
            split=split, num_images=num_images, seed=seed, **config_overrides
        )
        self.class_names: tuple[str, ...] = ("background", *self.scenes.class_names[1:])
        if background_fraction is None:
            background_fraction = 1.0 / len(self.class_names)
        if not 0.0 <= background_fraction <= 1.0:
            raise ValueError(f"background_fraction must be in [0, 1], got {background_fraction}")
        self.background_fraction = float(background_fraction)
        self.crop_size = crop_size
        self.transforms = transforms
        self.split, self.seed, self.num_images = split, seed, int(num_images)

    def __len__(self) -> int:
        return len(self.scenes)

    def _rng(self, index: int) -> np.random.Generator:
        split_code = zlib.crc32(self.split.encode("utf-8"))
        return np.random.default_rng(np.random.SeedSequence([_TAG, self.seed, split_code, index]))

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.scenes[index]
        rng = self._rng(index)
        height, width = image.shape[-2:]
        boxes = target["boxes"]
        object_size = 0.0
        if len(boxes) == 0 or rng.random() < self.background_fraction:
            x0, y0, side, label = *self._background_square(rng, target, height, width), 0
        else:
            k = int(rng.integers(len(boxes)))
            x1, y1, x2, y2 = boxes[k].tolist()
            object_size = max(x2 - x1, y2 - y1)
            side = object_size * rng.uniform(1.2, 1.8)
            cx = (x1 + x2) / 2 + rng.uniform(-0.1, 0.1) * side
            cy = (y1 + y2) / 2 + rng.uniform(-0.1, 0.1) * side
            x0, y0, label = cx - side / 2, cy - side / 2, int(target["labels"][k])
        crop = _crop_square(image, x0, y0, side, self.crop_size)
        result = {
            "label": torch.tensor(label),
            "image_id": torch.tensor(index),
            "object_size": torch.tensor(object_size, dtype=torch.float32),
        }
        if self.transforms is not None:
            return self.transforms(crop, result)
        return crop, result

    def _background_square(
        self, rng: np.random.Generator, target: dict, height: int, width: int
    ) -> tuple[float, float, float]:
        foreground = target["semantic"] != 0  # objects and their ignore band
        best = None
        for _ in range(20):
            side = rng.uniform(0.2, 0.5) * min(height, width)
            x0 = rng.uniform(0, width - side)
            y0 = rng.uniform(0, height - side)
            window = foreground[int(y0) : int(y0 + side), int(x0) : int(x0 + side)]
            covered = float(window.float().mean()) if window.numel() else 1.0
            if best is None or covered < best[0]:
                best = (covered, x0, y0, side)
            if covered < 0.05:
                break
        return best[1], best[2], best[3]


def _crop_square(image: Tensor, x0: float, y0: float, side: float, size: int) -> Tensor:
    """The square ``[x0, x0 + side) x [y0, y0 + side)`` of ``image (3, H, W)``, rounded to whole
    pixels, resized to ``(3, size, size)`` (bilinear with antialiasing; edge pixels repeat
    outside the image)."""
    height, width = image.shape[-2:]
    side_px = max(round(side), 2)
    left, top = round(x0), round(y0)
    pad = (
        max(0, -left),
        max(0, left + side_px - width),
        max(0, -top),
        max(0, top + side_px - height),
    )
    padded = F.pad(image[None], pad, mode="replicate") if any(pad) else image[None]
    left, top = left + pad[0], top + pad[2]
    region = padded[..., top : top + side_px, left : left + side_px]
    return F.interpolate(
        region, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]
