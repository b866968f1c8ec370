"""Single-object tracking data on disk: OTB-2013/2015, GOT-10k, LaSOT, a video with a box.

A sequence is ``(frames, target)``: ``frames`` a :class:`FrameList` (``len`` and indexing give
``(3, H, W)`` float RGB frames in ``[0, 1]``, read from disk when asked, so long sequences do not
sit in memory) and ``target`` with ``boxes (T, 4)`` float64 ``xyxy`` pixels (0-based, pixel
``j`` spans ``[j, j + 1)``), ``visible (T,)`` bool (false where the target is fully occluded,
out of view or not annotated), ``attributes`` (a tuple of OTB attribute names, when known) and
``name``. :class:`~structvision.evaluation.tracking.TrackingEvaluator` reads these.

Layouts (as the benchmarks ship them):

* **OTB** (one folder per sequence): ``img/0001.jpg ...`` and ``groundtruth_rect.txt``, one
  ``x, y, w, h`` per line, 1-based (MATLAB's), separated by commas, tabs or spaces (all three
  occur, sometimes in one file). Two-target sequences (``Jogging``, ``Skating2``) have
  ``groundtruth_rect.1.txt`` and ``.2.txt`` and become ``NAME.1`` and ``NAME.2``; an empty
  annotation file (``Human4``'s first) is skipped. Five sequences are annotated on a window of
  their frames (:data:`OTB_FRAME_WINDOWS`, from the benchmark's own configuration). An
  optional ``attributes.txt`` (names separated by commas or spaces) gives the attributes, as the
  ``world-video`` writer stores them.
* **GOT-10k** (one folder per sequence): ``00000001.jpg ...``, ``groundtruth.txt`` (``x, y, w,
  h`` per line, 0-based; only the first line in the test split), ``absence.label`` (1 = target
  absent) and ``cover.label`` (0 = fully covered .. 8).
* **LaSOT** (``CATEGORY/CATEGORY-N/``): ``img/00000001.jpg ...``, ``groundtruth.txt`` (``x, y, w,
  h``, 1-based), ``full_occlusion.txt`` and ``out_of_view.txt`` (one line of comma-separated
  0/1 flags).
* **A video file and a first box**: :func:`video_sequence`.

Every reader names the folder or file and what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "OTB_FRAME_WINDOWS",
    "TRACKING_READERS",
    "FrameList",
    "GOT10kDataset",
    "LaSOTDataset",
    "OTBDataset",
    "TrackingDataError",
    "detect_tracking_folder",
    "read_rect_file",
    "video_sequence",
    "write_otb_sequence",
]

#: Sequences annotated on a window of their frames: name -> (first, last) frame numbers, both
#: inclusive, as in the file names (OTB's sequence configuration).
OTB_FRAME_WINDOWS = {
    "David": (300, 770),
    "Football1": (1, 74),
    "Freeman3": (1, 460),
    "Freeman4": (1, 283),
    "Diving": (1, 215),
}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class TrackingDataError(ValueError):
    """A tracking sequence that is missing or malformed; the message names it."""


class FrameList(Sequence):
    """Frames read from their files on access: ``frames[t]`` is ``(3, H, W)`` float RGB."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return FrameList(self.paths[index])
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
        except Exception as error:  # PIL raises many types for corrupt files
            raise TrackingDataError(f"{path}: cannot read the frame ({error})") from None
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def read_rect_file(path: Path, *, one_based: bool) -> tuple[Tensor, Tensor]:
    """``x, y, w, h`` lines (any of ``,``, tab, space between numbers) -> ``(boxes (T, 4)
    xyxy 0-based float64, annotated (T,) bool)``. A line of NaNs or a box without area is not
    annotated (its row holds NaN)."""
    if not path.is_file():
        raise TrackingDataError(f"annotation file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        try:
            values = [float(field) for field in fields]
        except ValueError:
            raise TrackingDataError(
                f"{path}, line {number}: not numbers: {line.strip()!r}"
            ) from None
        if len(values) != 4:
            raise TrackingDataError(
                f"{path}, line {number}: {len(values)} numbers, expected x, y, w, h"
            )
        rows.append(values)
    boxes = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    annotated = torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    offset = 1.0 if one_based else 0.0
    xyxy = torch.stack(
        [
            boxes[:, 0] - offset,
            boxes[:, 1] - offset,
            boxes[:, 0] - offset + boxes[:, 2],
            boxes[:, 1] - offset + boxes[:, 3],
        ],
        dim=1,
    )
    return torch.where(annotated[:, None], xyxy, float("nan")), annotated


def _flags(path: Path, count: int) -> Tensor:
    """0/1 flags, comma- or line-separated, as a bool ``(count,)``."""
    if not path.is_file():
        return torch.zeros(count, dtype=torch.bool)
    fields = [f for f in re.split(r"[,\s]+", path.read_text().strip()) if f]
    if len(fields) != count:
        raise TrackingDataError(f"{path}: {len(fields)} flags for {count} frames")
    try:
        return torch.tensor([float(f) > 0 for f in fields], dtype=torch.bool)
    except ValueError:
        raise TrackingDataError(f"{path}: flags must be numbers") from None


def _frame_number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    if not digits:
        raise TrackingDataError(f"{path}: no frame number in the file name")
    return int(digits[-1])


def _frames(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise TrackingDataError(f"frame folder {folder} does not exist")
    frames = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_frame_number
    )
    if not frames:
        raise TrackingDataError(f"{folder} holds no frames (.jpg, .png)")
    return frames


class _SequenceFolder(Dataset):
    """Shared item assembly; subclasses fill ``self.sequences`` with dicts."""

    sequences: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[FrameList, dict[str, Any]]:
        sequence = self.sequences[index]
        target = {
            "boxes": sequence["boxes"],
            "visible": sequence["visible"],
            "attributes": tuple(sequence.get("attributes", ())),
            "name": sequence["name"],
        }
        return FrameList(sequence["frames"]), target

    @property
    def names(self) -> list[str]:
        return [sequence["name"] for sequence in self.sequences]


def _attributes(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    return tuple(a for a in re.split(r"[,\s]+", path.read_text().strip()) if a)


class OTBDataset(_SequenceFolder):
    """OTB-2013/2015 sequence folders under ``root`` (module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        folders = (
            sorted(p for p in self.root.iterdir() if (p / "img").is_dir())
            if self.root.is_dir()
            else []
        )
        if (self.root / "img").is_dir():
            folders = [self.root]
        if not folders:
            raise TrackingDataError(f"{self.root} holds no OTB sequence (a folder with img/)")
        self.sequences = []
        for folder in folders:
            frames = _frames(folder / "img")
            window = OTB_FRAME_WINDOWS.get(folder.name)
            if window is not None:
                frames = [p for p in frames if window[0] <= _frame_number(p) <= window[1]]
            files = sorted(folder.glob("groundtruth_rect*.txt"))
            files = [f for f in files if f.stat().st_size > 0]
            if not files:
                raise TrackingDataError(f"{folder} has no groundtruth_rect.txt")
            for file in files:
                boxes, annotated = read_rect_file(file, one_based=True)
                if len(boxes) != len(frames):
                    raise TrackingDataError(
                        f"{file}: {len(boxes)} boxes for the {len(frames)} frames of {folder / 'img'}"
                    )
                suffix = file.name.removeprefix("groundtruth_rect").removesuffix(".txt")
                self.sequences.append(
                    {
                        "name": folder.name + suffix,
                        "frames": frames,
                        "boxes": boxes,
                        "visible": annotated,
                        "attributes": _attributes(folder / "attributes.txt"),
                    }
                )


class GOT10kDataset(_SequenceFolder):
    """GOT-10k sequence folders under ``root`` (a split folder; module docstring). A test
    sequence, annotated on its first frame only, has ``visible`` false after it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        folders = (
            sorted(p for p in self.root.iterdir() if (p / "groundtruth.txt").is_file())
            if self.root.is_dir()
            else []
        )
        if not folders:
            raise TrackingDataError(
                f"{self.root} holds no GOT-10k sequence (a folder with groundtruth.txt)"
            )
        self.sequences = []
        for folder in folders:
            frames = _frames(folder)
            boxes, annotated = read_rect_file(folder / "groundtruth.txt", one_based=False)
            if len(boxes) == 1 and len(frames) > 1:  # the test split: first frame only
                boxes = torch.cat(
                    [boxes, torch.full((len(frames) - 1, 4), float("nan"), dtype=boxes.dtype)]
                )
                annotated = torch.cat([annotated, torch.zeros(len(frames) - 1, dtype=torch.bool)])
            if len(boxes) != len(frames):
                raise TrackingDataError(
                    f"{folder / 'groundtruth.txt'}: {len(boxes)} boxes for {len(frames)} frames"
                )
            absent = _flags(folder / "absence.label", len(frames))
            visible = annotated & ~absent
            cover = folder / "cover.label"
            if cover.is_file():
                visible &= _flags(cover, len(frames))
            self.sequences.append(
                {"name": folder.name, "frames": frames, "boxes": boxes, "visible": visible}
            )


class LaSOTDataset(_SequenceFolder):
    """LaSOT sequences under ``root`` (``CATEGORY/CATEGORY-N/``, or sequence folders directly)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        folders = sorted(
            p.parent for p in self.root.glob("**/groundtruth.txt") if (p.parent / "img").is_dir()
        )
        if not folders:
            raise TrackingDataError(
                f"{self.root} holds no LaSOT sequence (img/ and groundtruth.txt)"
            )
        self.sequences = []
        for folder in folders:
            frames = _frames(folder / "img")
            boxes, annotated = read_rect_file(folder / "groundtruth.txt", one_based=True)
            if len(boxes) != len(frames):
                raise TrackingDataError(
                    f"{folder / 'groundtruth.txt'}: {len(boxes)} boxes for {len(frames)} frames"
                )
            hidden = _flags(folder / "full_occlusion.txt", len(frames))
            hidden |= _flags(folder / "out_of_view.txt", len(frames))
            self.sequences.append(
                {
                    "name": folder.name,
                    "frames": frames,
                    "boxes": boxes,
                    "visible": annotated & ~hidden,
                }
            )


def detect_tracking_folder(path: str | Path) -> str | None:
    """Which tracking benchmark ``path`` holds: ``"otb"``, ``"lasot"``, ``"got10k"`` or None."""
    path = Path(path)
    if not path.is_dir():
        return None
    children = [path, *(p for p in path.iterdir() if p.is_dir())]
    if any((c / "img").is_dir() and any(c.glob("groundtruth_rect*.txt")) for c in children):
        return "otb"
    if any((g.parent / "img").is_dir() for g in path.glob("**/groundtruth.txt")):
        return "lasot"
    if any((c / "groundtruth.txt").is_file() for c in children):
        return "got10k"
    return None


TRACKING_READERS = {"otb": OTBDataset, "lasot": LaSOTDataset, "got10k": GOT10kDataset}


def video_sequence(path: str | Path, box: Sequence[float]) -> tuple[list[Tensor], dict[str, Any]]:
    """A video file's frames (read with OpenCV) and a target holding only the first box
    (``xyxy`` pixels): what ``structvision track`` follows."""
    from structvision.data.video import read_video_frames

    first = torch.as_tensor(box, dtype=torch.float64).flatten()
    if first.shape != (4,) or not (first[2] > first[0] and first[3] > first[1]):
        raise TrackingDataError(
            f"the first box must be x1, y1, x2, y2 with x2 > x1, y2 > y1; got {box!r}"
        )
    frames = [frame for _, frame in read_video_frames(Path(path))]
    boxes = torch.full((len(frames), 4), float("nan"), dtype=torch.float64)
    boxes[0] = first
    visible = torch.zeros(len(frames), dtype=torch.bool)
    visible[0] = True
    return frames, {"boxes": boxes, "visible": visible, "attributes": (), "name": Path(path).stem}


def write_otb_sequence(
    folder: str | Path,
    frames: Sequence[Tensor],
    boxes: Tensor,
    *,
    attributes: Sequence[str] = (),
    visible: Tensor | None = None,
) -> Path:
    """Write one sequence in the OTB layout: ``img/0001.jpg ...`` (JPEG, quality 95),
    ``groundtruth_rect.txt`` (``x,y,w,h`` 1-based; ``NaN,NaN,NaN,NaN`` where not ``visible``)
    and ``attributes.txt``. Returns the folder."""
    folder = Path(folder)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if len(boxes) != len(frames):
        raise ValueError(f"{len(boxes)} boxes for {len(frames)} frames")
    lines = []
    for index, (frame, box) in enumerate(zip(frames, boxes, strict=True), start=1):
        array = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(array).save(folder / "img" / f"{index:04d}.jpg", quality=95)
        shown = visible is None or bool(visible[index - 1])
        if shown and torch.isfinite(box).all():
            x1, y1, x2, y2 = box.tolist()
            lines.append(f"{x1 + 1:.2f},{y1 + 1:.2f},{x2 - x1:.2f},{y2 - y1:.2f}")
        else:
            lines.append("NaN,NaN,NaN,NaN")
    (folder / "groundtruth_rect.txt").write_text("\n".join(lines) + "\n")
    (folder / "attributes.txt").write_text(",".join(attributes) + "\n")
    return folder
