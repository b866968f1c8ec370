"""``structvision data synth world``: the world's layers on disk, beside a COCO dataset.

Layout (``i`` is the sample index, six digits)::

    OUT/annotations.json, OUT/images/i.png     COCO boxes, labels and exact RLE masks
    OUT/depth/i.png      16-bit grey, depth in metres = value / 256 (KITTI's encoding; 0 = none)
    OUT/normals/i.png    8-bit RGB, camera-frame unit normal n = value / 255 * 2 - 1
    OUT/albedo/i.png     8-bit RGB reflectance
    OUT/shading/i.png    8-bit RGB shading (image = albedo * shading before 8-bit rounding)
    OUT/cameras.json     per image: focal length (pixels), principal point, baseline (metres)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from structvision.viz import save_depth_png, save_png

__all__ = ["write_world"]


class _LayerWriter:
    """A dataset view that writes each sample's layers as `write_coco` reads it."""

    def __init__(self, dataset: Any, out: Path) -> None:
        self.dataset = dataset
        self.out = out
        self.categories = dataset.categories
        self.cameras: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, target = self.dataset[index]
        name = f"{index:06d}.png"
        save_depth_png(target["depth"], self.out / "depth" / name)
        normals = ((target["normals"] + 1) / 2).clamp(0, 1)
        for folder, layer in (
            ("normals", normals),
            ("albedo", target["albedo"]),
            ("shading", target["shading"].clamp(0, 1)),
        ):
            save_png((layer * 255).round().to(torch.uint8), self.out / folder / name)
        intrinsics = target["intrinsics"]
        self.cameras[name] = {
            "focal": float(intrinsics[0, 0]),
            "cx": float(intrinsics[0, 2]),
            "cy": float(intrinsics[1, 2]),
            "baseline": float(target["baseline"]),
        }
        return image, target


def write_world(
    dataset: Any,
    out: str | Path,
    *,
    num_images: int | None = None,
    mask_format: str = "rle",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a ``world`` dataset: COCO annotations plus every layer (module docstring).
    Returns the path of ``annotations.json``."""
    from structvision.data.export import write_coco

    out = Path(out)
    writer = _LayerWriter(dataset, out)
    path = write_coco(
        writer, out, num_images=num_images, mask_format=mask_format, progress=progress
    )
    (out / "cameras.json").write_text(json.dumps(writer.cameras, indent=2) + "\n")
    return path
