"""Classical depth baselines: OpenCV semi-global block matching, and a per-pixel mean depth.

* :class:`SGBMStereo` wraps ``cv2.StereoSGBM`` (Hirschmüller's semi-global matching) on a
  rectified stereo pair. OpenCV returns a fixed-point disparity (``16 x`` pixels, ``int16``);
  pixels it could not match hold ``(min_disparity - 1) * 16`` and are reported invalid. Depth is
  ``focal * baseline / disparity`` (``focal`` in pixels, ``baseline`` in metres) where the
  disparity is valid and positive, and 0 elsewhere.
* :class:`MeanDepthBaseline` predicts, for every image, the training set's per-pixel mean of
  the valid ground-truth depths (a "no image information" floor for the metrics).

Both produce per-image dicts with a ``depth (H, W)`` entry, the format
:class:`~structvision.evaluation.depth.DepthEvaluator` reads. A stereo matcher leaves holes;
to evaluate it on the pixels it fills, build the evaluator with ``pred_valid_key="valid"``:
the prediction's ``valid`` mask is then AND-ed into the evaluated pixels and the fraction of
ground-truth pixels filled is reported as ``density``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from structvision.models.depth.monodepth import KITTI_BASELINE, KITTI_FOCAL_FRACTION

__all__ = ["MeanDepthBaseline", "SGBMStereo"]

SGBMMode = Literal["sgbm", "hh", "3way"]

_SGBM_MODES = {
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "hh": cv2.STEREO_SGBM_MODE_HH,
    "3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
}

ImageLike = Tensor | np.ndarray


def _to_uint8_hwc(image: ImageLike) -> np.ndarray:
    """``(3, H, W)`` float tensor in ``[0, 1]`` (or ``(H, W, 3)`` / ``(H, W)`` uint8 array)
    -> contiguous ``(H, W, 3)`` or ``(H, W)`` uint8 array."""
    if isinstance(image, Tensor):
        image = image.detach().cpu()
        if image.dim() == 3:
            image = image.permute(1, 2, 0)  # (H, W, C)
        elif image.dim() != 2:
            raise ValueError(f"image tensor must be (3, H, W) or (H, W), got {tuple(image.shape)}")
        if image.dtype != torch.uint8:
            image = (image.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
        array = image.numpy()
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 (H, W, 3) or (H, W), got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"image must have 1 or 3 channels, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _scalar(value: Any) -> float:
    if isinstance(value, Tensor):
        return float(value.reshape(-1)[0])
    return float(value)


class SGBMStereo:
    """OpenCV semi-global block matching on a rectified pair (left image as reference).

    Args:
        num_disparities: disparity search range in pixels, rounded up to a multiple of 16.
        block_size: odd matching block size.
        p1: penalty for disparity changes of 1 between neighbours; ``None`` =
            ``8 * channels * block_size**2`` (channels = 3, or 1 with ``grayscale``).
        p2: penalty for larger changes; ``None`` = ``32 * channels * block_size**2``.
        uniqueness_ratio: margin (percent) by which the best cost must beat the second best.
        speckle_window: maximum size of the speckle regions that are filtered out (0 = off).
        speckle_range: maximum disparity variation inside a connected component.
        disp12_max_diff: maximum left-right check difference in pixels (< 0 = off).
        mode: ``"sgbm"`` (5 directions), ``"hh"`` (full 8-direction variant) or ``"3way"``.
        min_disparity: smallest disparity searched.
        grayscale: match on the grey image instead of the colour one.
        focal: focal length in pixels for :meth:`predict` when a target has none;
            ``None`` = ``0.58 * W`` (KITTI, as in :class:`Monodepth`).
        baseline: stereo baseline in metres for :meth:`predict` when a target has none.
    """

    def __init__(
        self,
        *,
        num_disparities: int = 64,
        block_size: int = 5,
        p1: int | None = None,
        p2: int | None = None,
        uniqueness_ratio: int = 10,
        speckle_window: int = 100,
        speckle_range: int = 2,
        disp12_max_diff: int = 1,
        mode: SGBMMode = "sgbm",
        min_disparity: int = 0,
        grayscale: bool = False,
        focal: float | None = None,
        baseline: float = KITTI_BASELINE,
    ) -> None:
        if num_disparities < 1:
            raise ValueError(f"num_disparities must be positive, got {num_disparities!r}")
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"block_size must be a positive odd number, got {block_size!r}")
        if mode not in _SGBM_MODES:
            raise ValueError(f"mode must be one of {sorted(_SGBM_MODES)}, got {mode!r}")
        if focal is not None and not focal > 0:
            raise ValueError(f"focal must be positive (pixels) or None, got {focal!r}")
        if not baseline > 0:
            raise ValueError(f"baseline must be positive (metres), got {baseline!r}")
        channels = 1 if grayscale else 3
        self.num_disparities = -(-num_disparities // 16) * 16
        self.block_size = block_size
        self.p1 = 8 * channels * block_size**2 if p1 is None else int(p1)
        self.p2 = 32 * channels * block_size**2 if p2 is None else int(p2)
        self.uniqueness_ratio = uniqueness_ratio
        self.speckle_window = speckle_window
        self.speckle_range = speckle_range
        self.disp12_max_diff = disp12_max_diff
        self.mode = mode
        self.min_disparity = min_disparity
        self.grayscale = grayscale
        self.focal = None if focal is None else float(focal)
        self.baseline = float(baseline)
        self.matcher = cv2.StereoSGBM_create(
            minDisparity=min_disparity,
            numDisparities=self.num_disparities,
            blockSize=block_size,
            P1=self.p1,
            P2=self.p2,
            disp12MaxDiff=disp12_max_diff,
            uniquenessRatio=uniqueness_ratio,
            speckleWindowSize=speckle_window,
            speckleRange=speckle_range,
            mode=_SGBM_MODES[mode],
        )

    def _prepare(self, image: ImageLike) -> np.ndarray:
        array = _to_uint8_hwc(image)
        if self.grayscale and array.ndim == 3:
            array = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
        elif not self.grayscale and array.ndim == 2:
            array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
        return array

    def __call__(self, left: ImageLike, right: ImageLike) -> tuple[Tensor, Tensor]:
        """Disparity of the left image.

        Args:
            left: ``(3, H, W)`` float tensor in ``[0, 1]`` or ``(H, W, 3)`` uint8 array.
            right: the right image, same format and size.

        Returns:
            ``disparity (H, W)`` float32 pixels (0 where invalid) and ``valid (H, W)`` bool.
        """
        left_np, right_np = self._prepare(left), self._prepare(right)
        if left_np.shape != right_np.shape:
            raise ValueError(
                f"left and right must have the same size, got {left_np.shape} and {right_np.shape}"
            )
        raw = self.matcher.compute(left_np, right_np)  # (H, W) int16, disparity * 16
        valid = raw >= self.min_disparity * 16
        disparity = np.where(valid, raw.astype(np.float32) / 16.0, np.float32(0.0))
        return torch.from_numpy(disparity.astype(np.float32)), torch.from_numpy(valid)

    def predict_depth(
        self, left: ImageLike, right: ImageLike, focal: float, baseline: float
    ) -> tuple[Tensor, Tensor]:
        """``depth (H, W)`` float32 metres (``focal * baseline / disparity``, 0 where invalid)
        and ``valid (H, W)`` bool (matched with a positive disparity)."""
        _, depth, valid = self._disparity_depth(left, right, focal, baseline)
        return depth, valid

    def _disparity_depth(
        self, left: ImageLike, right: ImageLike, focal: float, baseline: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        disparity, matched = self(left, right)
        valid = matched & (disparity > 0)
        depth = torch.zeros_like(disparity)
        depth[valid] = float(focal) * float(baseline) / disparity[valid]
        return disparity, depth, valid

    def predict(
        self, images: Tensor | Sequence[ImageLike], targets: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Tensor]]:
        """Per-image ``{"disparity", "depth", "valid"}`` (each ``(H, W)``; depth 0 where
        invalid) for ``images`` ``(B, 3, H, W)`` left images and ``targets[i]["image_right"]``;
        ``targets[i]["focal"]`` (pixels) and ``["baseline"]`` (metres) default to the
        matcher's ``focal`` / ``baseline``."""
        if len(images) != len(targets):
            raise ValueError(f"predict: got {len(images)} images and {len(targets)} targets")
        results = []
        for left, target in zip(images, targets, strict=True):
            if "image_right" not in target:
                raise ValueError(f"target is missing 'image_right' (has {sorted(target)})")
            width = left.shape[-1] if isinstance(left, Tensor) else np.asarray(left).shape[1]
            default_focal = self.focal if self.focal is not None else KITTI_FOCAL_FRACTION * width
            focal = _scalar(target.get("focal", default_focal))
            baseline = _scalar(target.get("baseline", self.baseline))
            disparity, depth, valid = self._disparity_depth(
                left, target["image_right"], focal, baseline
            )
            results.append({"disparity": disparity, "depth": depth, "valid": valid})
        return results


