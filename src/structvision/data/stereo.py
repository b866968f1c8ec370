"""Stereo and depth data on disk: KITTI stereo 2015, KITTI depth, Middlebury 2014, PFM.

Formats (as their devkits define them):

* **KITTI disparity PNG** (``disp_occ_0/``, ``disp_noc_0/``): 16-bit grey, disparity in pixels
  = value / 256, 0 = no ground truth.
* **KITTI depth PNG** (``proj_depth/groundtruth/...``): 16-bit grey, depth in metres = value /
  256, 0 = no ground truth.
* **KITTI calibration** (``calib_cam_to_cam.txt`` of the raw data, or one file per frame in
  ``calib_cam_to_cam/`` of stereo 2015): lines ``NAME: v1 v2 ...``; the rectified projection
  matrices ``P_rect_02`` / ``P_rect_03`` (3x4) give the focal length ``fx = P[0, 0]`` and the
  baseline of the colour pair ``(P2[0, 3] - P3[0, 3]) / fx`` metres.
* **KITTI stereo 2015 folder**: ``image_2/`` (left) and ``image_3/`` (right) named
  ``NNNNNN_10.png``, optional ``disp_occ_0/``, ``disp_noc_0/`` and ``calib_cam_to_cam/``.
* **Middlebury 2014**: one folder per scene with ``im0.png``, ``im1.png``, ``disp0.pfm``
  (``inf`` = unknown) and ``calib.txt`` (``cam0=[f 0 cx; 0 f cy; 0 0 1]``, ``doffs``,
  ``baseline`` in millimetres, ...); depth = ``baseline * f / (d + doffs)``.
* **PFM**: ``Pf`` (grey) or ``PF`` (colour) header, width and height, a scale whose sign gives
  the byte order (negative = little-endian), float32 rows from the bottom up.

Every reader names the file and the problem when something is missing or malformed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "KittiStereoDataset",
    "MiddleburyDataset",
    "StereoDataError",
    "read_kitti_calibration",
    "read_kitti_depth",
    "read_kitti_disparity",
    "read_middlebury_calibration",
    "read_pfm",
    "write_kitti_calibration",
    "write_kitti_disparity",
    "write_kitti_stereo",
    "write_pfm",
]


class StereoDataError(ValueError):
    """A stereo or depth file that is missing or malformed; the message names it."""


# --------------------------------------------------------------------------- PFM


def read_pfm(path: str | Path) -> np.ndarray:
    """A PFM file as float32 ``(H, W)`` (``Pf``) or ``(H, W, 3)`` (``PF``), top row first."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            kind = handle.readline().strip()
            if kind not in (b"PF", b"Pf"):
                raise StereoDataError(f"{path}: not a PFM file (header {kind[:10]!r})")
            dims = handle.readline().split()
            scale = float(handle.readline().strip())
            width, height = int(dims[0]), int(dims[1])
            data = handle.read()
    except (OSError, ValueError, IndexError) as error:
        if isinstance(error, StereoDataError):
            raise
        raise StereoDataError(f"{path}: cannot read a PFM header ({error})") from None
    channels = 3 if kind == b"PF" else 1
    dtype = "<f4" if scale < 0 else ">f4"
    expected = width * height * channels
    values = np.frombuffer(data, dtype=dtype, count=min(expected, len(data) // 4))
    if values.size != expected:
        raise StereoDataError(
            f"{path}: PFM data holds {values.size} values, the header says {width}x{height}"
            f"x{channels} = {expected}"
        )
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.flipud(values.reshape(shape)).astype(np.float32)


def write_pfm(path: str | Path, array: np.ndarray) -> Path:
    """Write float ``(H, W)`` or ``(H, W, 3)`` as little-endian PFM (rows bottom-up)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"write_pfm needs (H, W) or (H, W, 3), got {array.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = b"PF" if array.ndim == 3 else b"Pf"
    height, width = array.shape[:2]
    with open(path, "wb") as handle:
        handle.write(kind + b"\n" + f"{width} {height}\n".encode() + b"-1.0\n")
        handle.write(np.flipud(array).astype("<f4").tobytes())
    return path


# --------------------------------------------------------------------------- KITTI PNGs


def _read_uint16_png(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise StereoDataError(f"{what} file {path} does not exist")
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except Exception as error:  # PIL raises many types for corrupt files
        raise StereoDataError(f"{path}: cannot decode the {what} PNG ({error})") from None
    if array.ndim != 2 or array.dtype not in (np.uint16, np.int32, np.uint8):
        raise StereoDataError(
            f"{path}: a {what} PNG must be 16-bit grey, got {array.dtype} with shape {array.shape}"
        )
    return array.astype(np.float32)


def read_kitti_disparity(path: str | Path) -> tuple[Tensor, Tensor]:
    """``disparity (H, W)`` float32 pixels (0 where unknown) and ``valid (H, W)`` bool."""
    raw = _read_uint16_png(Path(path), "KITTI disparity")
    return torch.from_numpy(raw / 256.0), torch.from_numpy(raw > 0)


def read_kitti_depth(path: str | Path) -> tuple[Tensor, Tensor]:
    """``depth (H, W)`` float32 metres (0 where unknown) and ``valid (H, W)`` bool."""
    raw = _read_uint16_png(Path(path), "KITTI depth")
    return torch.from_numpy(raw / 256.0), torch.from_numpy(raw > 0)


def write_kitti_disparity(path: str | Path, disparity: Tensor, valid: Tensor | None = None) -> Path:
    """Write ``disparity (H, W)`` pixels as KITTI's 16-bit PNG (value = round(d * 256); 0 where
    not ``valid``, non-positive or not finite; capped at 255.99 pixels)."""
    data = disparity.detach().double().cpu()
    keep = torch.isfinite(data) & (data > 0)
    if valid is not None:
        keep &= valid.bool().cpu()
    values = torch.where(keep, (data * 256).round().clamp(1, 65535), torch.zeros_like(data))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.numpy().astype(np.uint16)).save(path)
    return path


# --------------------------------------------------------------------------- calibration


def read_kitti_calibration(path: str | Path) -> dict[str, float]:
    """``{"focal", "baseline", "cx", "cy"}`` of the rectified colour pair from a KITTI
    ``calib_cam_to_cam.txt`` (``P_rect_02``, ``P_rect_03``); pixels and metres."""
    path = Path(path)
    if not path.is_file():
        raise StereoDataError(f"KITTI calibration file {path} does not exist")
    matrices: dict[str, np.ndarray] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name, sep, values = line.partition(":")
        if not sep or not name.startswith("P_rect_0"):
            continue
        try:
            matrices[name.strip()] = np.array([float(v) for v in values.split()]).reshape(3, 4)
        except ValueError:
            raise StereoDataError(
                f"{path}, line {number}: {name.strip()} must hold 12 numbers"
            ) from None
    missing = [name for name in ("P_rect_02", "P_rect_03") if name not in matrices]
    if missing:
        raise StereoDataError(f"{path}: missing {', '.join(missing)}")
    left, right = matrices["P_rect_02"], matrices["P_rect_03"]
    focal = float(left[0, 0])
    if not focal > 0:
        raise StereoDataError(f"{path}: P_rect_02 has a non-positive focal length {focal}")
    return {
        "focal": focal,
        "baseline": float((left[0, 3] - right[0, 3]) / focal),
        "cx": float(left[0, 2]),
        "cy": float(left[1, 2]),
    }


def write_kitti_calibration(
    path: str | Path, *, focal: float, cx: float, cy: float, baseline: float
) -> Path:
    """A ``calib_cam_to_cam.txt`` with ``P_rect_02`` (the left camera, the reference) and
    ``P_rect_03`` (``baseline`` metres to its right), as `read_kitti_calibration` reads it."""

    def matrix(tx: float) -> str:
        values = [focal, 0.0, cx, tx, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return " ".join(f"{v:.12e}" for v in values)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"P_rect_02: {matrix(0.0)}\nP_rect_03: {matrix(-focal * baseline)}\n", encoding="utf-8"
    )
    return path


def read_middlebury_calibration(path: str | Path) -> dict[str, float]:
    """``{"focal", "cx", "cy", "doffs", "baseline"}`` from a Middlebury ``calib.txt``
    (baseline converted from millimetres to metres)."""
    path = Path(path)
    if not path.is_file():
        raise StereoDataError(f"Middlebury calibration file {path} does not exist")
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            entries[name.strip()] = value.strip()
    try:
        cam0 = [float(v) for v in re.split(r"[\s;]+", entries["cam0"].strip("[]").strip())]
        return {
            "focal": cam0[0],
            "cx": cam0[2],
            "cy": cam0[5],
            "doffs": float(entries.get("doffs", 0.0)),
            "baseline": float(entries["baseline"]) / 1000.0,
        }
    except (KeyError, IndexError, ValueError) as error:
        raise StereoDataError(f"{path}: malformed Middlebury calibration ({error})") from None


# --------------------------------------------------------------------------- datasets

Transform = Callable[[Tensor, dict], tuple[Tensor, dict]]


def _read_image(path: Path) -> Tensor:
    from structvision.data.coco import read_rgb_image

    if not path.is_file():
        raise StereoDataError(f"image {path} does not exist")
    try:
        return read_rgb_image(path)
    except Exception as error:
        raise StereoDataError(str(error)) from None


class KittiStereoDataset(Dataset):
    """A KITTI stereo 2015 folder (module docstring): ``(left image, target)`` samples.

    ``target``: ``image_right (3, H, W)``; when present, ``disparity (H, W)`` pixels and
    ``valid`` from ``disp_occ_0``, ``disparity_noc``/``valid_noc`` from ``disp_noc_0``, and
    ``depth (H, W)`` metres (``focal * baseline / disparity``, 0 where unknown); ``focal``
    (pixels) and ``baseline`` (metres) from ``calib_cam_to_cam/NNNNNN.txt``, or a single
    ``calib_cam_to_cam.txt`` beside the folders, or ``focal``/``baseline`` given here;
    ``image_id``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        focal: float | None = None,
        baseline: float | None = None,
        transforms: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        left_dir, right_dir = self.root / "image_2", self.root / "image_3"
        for folder in (left_dir, right_dir):
            if not folder.is_dir():
                raise StereoDataError(f"KITTI stereo folder {self.root} has no {folder.name}/")
        self.names = sorted(p.name for p in left_dir.glob("*_10.png"))
        if not self.names:
            raise StereoDataError(f"{left_dir} holds no NNNNNN_10.png images")
        missing = [name for name in self.names if not (right_dir / name).is_file()]
        if missing:
            raise StereoDataError(f"{right_dir} lacks the right images {missing[:3]}")
        self.focal, self.baseline = focal, baseline
        self.transforms = transforms
        self.class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    def _camera(self, frame: str) -> dict[str, float]:
        for path in (
            self.root / "calib_cam_to_cam" / f"{frame}.txt",
            self.root / "calib_cam_to_cam.txt",
        ):
            if path.is_file():
                return read_kitti_calibration(path)
        if self.focal is None or self.baseline is None:
            raise StereoDataError(
                f"{self.root}: no calib_cam_to_cam/{frame}.txt or calib_cam_to_cam.txt; pass "
                "focal and baseline"
            )
        return {"focal": self.focal, "baseline": self.baseline}

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        name = self.names[index]
        frame = name.split("_")[0]
        image = _read_image(self.root / "image_2" / name)
        target: dict[str, Any] = {
            "image_id": torch.tensor(index, dtype=torch.int64),
            "image_right": _read_image(self.root / "image_3" / name),
        }
        camera = self._camera(frame)
        target["focal"] = torch.tensor(camera["focal"], dtype=torch.float32)
        target["baseline"] = torch.tensor(camera["baseline"], dtype=torch.float32)
        for folder, suffix in (("disp_occ_0", ""), ("disp_noc_0", "_noc")):
            path = self.root / folder / name
            if path.is_file():
                disparity, valid = read_kitti_disparity(path)
                if disparity.shape != image.shape[-2:]:
                    raise StereoDataError(
                        f"{path}: size {tuple(disparity.shape)} differs from the image's "
                        f"{tuple(image.shape[-2:])}"
                    )
                target[f"disparity{suffix}"], target[f"valid{suffix}"] = disparity, valid
        if "disparity" in target:
            disparity = target["disparity"]
            scale = camera["focal"] * camera["baseline"]
            target["depth"] = torch.where(
                target["valid"], scale / disparity.clamp_min(1e-6), torch.zeros_like(disparity)
            )
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target


class MiddleburyDataset(Dataset):
    """Middlebury 2014 scenes (module docstring): one sample per scene folder.

    ``target``: ``image_right``; ``disparity (H, W)`` pixels and ``valid`` from ``disp0.pfm``
    when present (``inf`` = unknown); ``depth`` metres (``baseline * focal / (d + doffs)``);
    ``focal``, ``baseline`` (metres), ``doffs``; ``image_id``.
    """

    def __init__(self, root: str | Path, *, transforms: Transform | None = None) -> None:
        self.root = Path(root)
        candidates = (
            [self.root, *sorted(p for p in self.root.iterdir() if p.is_dir())]
            if self.root.is_dir()
            else []
        )
        self.scenes = [p for p in candidates if (p / "im0.png").is_file()]
        if not self.scenes:
            raise StereoDataError(f"{self.root} holds no Middlebury scene (a folder with im0.png)")
        self.transforms = transforms
        self.class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        scene = self.scenes[index]
        image = _read_image(scene / "im0.png")
        camera = read_middlebury_calibration(scene / "calib.txt")
        target: dict[str, Any] = {
            "image_id": torch.tensor(index, dtype=torch.int64),
            "image_right": _read_image(scene / "im1.png"),
            "focal": torch.tensor(camera["focal"], dtype=torch.float32),
            "baseline": torch.tensor(camera["baseline"], dtype=torch.float32),
            "doffs": torch.tensor(camera["doffs"], dtype=torch.float32),
        }
        if (scene / "disp0.pfm").is_file():
            disparity = torch.from_numpy(read_pfm(scene / "disp0.pfm").copy())
            if disparity.shape != image.shape[-2:]:
                raise StereoDataError(
                    f"{scene / 'disp0.pfm'}: size {tuple(disparity.shape)} differs from the "
                    f"image's {tuple(image.shape[-2:])}"
                )
            valid = torch.isfinite(disparity) & (disparity > 0)
            disparity = torch.where(valid, disparity, torch.zeros_like(disparity))
            depth = camera["baseline"] * camera["focal"] / (disparity + camera["doffs"])
            target.update(
                disparity=disparity, valid=valid, depth=torch.where(valid, depth, 0.0 * depth)
            )
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target


# --------------------------------------------------------------------------- writers


def write_kitti_stereo(
    dataset: Dataset,
    out: str | Path,
    *,
    num_images: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a stereo dataset (``world-stereo``) in the KITTI stereo 2015 layout.

    ``image_2/NNNNNN_10.png`` and ``image_3/NNNNNN_10.png`` (8-bit RGB), ``disp_occ_0/`` (the
    left disparity of every pixel) and ``disp_noc_0/`` (only the pixels the right camera sees)
    as 16-bit PNGs (value / 256 = pixels), and ``calib_cam_to_cam/NNNNNN.txt`` with
    ``P_rect_02``/``P_rect_03``. :class:`KittiStereoDataset` and other KITTI tools read it back.
    Returns ``out``.
    """
    out = Path(out)
    count = len(dataset) if num_images is None else min(num_images, len(dataset))
    for index in range(count):
        image, target = dataset[index]
        name = f"{index:06d}_10.png"
        for folder, picture in (("image_2", image), ("image_3", target["image_right"])):
            path = out / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            array = (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(path)
        write_kitti_disparity(out / "disp_occ_0" / name, target["disparity"])
        write_kitti_disparity(out / "disp_noc_0" / name, target["disparity"], target["valid"])
        intrinsics = target["intrinsics"]
        write_kitti_calibration(
            out / "calib_cam_to_cam" / f"{index:06d}.txt",
            focal=float(intrinsics[0, 0]),
            cx=float(intrinsics[0, 2]),
            cy=float(intrinsics[1, 2]),
            baseline=float(target["baseline"]),
        )
        if progress is not None:
            progress(index + 1, count)
    return out
