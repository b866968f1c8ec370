"""Video files as frames (OpenCV's decoder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = ["VIDEO_SUFFIXES", "check_video", "iter_video_frames", "read_video_frames"]

#: File suffixes read as videos (every frame, in order) by ``predict`` and ``track``.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def iter_video_frames(path: Path, *, every: int = 1) -> Iterator[tuple[Path, torch.Tensor]]:
    """Every ``every``-th frame of a video file (the first, then every ``every``-th after it)
    as ``(Path("<stem>_<frame index>"), (3, H, W) float RGB)``, in order, decoded as they are
    asked for (a long video is never held in memory).

    Raises:
        ValueError: the file cannot be decoded or holds no frame.
    """
    import cv2

    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    capture = cv2.VideoCapture(str(path))
    index, given = 0, 0
    try:
        while capture.isOpened():
            ok = capture.grab()  # decoding only the frames that are kept
            if not ok:
                break
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if not ok:
                    break
                rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)
                given += 1
                yield path.with_name(f"{path.stem}_{index:05d}"), rgb.float() / 255
            index += 1
    finally:
        capture.release()
    if not given:
        raise ValueError(f"video {path}: cannot decode any frame")


def read_video_frames(path: Path, *, every: int = 1) -> list[tuple[Path, torch.Tensor]]:
    """:func:`iter_video_frames` as a list."""
    return list(iter_video_frames(path, every=every))


def check_video(path: Path, *, every: int = 1) -> int:
    """Check that ``path`` decodes (its first frame) and return about how many frames
    :func:`iter_video_frames` will give (from the container's frame count, which may be off).

    Raises:
        ValueError: the file cannot be decoded.
    """
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        ok, _ = capture.read() if capture.isOpened() else (False, None)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
    finally:
        capture.release()
    if not ok:
        raise ValueError(f"video {path}: cannot decode any frame")
    return max(1, -(-count // every))
