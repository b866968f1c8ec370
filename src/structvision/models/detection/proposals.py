"""Selective Search region proposals, an on-disk proposal cache, and proposal recall.

Selective Search (Uijlings et al. 2013) hierarchically merges a graph-based over-segmentation
by colour, texture, size and fill similarity and proposes the bounding box of every region it
forms. This module runs OpenCV's implementation (``cv2.ximgproc``, opencv-contrib) and returns
``(N, 4)`` float32 ``xyxy`` boxes in absolute pixels of the *input* image (a pixel ``(x, y)``
covers ``[x, x + 1) x [y, y + 1)``, so a region of columns ``0 .. 9`` has ``x1 = 0, x2 = 10``).

Speed (one CPU core, OpenCV 5.0): a 500 x 375 image takes about 0.7 s in ``"fast"`` mode
(~800 boxes) and about 2.5 s in ``"quality"`` mode (~1,700 boxes); time grows roughly linearly
with the number of pixels, hence ``resize_to``. Fast R-CNN-style training therefore computes
proposals once and keeps them in a :class:`ProposalCache`.

OpenCV ranks regions pseudo-randomly (each region's hierarchy level times a C ``rand()``
draw, as in the paper), so its order changes between calls. :func:`selective_search` seeds the
C library's generator (``srand``) before each run, which makes the order reproducible; the
seeding is process-wide and guarded by a lock.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from structvision.structures import box_iou

__all__ = [
    "ProposalCache",
    "plot_recall",
    "proposal_recall",
    "recall_curve",
    "selective_search",
]

SEARCH_MODES = ("fast", "quality")

_SEARCH_LOCK = threading.Lock()


# --------------------------------------------------------------------------- Selective Search


def selective_search(
    image: Tensor | np.ndarray,
    *,
    mode: str = "fast",
    max_proposals: int = 2000,
    min_size: float = 4,
    resize_to: int | None = 500,
    seed: int | None = 0,
) -> Tensor:
    """Selective Search proposals for one image, in OpenCV's ranking order.

    Args:
        image: ``(3, H, W)`` float tensor in ``[0, 1]`` (or uint8 tensor in ``[0, 255]``), RGB;
            or an ``(H, W, 3)`` uint8 numpy array, RGB.
        mode: ``"fast"`` (OpenCV's ``switchToSelectiveSearchFast``) or ``"quality"``
            (``switchToSelectiveSearchQuality``, more strategies, ~3x slower, ~2x more boxes).
        max_proposals: keep at most this many boxes (the best ranked).
        min_size: drop boxes narrower or shorter than this, in original-image pixels.
        resize_to: if the image's longer side exceeds this many pixels, search on a copy
            downscaled to it (boxes are mapped back to the original image); ``None`` never
            resizes.
        seed: seed of the C library's ``rand()`` that OpenCV ranks with; ``None`` leaves it
            alone (the order then varies between calls).

    Returns:
        ``(N, 4)`` float32 ``xyxy`` boxes in original-image pixels, ``N <= max_proposals``,
        clipped to the image, with integer coordinates and no duplicates.
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
    if max_proposals < 0:
        raise ValueError(f"max_proposals must be >= 0, got {max_proposals}")
    if resize_to is not None and resize_to <= 0:
        raise ValueError(f"resize_to must be a positive int or None, got {resize_to}")
    import cv2  # deferred: importing OpenCV is slow and only this function needs it

    rgb = image_to_uint8_hwc(image)  # (H, W, 3) uint8
    height, width = rgb.shape[:2]
    search_rgb = _downscale(rgb, resize_to)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(search_rgb[:, :, ::-1]))  # OpenCV wants BGR
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    with _SEARCH_LOCK:
        if seed is not None:
            _seed_c_rand(seed)
        rects_xywh = search.process()  # (N, 4) int32 (x, y, w, h) in the searched image
    scale_xy = (width / search_rgb.shape[1], height / search_rgb.shape[0])
    boxes = _rects_to_boxes(np.asarray(rects_xywh).reshape(-1, 4), scale_xy, (height, width))
    boxes = _drop_small_and_duplicates(boxes, min_size)
    return torch.from_numpy(boxes[:max_proposals]).to(torch.float32)  # (N, 4)


