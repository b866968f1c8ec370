"""Video files as frames (OpenCV's decoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["VIDEO_SUFFIXES", "read_video_frames"]

#: File suffixes read as videos (every frame, in order) by ``predict`` and ``track``.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def read_video_frames(path: Path) -> list[tuple[Path, torch.Tensor]]:
    """Every frame of a video file as ``(Path("<stem>_00000"), (3, H, W) float RGB)``, in order.

    Raises:
        ValueError: the file cannot be decoded or holds no frame.
    """
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while capture.isOpened():
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)
            frames.append((path.with_name(f"{path.stem}_{len(frames):05d}"), rgb.float() / 255))
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"video {path}: cannot decode any frame")
    return frames
