"""Optical-flow files of the field: Middlebury ``.flo``, KITTI flow PNGs, PFM.

A flow is ``(2, H, W)`` float32: ``u`` (pixels to the right) then ``v`` (pixels down), the motion
of each pixel of the first frame into the second (``x2 = x1 + u``, ``y2 = y1 + v``), as the
library's ``world-flow`` targets and torchvision's flow models define it.

Formats (as their authors define them):

* **Middlebury ``.flo``** (Baker et al. 2011; Sintel, FlyingChairs): little-endian; the float32
  magic ``202021.25`` (bytes ``PIEH``), int32 width, int32 height, then ``H * W`` pairs of float32
  ``(u, v)`` in row-major order. Values of ``1e9`` or more mark unknown flow.
* **KITTI flow 2015 PNG** (``flow_occ/``, ``flow_noc/``): 16-bit 3-channel PNG, channels in file
  order ``(u, v, valid)``; ``u = (value - 2**15) / 64`` pixels, likewise ``v``; ``valid`` is 1
  where ground truth exists (0 elsewhere, whatever ``u, v`` hold). So flow is stored with a
  resolution of 1/64 pixel within about +-512 pixels.
* **PFM** (FlyingThings3D, Sintel's stereo): ``PF`` colour files whose first two channels are
  ``(u, v)``; see :func:`~structvision.data.stereo.read_pfm`.

Every reader names the file and what is wrong with it: a missing file, a wrong magic number, a
truncated payload, a size that disagrees with the header.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from structvision.data.stereo import StereoDataError, read_pfm, write_pfm

__all__ = [
    "FLO_MAGIC",
    "FlowDataError",
    "read_flo",
    "read_flow",
    "read_kitti_flow",
    "write_flo",
    "write_flow_pfm",
    "write_kitti_flow",
]

FLO_MAGIC = 202021.25
"""The float32 that opens every ``.flo`` file (its bytes read ``PIEH``)."""

#: ``.flo`` values at or above this mark unknown flow (Middlebury's convention).
FLO_UNKNOWN = 1e9

#: KITTI stores ``u, v`` as ``value / 64 + 2**15`` in 16 bits.
_KITTI_SCALE = 64.0
_KITTI_OFFSET = 2.0**15


class FlowDataError(StereoDataError):
    """A flow file that is missing or malformed; the message names it."""


def _as_flow(flow: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = flow.detach().cpu().numpy() if isinstance(flow, Tensor) else np.asarray(flow)
    if array.ndim != 3 or array.shape[0] != 2:
        raise ValueError(f"{what} needs a flow of shape (2, H, W), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} needs a floating-point flow, got {array.dtype}")
    return array.astype(np.float32)


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FlowDataError(f"{what} file {path} does not exist")
    return path


# --------------------------------------------------------------------------- .flo


def read_flo(path: str | Path) -> Tensor:
    """A Middlebury ``.flo`` file as float32 ``(2, H, W)`` (unknown flow stays as stored)."""
    path = _existing(path, ".flo")
    data = path.read_bytes()
    if len(data) < 12:
        raise FlowDataError(f"{path}: {len(data)} bytes, too short for a .flo header (12)")
    magic = np.frombuffer(data, "<f4", count=1)[0]
    if magic != np.float32(FLO_MAGIC):
        raise FlowDataError(
            f"{path}: not a .flo file (magic {magic!r}, expected {FLO_MAGIC}: bytes {data[:4]!r} "
            "instead of b'PIEH')"
        )
    width, height = (int(v) for v in np.frombuffer(data, "<i4", count=2, offset=4))
    if width <= 0 or height <= 0 or width * height > 1 << 30:
        raise FlowDataError(f"{path}: implausible .flo size {width}x{height}")
    expected = 12 + 8 * width * height
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise FlowDataError(
            f"{path}: .flo file is {state}: {len(data)} bytes, the header's {width}x{height} "
            f"needs {expected}"
        )
    values = np.frombuffer(data, "<f4", count=2 * width * height, offset=12)
    return torch.from_numpy(values.reshape(height, width, 2).transpose(2, 0, 1).copy())


def write_flo(path: str | Path, flow: Tensor | np.ndarray) -> Path:
    """Write ``flow (2, H, W)`` as a Middlebury ``.flo`` file; returns the path."""
    array = _as_flow(flow, "write_flo")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, height, width = array.shape
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    path.write_bytes(header + array.transpose(1, 2, 0).astype("<f4").tobytes())
    return path


# --------------------------------------------------------------------------- KITTI


def read_kitti_flow(path: str | Path) -> tuple[Tensor, Tensor]:
    """A KITTI flow PNG: ``flow (2, H, W)`` float32 pixels (0 where unknown), ``valid (H, W)``."""
    path = _existing(path, "KITTI flow")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise FlowDataError(f"{path}: cannot decode the KITTI flow PNG")
    if raw.ndim != 3 or raw.shape[2] != 3 or raw.dtype != np.uint16:
        raise FlowDataError(
            f"{path}: a KITTI flow PNG must be 16-bit with 3 channels (u, v, valid), got "
            f"{raw.dtype} with shape {raw.shape}"
        )
    rgb = raw[..., ::-1].astype(np.float32)  # OpenCV reads BGR; the file is (u, v, valid)
    valid = rgb[..., 2] > 0
    flow = (rgb[..., :2] - _KITTI_OFFSET) / _KITTI_SCALE
    flow[~valid] = 0.0
    return torch.from_numpy(flow.transpose(2, 0, 1).copy()), torch.from_numpy(valid)


def write_kitti_flow(
    path: str | Path, flow: Tensor | np.ndarray, valid: Tensor | np.ndarray | None = None
) -> Path:
    """Write ``flow (2, H, W)`` (and ``valid (H, W)``, default: where the flow is finite) as a
    KITTI flow PNG. Values are rounded to 1/64 pixel; flow beyond what 16 bits hold (about
    +-512 pixels) is refused rather than wrapped."""
    array = _as_flow(flow, "write_kitti_flow")
    finite = np.isfinite(array).all(axis=0)
    if valid is None:
        mask = finite
    else:
        mask = valid.cpu().numpy() if isinstance(valid, Tensor) else np.asarray(valid)
        if mask.shape != array.shape[1:]:
            raise ValueError(f"valid has shape {mask.shape}, the flow {array.shape[1:]}")
        mask = mask.astype(bool) & finite
    encoded = np.where(mask, array.astype(np.float64), 0.0) * _KITTI_SCALE + _KITTI_OFFSET
    encoded = np.round(encoded)
    if encoded.min() < 0 or encoded.max() > 65535:
        limit = _KITTI_OFFSET / _KITTI_SCALE
        raise ValueError(
            f"write_kitti_flow: {path}: flow of {np.abs(array[:, mask]).max():.1f} px exceeds the "
            f"KITTI PNG's range (+-{limit:.0f} px)"
        )
    rgb = np.concatenate([encoded.transpose(1, 2, 0), mask[..., None]], axis=2).astype(np.uint16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"write_kitti_flow: could not write {path}")
    return path


# --------------------------------------------------------------------------- any


def read_flow(path: str | Path) -> tuple[Tensor, Tensor]:
    """Any flow file by its suffix: ``(flow (2, H, W), valid (H, W))``.

    ``.flo`` (valid where both components are finite and below 1e9), ``.png`` (KITTI), ``.pfm``
    (the first two channels; valid where finite).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".flo":
        flow = read_flo(path)
        valid = torch.isfinite(flow).all(dim=0) & (flow.abs() < FLO_UNKNOWN).all(dim=0)
        return torch.where(valid, flow, 0.0), valid
    if suffix == ".png":
        return read_kitti_flow(path)
    if suffix == ".pfm":
        array = read_pfm(_existing(path, "PFM flow"))
        if array.ndim != 3:
            raise FlowDataError(f"{path}: a flow PFM has 3 channels (u, v, 0), got 1")
        flow = torch.from_numpy(array[..., :2].transpose(2, 0, 1).copy())
        valid = torch.isfinite(flow).all(dim=0)
        return torch.where(valid, flow, 0.0), valid
    raise FlowDataError(f"{path}: unknown flow file type {suffix!r} (.flo, .png or .pfm)")


def write_flow_pfm(path: str | Path, flow: Tensor | np.ndarray) -> Path:
    """Write ``flow (2, H, W)`` as a 3-channel PFM ``(u, v, 0)``, as FlyingThings3D stores it."""
    array = _as_flow(flow, "write_flow_pfm")
    return write_pfm(path, np.concatenate([array, np.zeros_like(array[:1])]).transpose(1, 2, 0))
