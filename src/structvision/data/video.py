"""Video files as frames (OpenCV's decoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["VIDEO_SUFFIXES", "read_video_frames"]

#: File suffixes read as videos (every frame, in order) by ``predict`` and ``track``.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def read_video_frames(path: Path, *, every: int = 1) -> list[tuple[Path, torch.Tensor]]:
    """Every ``every``-th frame of a video file (the first, then every ``every``-th after it)
    as ``(Path("<stem>_<frame index>"), (3, H, W) float RGB)``, in order.

    Raises:
        ValueError: the file cannot be decoded or holds no frame.
    """
    import cv2

    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
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
                frames.append((path.with_name(f"{path.stem}_{index:05d}"), rgb.float() / 255))
            index += 1
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"video {path}: cannot decode any frame")
    return frames
