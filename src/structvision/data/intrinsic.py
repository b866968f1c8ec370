"""Surface normals and intrinsic images on disk: normal-map PNGs, the MIT intrinsic images,
Intrinsic Images in the Wild (IIW).

* **Normal maps** (NYUv2 style): 8-bit RGB PNGs holding ``(n + 1) / 2 * 255`` per component of
  the unit normal ``n`` (camera frame); an all-zero pixel has no normal.
  :func:`read_normal_png` / :func:`write_normal_png`.
* **MIT intrinsic images** (Grosse et al. 2009): one folder per object with
  ``original.png``, ``reflectance.png``, ``shading.png`` and ``mask.png`` (16-bit or 8-bit).
  :class:`MITIntrinsicDataset` gives ``(image, {"albedo", "shading", "mask"})``.
* **IIW** (Bell et al. 2014): ``NNNN.png`` with ``NNNN.json`` holding ``intrinsic_points``
  (``id``, ``x``, ``y`` as fractions of the width / height, ``opaque``) and
  ``intrinsic_comparisons`` (``point1``, ``point2``, ``darker`` in ``1``/``2``/``E``,
  ``darker_score`` the weight). :class:`IIWDataset` gives ``(image, {"judgements": [...]})`` in
  the form :func:`~structvision.evaluation.intrinsic.whdr` reads (pixel indices), leaving out
  comparisons with a non-opaque point or no weight, as Bell et al.'s ``whdr.py`` does.

Every reader names the file and what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "IIWDataset",
    "IntrinsicDataError",
    "MITIntrinsicDataset",
    "read_normal_png",
    "write_normal_png",
]


class IntrinsicDataError(ValueError):
    """A normal map or intrinsic-image file that is missing or malformed; names the file."""


def _read_any_png(path: Path, what: str) -> np.ndarray:
    """8- or 16-bit image as float in ``[0, 1]``, ``(H, W)`` or ``(H, W, 3)`` RGB."""
    if not path.is_file():
        raise IntrinsicDataError(f"{what} {path} does not exist")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise IntrinsicDataError(f"{path}: cannot decode the {what}")
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.ndim == 3:
        raw = raw[..., :3][..., ::-1]  # BGR(A) -> RGB
    return raw.astype(np.float64) / scale


def read_normal_png(path: str | Path) -> tuple[Tensor, Tensor]:
    """``(normals (3, H, W) float32 unit vectors, valid (H, W) bool)`` from a normal-map PNG."""
    array = _read_any_png(Path(path), "normal map")
    if array.ndim != 3:
        raise IntrinsicDataError(f"{path}: a normal map has 3 channels, got one")
    raw = torch.from_numpy(array).permute(2, 0, 1)
    valid = raw.abs().sum(dim=0) > 0
    normals = torch.nn.functional.normalize(raw * 2 - 1, dim=0)
    return torch.where(valid, normals, 0.0).float(), valid


def write_normal_png(path: str | Path, normals: Tensor, valid: Tensor | None = None) -> Path:
    """Write unit ``normals (3, H, W)`` as an 8-bit normal-map PNG (invalid pixels all zero)."""
    if normals.ndim != 3 or normals.shape[0] != 3:
        raise ValueError(f"normals must be (3, H, W), got {tuple(normals.shape)}")
    encoded = ((normals.detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255).round()
    encoded = encoded.clamp(1, 255)  # 0 is reserved for "no normal"
    if valid is not None:
        encoded = torch.where(valid.cpu().bool(), encoded, 0.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(encoded.to(torch.uint8).permute(1, 2, 0).numpy()).save(path)
    return path


def _as_chw(array: np.ndarray) -> Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float()
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


class MITIntrinsicDataset(Dataset):
    """MIT intrinsic images (module docstring): one sample per object folder under ``root``."""

    FILES = ("original.png", "reflectance.png", "shading.png")

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        folders = (
            [self.root, *sorted(p for p in self.root.iterdir() if p.is_dir())]
            if self.root.is_dir()
            else []
        )
        self.objects = [f for f in folders if (f / "original.png").is_file()]
        if not self.objects:
            raise IntrinsicDataError(f"{self.root} holds no MIT object folder (original.png)")
        self.class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        folder = self.objects[index]
        image, albedo, shading = (
            _as_chw(_read_any_png(folder / n, n.removesuffix(".png"))) for n in self.FILES
        )
        if shading.shape[0] == 3:
            shading = shading.mean(dim=0, keepdim=True)
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        size = tuple(image.shape[-2:])
        for name, layer in (("reflectance", albedo), ("shading", shading)):
            if tuple(layer.shape[-2:]) != size:
                raise IntrinsicDataError(
                    f"{folder / (name + '.png')}: size {tuple(layer.shape[-2:])} differs from original.png's {size}"
                )
        mask_path = folder / "mask.png"
        mask = (
            _as_chw(_read_any_png(mask_path, "mask"))[0] > 0.5
            if mask_path.is_file()
            else torch.ones(size, dtype=torch.bool)
        )
        target = {
            "image_id": torch.tensor(index),
            "albedo": albedo,
            "shading": shading,
            "mask": mask,
        }
        return image, target


class IIWDataset(Dataset):
    """IIW photos with their judgements (module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.items = (
            sorted(p for p in self.root.glob("*.json") if p.with_suffix(".png").is_file())
            if self.root.is_dir()
            else []
        )
        if not self.items:
            raise IntrinsicDataError(f"{self.root} holds no IIW pair (NNNN.png with NNNN.json)")
        self.class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        path = self.items[index]
        image = _as_chw(_read_any_png(path.with_suffix(".png"), "image"))
        height, width = image.shape[-2:]
        try:
            record = json.loads(path.read_text())
            points = {p["id"]: p for p in record["intrinsic_points"]}
            comparisons = record["intrinsic_comparisons"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise IntrinsicDataError(f"{path}: not an IIW judgement file ({error})") from None
        judgements = []
        for comparison in comparisons:
            try:
                first, second = points[comparison["point1"]], points[comparison["point2"]]
            except KeyError as error:
                raise IntrinsicDataError(
                    f"{path}: a comparison names an unknown point {error}"
                ) from None
            weight = comparison.get("darker_score")
            if (
                not first.get("opaque", True)
                or not second.get("opaque", True)
                or not weight
                or weight <= 0
            ):
                continue
            judgements.append(
                {
                    "x1": min(int(first["x"] * width), width - 1),
                    "y1": min(int(first["y"] * height), height - 1),
                    "x2": min(int(second["x"] * width), width - 1),
                    "y2": min(int(second["y"] * height), height - 1),
                    "darker": str(comparison["darker"]),
                    "weight": float(weight),
                }
            )
        return image, {"image_id": torch.tensor(index), "judgements": judgements}