def _depth_and_valid(item: Any) -> tuple[Tensor, Tensor | None]:
    """One ``fit`` item -> ``(depth (H, W), valid (H, W) or None)``."""
    if isinstance(item, Mapping):
        return torch.as_tensor(item["depth"]), item.get("valid")
    if isinstance(item, tuple | list) and len(item) == 2:
        first, second = item
        if isinstance(second, Mapping):  # an (image, target) dataset sample
            return torch.as_tensor(second["depth"]), second.get("valid")
        return torch.as_tensor(first), second
    return torch.as_tensor(item), None


class MeanDepthBaseline:
    """Predict the per-pixel mean of the valid training depths, whatever the image.

    Pixels that were never valid get the global mean of all valid depths.

    Attributes:
        depth_sum: ``(H, W)`` float64 sum of the valid depths seen (``None`` before ``fit``).
        count: ``(H, W)`` int64 number of valid depths seen per pixel.
        mean_depth: ``(H, W)`` float32 prediction (``None`` before ``fit``).
    """

    def __init__(self) -> None:
        self.depth_sum: Tensor | None = None
        self.count: Tensor | None = None
        self.mean_depth: Tensor | None = None

    def fit(self, data: Iterable[Any]) -> MeanDepthBaseline:
        """Accumulate depth maps (call again to add more).

        Args:
            data: an iterable of ``(H, W)`` depth tensors (valid = finite and > 0),
                ``(depth, valid)`` pairs, dicts with ``"depth"`` and optional ``"valid"``, or
                ``(image, target)`` dataset samples whose target holds them. All maps must have
                the same size; a ``valid`` of ``None`` means finite and > 0.

        Returns:
            ``self``.
        """
        for item in data:
            depth, valid = _depth_and_valid(item)
            depth = depth.detach().cpu().double()
            if depth.dim() == 3 and depth.shape[0] == 1:
                depth = depth[0]
            if depth.dim() != 2:
                raise ValueError(f"depth maps must be (H, W), got {tuple(depth.shape)}")
            usable = torch.isfinite(depth) & (depth > 0)
            if valid is not None:
                valid = torch.as_tensor(valid).detach().cpu().bool().reshape(depth.shape)
                usable &= valid
            if self.depth_sum is None:
                self.depth_sum = torch.zeros_like(depth)
                self.count = torch.zeros(depth.shape, dtype=torch.int64)
            if depth.shape != self.depth_sum.shape:
                raise ValueError(
                    f"all depth maps must have the size {tuple(self.depth_sum.shape)}, "
                    f"got {tuple(depth.shape)}"
                )
            self.depth_sum += torch.where(usable, depth, torch.zeros_like(depth))
            self.count += usable.long()
        if self.depth_sum is None:
            raise ValueError("fit: no depth maps given")
        self._update_mean()
        return self

    def _update_mean(self) -> None:
        assert self.depth_sum is not None and self.count is not None
        total = int(self.count.sum())
        if total == 0:
            raise ValueError("fit: no valid depth pixel in the data")
        global_mean = float(self.depth_sum.sum()) / total
        mean = torch.full_like(self.depth_sum, global_mean)
        seen = self.count > 0
        mean[seen] = self.depth_sum[seen] / self.count[seen].double()
        self.mean_depth = mean.float()

    def predict(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """``[{"depth": (H, W)}]`` per image of ``images`` (``(B, 3, H, W)`` or a list of
        ``(3, H, W)``); the mean map is resized bilinearly when an image has another size."""
        if self.mean_depth is None:
            raise RuntimeError("MeanDepthBaseline.predict called before fit")
        results = []
        for image in images:
            size = tuple(image.shape[-2:])
            depth = self.mean_depth
            if size != tuple(depth.shape):
                depth = F.interpolate(
                    depth[None, None], size=size, mode="bilinear", align_corners=False
                )[0, 0]
            results.append({"depth": depth.clone()})
        return results

    def to_dict(self) -> dict[str, Tensor]:
        """``{"depth_sum", "count"}``: everything needed to restore (and keep fitting)."""
        if self.depth_sum is None or self.count is None:
            raise RuntimeError("MeanDepthBaseline.to_dict called before fit")
        return {"depth_sum": self.depth_sum.clone(), "count": self.count.clone()}

    @classmethod
    def from_dict(cls, state: Mapping[str, Tensor]) -> MeanDepthBaseline:
        """Rebuild a fitted baseline from :meth:`to_dict`'s output."""
        baseline = cls()
        baseline.depth_sum = torch.as_tensor(state["depth_sum"]).double().clone()
        baseline.count = torch.as_tensor(state["count"]).long().clone()
        baseline._update_mean()
        return baseline
