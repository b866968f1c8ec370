"""Optical-flow data sets on disk: MPI-Sintel, KITTI flow 2015, FlyingChairs, Middlebury.

Every reader gives ``(image_1, target)`` samples like the ``world-flow`` generator:

* ``image_1 (3, H, W)`` float in ``[0, 1]`` and ``target["image_2"]`` the next frame;
* ``target["flow"] (2, H, W)``: the true forward flow in pixels (0 where unknown);
* ``target["flow_valid"] (H, W)`` bool where ground truth exists, when not everywhere;
* ``target["valid"] (H, W)`` bool: ground truth exists *and* the point stays visible in the
  second frame (not occluded), when the data set says so; the flow evaluator reports
  ``epe_noc``/``epe_occ`` from it;
* ``target["image_id"]`` (the sample's index; ``dataset.samples[i]`` holds its file paths).

Layouts (as the data sets ship them):

* **MPI-Sintel** (``training/`` or the root holding it): ``{clean,final}/SCENE/frame_NNNN.png``,
  ``flow/SCENE/frame_NNNN.flo`` (from frame N to N + 1), ``occlusions/SCENE/frame_NNNN.png``
  (white = occluded in the next frame), optionally ``invalid/SCENE/frame_NNNN.png`` (white =
  no ground truth). Frames without a ``.flo`` (the test set) give image pairs only.
* **KITTI flow 2015** (``training/``): ``image_2/NNNNNN_10.png`` and ``NNNNNN_11.png``,
  ``flow_occ/NNNNNN_10.png`` (all pixels with ground truth) and ``flow_noc/NNNNNN_10.png`` (the
  non-occluded ones), 16-bit PNGs (:func:`~structvision.data.flow_io.read_kitti_flow`).
* **FlyingChairs** (``FlyingChairs_release/``): ``data/NNNNN_img1.ppm``, ``NNNNN_img2.ppm`` and
  ``NNNNN_flow.flo``; ``FlyingChairs_train_val.txt`` (beside ``data/`` or in it) has one line per
  sample, ``1`` = training, ``2`` = validation.
* **Middlebury flow** (``other-data/SCENE/frame10.png``, ``frame11.png`` and
  ``other-gt-flow/SCENE/flow10.flo``; unknown flow is stored as ``1e9``).

Every reader names the folder or file and what is missing or malformed.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from structvision.data.flow_io import (
    FlowDataError,
    read_flow,
    read_kitti_flow,
    write_flo,
    write_kitti_flow,
)

__all__ = [
    "FlowDataError",
    "FlyingChairsDataset",
    "KittiFlowDataset",
    "MiddleburyFlowDataset",
    "SintelDataset",
    "detect_flow_folder",
    "write_kitti_flow_folder",
]

Transform = Callable[[Tensor, dict], tuple[Tensor, dict]]


def _read_image(path: Path) -> Tensor:
    if not path.is_file():
        raise FlowDataError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises many types for corrupt files
        raise FlowDataError(f"{path}: cannot decode the image ({error})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def _read_mask(path: Path) -> Tensor:
    """A black/white PNG as bool ``(H, W)`` (white = True)."""
    if not path.is_file():
        raise FlowDataError(f"mask {path} does not exist")
    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.asarray(image.convert("L")) > 127)
    except Exception as error:
        raise FlowDataError(f"{path}: cannot decode the mask ({error})") from None


def _checked_size(what: Tensor, image: Tensor, path: Path) -> Tensor:
    if what.shape[-2:] != image.shape[-2:]:
        raise FlowDataError(
            f"{path}: size {tuple(what.shape[-2:])} differs from the image's "
            f"{tuple(image.shape[-2:])}"
        )
    return what


class _FlowFolder(Dataset):
    """Shared sample assembly: subclasses fill ``self.samples`` with dicts of paths."""

    root: Path
    samples: list[dict[str, Any]]
    transforms: Transform | None
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.samples)

    def _target(self, index: int, image: Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        sample = self.samples[index]
        image = _read_image(sample["image_1"])
        image_2 = _checked_size(_read_image(sample["image_2"]), image, sample["image_2"])
        target: dict[str, Any] = {
            "image_id": torch.tensor(index, dtype=torch.int64),
            "image_2": image_2,
            **self._target(index, image),
        }
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target

    def _flo_target(self, path: Path | None, image: Tensor) -> dict[str, Tensor]:
        if path is None:
            return {}
        flow, known = read_flow(path)
        target = {"flow": _checked_size(flow, image, path)}
        if not known.all():
            target["flow_valid"] = known
        return target


class SintelDataset(_FlowFolder):
    """MPI-Sintel (module docstring): consecutive frames of each scene of one pass.

    Args:
        root: the ``training`` (or ``test``) folder, or the Sintel root holding ``training/``.
        pass_name: ``"clean"`` or ``"final"``.
    """

    def __init__(
        self, root: str | Path, *, pass_name: str = "clean", transforms: Transform | None = None
    ) -> None:
        root = Path(root)
        if not (root / pass_name).is_dir() and (root / "training" / pass_name).is_dir():
            root = root / "training"
        if pass_name not in ("clean", "final"):
            raise ValueError(f"pass_name must be 'clean' or 'final', got {pass_name!r}")
        frames_dir = root / pass_name
        if not frames_dir.is_dir():
            raise FlowDataError(f"Sintel folder {root} has no {pass_name}/ pass")
        self.root, self.transforms, self.samples = root, transforms, []
        for scene in sorted(p for p in frames_dir.iterdir() if p.is_dir()):
            frames = sorted(scene.glob("frame_*.png"))
            for first, second in pairwise(frames):
                flo = root / "flow" / scene.name / first.with_suffix(".flo").name
                self.samples.append(
                    {
                        "image_1": first,
                        "image_2": second,
                        "flow": flo if flo.is_file() else None,
                        "occlusions": root / "occlusions" / scene.name / first.name,
                        "invalid": root / "invalid" / scene.name / first.name,
                    }
                )
        if not self.samples:
            raise FlowDataError(f"{frames_dir} holds no scene with two frame_NNNN.png frames")

    def _target(self, index: int, image: Tensor) -> dict[str, Tensor]:
        sample = self.samples[index]
        target = self._flo_target(sample["flow"], image)
        if "flow" not in target:
            return target
        known = target.get("flow_valid", torch.ones(image.shape[-2:], dtype=torch.bool))
        if sample["invalid"].is_file():
            known = known & ~_checked_size(_read_mask(sample["invalid"]), image, sample["invalid"])
            target["flow_valid"] = known
        if sample["occlusions"].is_file():
            occluded = _read_mask(sample["occlusions"])
            target["valid"] = known & ~_checked_size(occluded, image, sample["occlusions"])
        return target


class KittiFlowDataset(_FlowFolder):
    """KITTI flow 2015 (module docstring): frame ``_10`` to ``_11`` of each sequence."""

    def __init__(self, root: str | Path, *, transforms: Transform | None = None) -> None:
        self.root, self.transforms = Path(root), transforms
        images = self.root / "image_2"
        if not images.is_dir():
            raise FlowDataError(f"KITTI flow folder {self.root} has no image_2/")
        firsts = sorted(images.glob("*_10.png"))
        if not firsts:
            raise FlowDataError(f"{images} holds no NNNNNN_10.png frames")
        self.samples = []
        for first in firsts:
            second = first.with_name(first.name.replace("_10.png", "_11.png"))
            if not second.is_file():
                raise FlowDataError(
                    f"{images} has {first.name} but not its next frame {second.name}"
                )
            self.samples.append({"image_1": first, "image_2": second})

    def _target(self, index: int, image: Tensor) -> dict[str, Tensor]:
        name = self.samples[index]["image_1"].name
        target: dict[str, Tensor] = {}
        occ, noc = self.root / "flow_occ" / name, self.root / "flow_noc" / name
        if occ.is_file():
            flow, known = read_kitti_flow(occ)
            target["flow"], target["flow_valid"] = _checked_size(flow, image, occ), known
        if noc.is_file():
            flow_noc, visible = read_kitti_flow(noc)
            _checked_size(flow_noc, image, noc)
            if "flow" not in target:
                target["flow"], target["flow_valid"] = flow_noc, visible
            target["valid"] = visible & target["flow_valid"]
        return target


def _chairs_split_file(root: Path) -> Path | None:
    for folder in (root, root.parent, root / "data"):
        path = folder / "FlyingChairs_train_val.txt"
        if path.is_file():
            return path
    return None


class FlyingChairsDataset(_FlowFolder):
    """FlyingChairs (module docstring).

    Args:
        root: ``FlyingChairs_release`` (holding ``data/``) or the ``data`` folder itself.
        split: ``"train"`` or ``"val"`` as ``FlyingChairs_train_val.txt`` assigns them; without
            that file every sample is in both.
    """

    def __init__(
        self, root: str | Path, *, split: str = "train", transforms: Transform | None = None
    ) -> None:
        root = Path(root)
        data = root / "data" if (root / "data").is_dir() else root
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        flows = sorted(data.glob("*_flow.flo"))
        if not flows:
            raise FlowDataError(f"FlyingChairs folder {data} holds no NNNNN_flow.flo files")
        self.root, self.transforms, self.samples = data, transforms, []
        split_file = _chairs_split_file(root)
        if split_file is not None:
            labels = split_file.read_text().split()
            if len(labels) != len(flows) or set(labels) - {"1", "2"}:
                raise FlowDataError(
                    f"{split_file}: {len(labels)} labels for {len(flows)} samples (each line must "
                    "be 1 = train or 2 = val, one per sample)"
                )
            wanted = "1" if split == "train" else "2"
            flows = [f for f, label in zip(flows, labels, strict=True) if label == wanted]
        for flo in flows:
            stem = flo.name.removesuffix("_flow.flo")
            self.samples.append(
                {
                    "image_1": data / f"{stem}_img1.ppm",
                    "image_2": data / f"{stem}_img2.ppm",
                    "flow": flo,
                }
            )

    def _target(self, index: int, image: Tensor) -> dict[str, Tensor]:
        return self._flo_target(self.samples[index]["flow"], image)


class MiddleburyFlowDataset(_FlowFolder):
    """Middlebury flow (module docstring): ``frame10`` to ``frame11`` of each scene."""

    def __init__(self, root: str | Path, *, transforms: Transform | None = None) -> None:
        self.root, self.transforms = Path(root), transforms
        scenes_dir = self.root / "other-data"
        if not scenes_dir.is_dir():
            raise FlowDataError(f"Middlebury flow folder {self.root} has no other-data/")
        self.samples = []
        for scene in sorted(p for p in scenes_dir.iterdir() if p.is_dir()):
            first, second = scene / "frame10.png", scene / "frame11.png"
            if first.is_file() and second.is_file():
                flo = self.root / "other-gt-flow" / scene.name / "flow10.flo"
                self.samples.append(
                    {"image_1": first, "image_2": second, "flow": flo if flo.is_file() else None}
                )
        if not self.samples:
            raise FlowDataError(f"{scenes_dir} holds no scene with frame10.png and frame11.png")

    def _target(self, index: int, image: Tensor) -> dict[str, Tensor]:
        return self._flo_target(self.samples[index]["flow"], image)


def detect_flow_folder(path: str | Path) -> str | None:
    """Which flow data set ``path`` holds: ``"sintel"``, ``"kitti_flow"``, ``"flying_chairs"``,
    ``"middlebury_flow"`` or ``None``."""
    path = Path(path)
    if not path.is_dir():
        return None
    for base in (path, path / "training"):
        if (base / "clean").is_dir() or (base / "final").is_dir():
            return "sintel"
    if (path / "image_2").is_dir() and (
        (path / "flow_occ").is_dir() or (path / "flow_noc").is_dir()
    ):
        return "kitti_flow"
    data = path / "data" if (path / "data").is_dir() else path
    if next(data.glob("*_flow.flo"), None) is not None:
        return "flying_chairs"
    if (path / "other-data").is_dir():
        return "middlebury_flow"
    return None


FLOW_READERS: dict[str, type[_FlowFolder]] = {
    "sintel": SintelDataset,
    "kitti_flow": KittiFlowDataset,
    "flying_chairs": FlyingChairsDataset,
    "middlebury_flow": MiddleburyFlowDataset,
}


def write_kitti_flow_folder(
    dataset: Dataset,
    out: str | Path,
    *,
    num_images: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a flow dataset (``world-flow``) in the KITTI flow 2015 layout, plus ``.flo`` files.

    ``image_2/NNNNNN_10.png`` and ``NNNNNN_11.png`` (8-bit RGB), ``flow_occ/NNNNNN_10.png`` (every
    pixel with ground truth), ``flow_noc/NNNNNN_10.png`` (only those visible in the second
    frame) and ``flo/NNNNNN_10.flo`` (full float precision). :class:`KittiFlowDataset` and other
    KITTI tools read it back. Returns ``out``.
    """
    out = Path(out)
    count = len(dataset) if num_images is None else min(num_images, len(dataset))
    for index in range(count):
        image, target = dataset[index]
        stem = f"{index:06d}"
        for suffix, picture in (("_10", image), ("_11", target["image_2"])):
            path = out / "image_2" / f"{stem}{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            array = (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(path)
        flow = target["flow"]
        known = target.get("flow_valid", torch.isfinite(flow).all(dim=0))
        visible = target.get("valid", known) & known
        write_kitti_flow(out / "flow_occ" / f"{stem}_10.png", flow, known)
        write_kitti_flow(out / "flow_noc" / f"{stem}_10.png", flow, visible)
        write_flo(out / "flo" / f"{stem}_10.flo", torch.where(known, flow, 0.0))
        if progress is not None:
            progress(index + 1, count)
    return out