def image_to_uint8_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float ``[0, 1]`` / uint8 tensor or ``(H, W, 3)`` uint8 array -> uint8 HWC.

    Floats are rounded to the nearest of the 256 levels (``round(255 * x)``, clamped).
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image as a numpy array must be (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )
        return np.ascontiguousarray(image)
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image must have shape (3, H, W), got {tuple(shape)}")
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = (image.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())  # (H, W, 3)


def _downscale(rgb: np.ndarray, resize_to: int | None) -> np.ndarray:
    """Area-downscale ``(H, W, 3)`` so that its longer side is at most ``resize_to``."""
    import cv2

    height, width = rgb.shape[:2]
    if resize_to is None or max(height, width) <= resize_to:
        return rgb
    factor = resize_to / max(height, width)
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))  # (w, h)
    return cv2.resize(rgb, new_size, interpolation=cv2.INTER_AREA)


def _rects_to_boxes(
    rects_xywh: np.ndarray, scale_xy: tuple[float, float], image_size: tuple[int, int]
) -> np.ndarray:
    """``(N, 4)`` ``(x, y, w, h)`` -> ``(N, 4)`` float64 ``xyxy`` scaled, rounded and clipped."""
    rects = rects_xywh.astype(np.float64)
    boxes = np.concatenate((rects[:, :2], rects[:, :2] + rects[:, 2:]), axis=1)  # (N, 4)
    boxes *= np.array([scale_xy[0], scale_xy[1], scale_xy[0], scale_xy[1]])
    boxes = np.round(boxes)
    height, width = image_size
    return np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float64))


def _drop_small_and_duplicates(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Keep boxes at least ``min_size`` wide and high, first occurrence of each, in order."""
    sizes = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    boxes = boxes[(sizes >= min_size).all(axis=1)]
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    _, first_idxs = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first_idxs)]


def _seed_c_rand(seed: int) -> None:
    """Seed the C library's ``rand()`` (the generator OpenCV's Selective Search ranks with)."""
    for load in (lambda: ctypes.CDLL(None), lambda: ctypes.cdll.msvcrt):
        try:
            libc = load()
            libc.srand(ctypes.c_uint(seed))
            return
        except (OSError, AttributeError):
            continue
    warnings.warn(
        "could not seed the C library's rand(); Selective Search order will vary",
        RuntimeWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------- proposal cache


class ProposalCache:
    """Proposal boxes stored on disk, one ``.safetensors`` file per image.

    Files live in ``cache_dir / <hash of method_settings>``, so changing any setting (mode,
    ``max_proposals``, ...) uses a fresh folder; ``settings.json`` in that folder records the
    settings. Each file holds the ``(N, 4)`` float32 boxes and, in its metadata, a BLAKE2b hash
    of the image's uint8 pixels: a different image under the same key is recomputed. Files are
    written to a temporary name and renamed, so a killed process never leaves half a file;
    unreadable files are recomputed with a warning. No pickle is involved.

    Args:
        cache_dir: root folder of the cache (created when needed).
        method_settings: everything that determines the proposals (JSON-serialisable values;
            others are hashed by their ``str``).
    """

    def __init__(self, cache_dir: str | os.PathLike, *, method_settings: Mapping) -> None:
        settings_json = json.dumps(dict(method_settings), sort_keys=True, default=str)
        settings_hash = hashlib.blake2b(settings_json.encode(), digest_size=8).hexdigest()
        self.settings_json = settings_json
        self.folder = Path(cache_dir) / settings_hash

    def path_for(self, key: str) -> Path:
        """File of ``key``: a readable prefix of the key plus a hash of it (no collisions)."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key))[:80]
        key_hash = hashlib.blake2b(str(key).encode(), digest_size=8).hexdigest()
        return self.folder / f"{readable}-{key_hash}.safetensors"

    def get_or_compute(
        self, image: Tensor | np.ndarray, key: str, compute: Callable[[], Tensor]
    ) -> Tensor:
        """Cached boxes of ``image`` under ``key``, or ``compute()``'s result (then stored).

        Args:
            image: the image the proposals belong to (as for :func:`selective_search`); only
                its content hash is used.
            key: a name unique to the image within the dataset (file name, image id).
            compute: returns ``(N, 4)`` ``xyxy`` boxes; called on a miss.

        Returns:
            ``(N, 4)`` float32 CPU boxes; a hit returns exactly what was stored.
        """
        image_hash = hashlib.blake2b(image_to_uint8_hwc(image).tobytes(), digest_size=16)
        image_hash = image_hash.hexdigest()
        path = self.path_for(key)
        cached = self._load(path, image_hash)
        if cached is not None:
            return cached
        boxes = compute()
        if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
            shape = getattr(boxes, "shape", type(boxes).__name__)
            raise ValueError(f"compute() for key {key!r} must return (N, 4) boxes, got {shape}")
        boxes = boxes.detach().to("cpu", torch.float32).contiguous()
        self._store(path, boxes, image_hash)
        return boxes

    def _load(self, path: Path, image_hash: str) -> Tensor | None:
        """Stored boxes, or ``None`` when missing, stale (other image) or unreadable."""
        if not path.exists():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as stored:
                metadata = stored.metadata() or {}
                if metadata.get("image_hash") != image_hash:
                    return None
                boxes = stored.get_tensor("boxes")
        except Exception as error:  # safetensors raises its own error types for corrupt files
            warnings.warn(
                f"proposal cache file {path} is unreadable ({error}); recomputing",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype != torch.float32:
            warnings.warn(
                f"proposal cache file {path} holds boxes of shape {tuple(boxes.shape)} "
                f"{boxes.dtype}, expected (N, 4) float32; recomputing",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return boxes

    def _store(self, path: Path, boxes: Tensor, image_hash: str) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        settings_path = self.folder / "settings.json"
        if not settings_path.exists():
            _atomic_write_bytes(settings_path, self.settings_json.encode())
        metadata = {"image_hash": image_hash, "format": "xyxy"}
        fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file({"boxes": boxes}, tmp_name, metadata=metadata)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- recall


def recall_curve(
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    *,
    iou_thresholds: Sequence[float] = (0.5, 0.7),
    num_proposals: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Proposal recall as a function of the number of top-ranked proposals per image.

    A ground-truth box is recalled at ``(t, n)`` when its best IoU with the first ``n``
    proposals of its image is ``>= t``; recall is the fraction of all ground-truth boxes of the
    dataset that are recalled (images with fewer than ``n`` proposals use all of theirs).

    Args:
        proposals: one ``(P_i, 4)`` ``xyxy`` tensor per image, best first.
        gt_boxes: one ``(G_i, 4)`` ``xyxy`` tensor per image, same pixel coordinates.
        iou_thresholds: IoU thresholds ``t``.
        num_proposals: the ``n`` to evaluate, increasing; default ``1, 2, 5, 10, 20, 50, ...``
            up to the largest ``P_i`` (which ends the list).

    Returns:
        ``{"num_proposals": (P,) int64, "iou_thresholds": (T,) float64, "recall": (T, P)
        float64, "num_gt": () int64}``; recall is NaN when there are no ground-truth boxes.
    """
    if len(proposals) != len(gt_boxes):
        raise ValueError(
            f"proposals and gt_boxes must have one tensor per image, got {len(proposals)} "
            f"and {len(gt_boxes)}"
        )
    best_ious = [
        _best_iou_by_rank(p, g, i) for i, (p, g) in enumerate(zip(proposals, gt_boxes, strict=True))
    ]
    max_rank = max((ious.shape[1] for ious in best_ious), default=0)
    if num_proposals is None:
        num_proposals = _one_two_five_steps(max(max_rank, 1))
    ns = np.asarray(num_proposals, dtype=np.int64)
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    if ns.ndim != 1 or (ns <= 0).any():
        raise ValueError(f"num_proposals must be positive ints, got {list(num_proposals)}")
    hits = np.zeros((len(thresholds), len(ns)), dtype=np.int64)
    num_gt = 0
    for ious in best_ious:  # (G_i, P_i): best IoU of each GT with the top 1..P_i proposals
        num_gt += ious.shape[0]
        if ious.size == 0:
            continue  # no GT boxes, or no proposals (nothing recalled)
        at_n = ious[:, np.minimum(ns, ious.shape[1]) - 1]  # (G_i, P)
        hits += (at_n[None, :, :] >= thresholds[:, None, None]).sum(axis=1)
    recall = hits / num_gt if num_gt > 0 else np.full(hits.shape, np.nan)
    return {
        "num_proposals": ns,
        "iou_thresholds": thresholds,
        "recall": recall.astype(np.float64),
        "num_gt": np.asarray(num_gt, dtype=np.int64),
    }


def proposal_recall(
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    *,
    iou_thresholds: Sequence[float] = (0.5, 0.7),
    num_proposals: Sequence[int] = (100, 300, 1000),
) -> dict[str, float]:
    """Dataset-level proposal recall at a few ``(IoU threshold, proposals per image)`` points.

    See :func:`recall_curve` for the definition.

    Returns:
        ``{"recall@0.5/100": ..., "recall@0.7/100": ..., ...}`` (threshold formatted with
        ``:g``), values in ``[0, 1]``, NaN when there are no ground-truth boxes.
    """
    curve = recall_curve(
        proposals, gt_boxes, iou_thresholds=iou_thresholds, num_proposals=num_proposals
    )
    metrics = {}
    for t_idx, threshold in enumerate(curve["iou_thresholds"]):
        for n_idx, num in enumerate(curve["num_proposals"]):
            metrics[f"recall@{threshold:g}/{num}"] = float(curve["recall"][t_idx, n_idx])
    return metrics


def plot_recall(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike) -> Path:
    """Plot recall against proposals per image (log axis), one line per method and threshold.

    Args:
        curves: ``{method name: recall_curve(...) result}``.
        path: image file to write (format from the suffix, e.g. ``.png``).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    line_styles = ("-", "--", ":", "-.")
    for method_idx, (name, curve) in enumerate(curves.items()):
        colour = f"C{method_idx % 10}"
        for t_idx, threshold in enumerate(curve["iou_thresholds"]):
            axes.plot(
                curve["num_proposals"],
                curve["recall"][t_idx],
                color=colour,
                linestyle=line_styles[t_idx % len(line_styles)],
                label=f"{name}, IoU >= {threshold:g}",
            )
    axes.set_xscale("log")
    axes.set_xlabel("proposals per image")
    axes.set_ylabel("recall")
    axes.set_ylim(0.0, 1.0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _best_iou_by_rank(proposals: Tensor, gt_boxes: Tensor, image_idx: int) -> np.ndarray:
    """``(G, P)`` array: entry ``[g, r]`` is GT ``g``'s best IoU with proposals ``0 .. r``."""
    for name, boxes in (("proposals", proposals), ("gt_boxes", gt_boxes)):
        if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
            shape = getattr(boxes, "shape", type(boxes).__name__)
            raise ValueError(f"{name}[{image_idx}] must have shape (N, 4), got {tuple(shape)}")
    if gt_boxes.shape[0] == 0 or proposals.shape[0] == 0:
        return np.zeros((gt_boxes.shape[0], proposals.shape[0]), dtype=np.float64)
    ious = box_iou(gt_boxes.double(), proposals.to(gt_boxes.device).double())  # (G, P)
    return torch.cummax(ious, dim=1).values.cpu().numpy()


def _one_two_five_steps(max_value: int) -> list[int]:
    """``1, 2, 5, 10, 20, 50, ...`` below ``max_value``, then ``max_value`` itself."""
    steps = []
    decade = 1
    while decade <= max_value:
        steps += [m * decade for m in (1, 2, 5) if m * decade < max_value]
        decade *= 10
    return [*steps, max_value]
