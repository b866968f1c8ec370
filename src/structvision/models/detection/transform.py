"""Input pipeline of the R-CNN detectors: normalise, resize, pad and batch; undo the resize.

:class:`DetectionTransform` reproduces torchvision's ``GeneralizedRCNNTransform`` output for
output (same batched tensor, same resized targets, same random choice of the training size),
because converted torchvision weights must give equal detections. The torchvision behaviours
that change outputs and are therefore kept on purpose:

* The resize factor is ``min(min_size / min(h, w), max_size / max(h, w))`` computed in Python
  floats, and the image is resized with ``interpolate(scale_factor=..., recompute_scale_factor=
  True)``: the new size is ``floor(h * factor)``, ``floor(w * factor)`` and the bilinear sampling
  then uses the recomputed ratio ``new / old`` per axis (not ``factor``).
* Boxes and keypoints are rescaled by ``float32(new) / float32(old)`` per axis (height ratio for
  ``y``, width ratio for ``x``), not by the resize factor.
* Masks are resized with nearest-neighbour interpolation of their float copy and cast back to
  uint8.
* In training the size is drawn as ``min_size[int(U[0, len(min_size)))]`` with ``U`` from
  ``torch.empty(1).uniform_`` (one draw of torch's default generator per image, even when
  ``min_size`` has one value); evaluation uses ``min_size[-1]``.
* ``fixed_size`` is ``(width, height)``, torchvision's order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.detection.image_batch import ImageBatch

__all__ = ["DetectionTransform", "resize_boxes", "resize_keypoints"]


def _resize_ratios(
    *, original_size: Sequence[int], new_size: Sequence[int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(ratio_h, ratio_w)`` as float32 scalars ``float32(new) / float32(old)``."""
    ratio_h, ratio_w = (
        torch.tensor(int(new), dtype=torch.float32, device=device)
        / torch.tensor(int(old), dtype=torch.float32, device=device)
        for new, old in zip(new_size, original_size, strict=True)
    )
    return ratio_h, ratio_w


def resize_boxes(boxes: Tensor, *, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Rescale ``xyxy`` boxes from an image of ``original_size`` to one of ``new_size``.

    Args:
        boxes: ``(N, 4)`` ``xyxy`` boxes in pixels of the original image.
        original_size: ``(h, w)`` of the image the boxes refer to.
        new_size: ``(h, w)`` of the resized image.

    Returns:
        ``(N, 4)`` boxes in pixels of the resized image (a new tensor).
    """
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = getattr(boxes, "shape", type(boxes).__name__)
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(shape)}")
    ratio_h, ratio_w = _resize_ratios(
        original_size=original_size, new_size=new_size, device=boxes.device
    )
    x1, y1, x2, y2 = boxes.unbind(1)  # each (N,)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def resize_keypoints(
    keypoints: Tensor, *, original_size: Sequence[int], new_size: Sequence[int]
) -> Tensor:
    """Rescale keypoints ``(x, y, visibility)`` from ``original_size`` to ``new_size``.

    Args:
        keypoints: ``(N, K, 3)`` keypoints in pixels of the original image.
        original_size: ``(h, w)`` of the image the keypoints refer to.
        new_size: ``(h, w)`` of the resized image.

    Returns:
        ``(N, K, 3)`` keypoints; ``x`` and ``y`` rescaled, visibility unchanged (a new tensor).
    """
    if not isinstance(keypoints, Tensor) or keypoints.ndim != 3 or keypoints.shape[2] < 2:
        shape = getattr(keypoints, "shape", type(keypoints).__name__)
        raise ValueError(f"keypoints must have shape (N, K, 3), got {tuple(shape)}")
    ratio_h, ratio_w = _resize_ratios(
        original_size=original_size, new_size=new_size, device=keypoints.device
    )
    resized = keypoints.clone()
    resized[..., 0] *= ratio_w
    resized[..., 1] *= ratio_h
    return resized


class DetectionTransform(nn.Module):
    """Normalise, resize and pad a list of images (and their targets) into an :class:`ImageBatch`.

    Each image is normalised with ``(image - mean) / std`` per channel, then resized so that its
    shorter side is ``min_size`` pixels unless that makes its longer side exceed ``max_size``
    (then the longer side is ``max_size``), keeping the aspect ratio; or to ``fixed_size``.
    Images are zero-padded at the bottom and right to a common size that is a multiple of
    ``size_divisible``. Target ``boxes`` (``xyxy`` pixels), ``masks`` and ``keypoints`` are
    resized with the image; other target entries are passed through.

    Args:
        min_size: target length of the shorter side in pixels; with several values, training
            picks one at random per image and evaluation uses the last.
        max_size: largest allowed length of the longer side in pixels.
        image_mean: per-channel mean (3 values) of ``[0, 1]`` RGB images.
        image_std: per-channel standard deviation (3 values).
        size_divisible: padded height and width are multiples of this.
        fixed_size: ``(width, height)`` to resize every image to, ignoring ``min_size`` and
            ``max_size`` (torchvision's order).
    """

    def __init__(
        self,
        *,
        min_size: int | Sequence[int],
        max_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        size_divisible: int = 32,
        fixed_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        min_sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if len(min_sizes) == 0 or any(int(s) <= 0 for s in min_sizes):
            raise ValueError(f"min_size must be positive int(s), got {min_size!r}")
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        if len(image_mean) != len(image_std):
            raise ValueError(
                f"image_mean and image_std must have the same length, got {len(image_mean)} "
                f"and {len(image_std)}"
            )
        if size_divisible <= 0:
            raise ValueError(f"size_divisible must be positive, got {size_divisible}")
        if fixed_size is not None and len(fixed_size) != 2:
            raise ValueError(f"fixed_size must be (width, height), got {fixed_size!r}")
        self.min_size = tuple(int(s) for s in min_sizes)
        self.max_size = int(max_size)
        self.image_mean = [float(m) for m in image_mean]
        self.image_std = [float(s) for s in image_std]
        self.size_divisible = int(size_divisible)
        self.fixed_size = None if fixed_size is None else (int(fixed_size[0]), int(fixed_size[1]))

    def extra_repr(self) -> str:
        return (
            f"min_size={self.min_size}, max_size={self.max_size}, mean={self.image_mean}, "
            f"std={self.image_std}, size_divisible={self.size_divisible}, "
            f"fixed_size={self.fixed_size}"
        )

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[ImageBatch, list[dict[str, Tensor]] | None]:
        """Transform images (and targets) into a padded batch.

        Args:
            images: ``B`` float images, each ``(C, H_i, W_i)`` with values in ``[0, 1]``.
            targets: optional ``B`` target dicts with ``boxes (N_i, 4)`` ``xyxy`` pixels and
                optionally ``masks (N_i, H_i, W_i)`` and ``keypoints (N_i, K, 3)``. Not modified.

        Returns:
            ``(batch, resized_targets)``: ``batch.tensors`` is ``(B, C, H_pad, W_pad)`` and
            ``batch.image_sizes`` the resized ``(h, w)`` per image; ``resized_targets`` are new
            dicts in resized-image pixels (``None`` when ``targets`` is ``None``).
        """
        if targets is not None and len(targets) != len(images):
            raise ValueError(
                f"targets must have one dict per image: expected {len(images)}, got {len(targets)}"
            )
        if len(images) == 0:
            raise ValueError("images must contain at least one image, got an empty list")
        resized_images, resized_targets = [], []
        for image_idx, image in enumerate(images):
            target = None if targets is None else dict(targets[image_idx])
            _check_image(image, image_idx)
            if target is not None:
                _check_target(target, image_idx)
            image, target = self._resize(self.normalize(image), target)
            resized_images.append(image)
            resized_targets.append(target)
        image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized_images]
        batch = ImageBatch(tensors=self.batch_images(resized_images), image_sizes=image_sizes)
        return batch, (None if targets is None else resized_targets)

    def normalize(self, image: Tensor) -> Tensor:
        """``(C, H, W)`` float image -> ``(image - mean) / std`` per channel."""
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def _choose_min_size(self) -> int:
        """Training: one draw of torch's default RNG picks a size; evaluation: the last size."""
        if not self.training:
            return self.min_size[-1]
        index = int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())
        return self.min_size[index]

    def _resize(
        self, image: Tensor, target: dict[str, Tensor] | None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Resize one ``(C, H, W)`` image and its target dict (new tensors)."""
        original_size = (int(image.shape[-2]), int(image.shape[-1]))
        resize_kwargs = self._interpolate_kwargs(original_size, self._choose_min_size())
        image = F.interpolate(image[None], mode="bilinear", align_corners=False, **resize_kwargs)[
            0
        ]  # (C, h, w)
        if target is None:
            return image, None
        new_size = (int(image.shape[-2]), int(image.shape[-1]))
        if "masks" in target:
            masks = target["masks"][:, None].float()  # (N, 1, H, W)
            target["masks"] = F.interpolate(masks, **resize_kwargs)[:, 0].byte()
        target["boxes"] = resize_boxes(
            target["boxes"], original_size=original_size, new_size=new_size
        )
        if "keypoints" in target:
            target["keypoints"] = resize_keypoints(
                target["keypoints"], original_size=original_size, new_size=new_size
            )
        return image, target

    def _interpolate_kwargs(self, original_size: tuple[int, int], min_size: int) -> dict:
        """Keyword arguments of ``F.interpolate`` that resize an image of ``original_size``."""
        if self.fixed_size is not None:
            width, height = self.fixed_size
            return {"size": [height, width]}
        scale_factor = min(min_size / min(original_size), self.max_size / max(original_size))
        return {"scale_factor": scale_factor, "recompute_scale_factor": True}

    def batch_images(self, images: list[Tensor]) -> Tensor:
        """Zero-pad ``(C, h_i, w_i)`` images at the bottom/right into ``(B, C, H_pad, W_pad)``.

        ``H_pad`` and ``W_pad`` are the largest height and width rounded up to a multiple of
        ``size_divisible``.
        """
        num_channels = max(int(img.shape[0]) for img in images)
        stride = float(self.size_divisible)
        padded_h = int(math.ceil(max(int(img.shape[1]) for img in images) / stride) * stride)
        padded_w = int(math.ceil(max(int(img.shape[2]) for img in images) / stride) * stride)
        batch = images[0].new_zeros((len(images), num_channels, padded_h, padded_w))
        for image_idx, img in enumerate(images):
            batch[image_idx, : img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
        return batch

    def postprocess(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Map detections from resized-image pixels back to original-image pixels.

        Rescales ``boxes (N, 4)`` and ``keypoints (N, K, 3)``; other entries (scores, labels,
        low-resolution ``masks`` that mask heads paste later) are passed through. Unlike
        torchvision, this also rescales in training mode (torchvision returns the input
        unchanged there; its training detections are empty anyway).

        Args:
            detections: one dict per image, coordinates in resized-image pixels.
            image_sizes: ``(h, w)`` of each resized image (``ImageBatch.image_sizes``).
            original_sizes: ``(h, w)`` of each input image.

        Returns:
            New dicts with coordinates in original-image pixels.
        """
        if not len(detections) == len(image_sizes) == len(original_sizes):
            raise ValueError(
                "detections, image_sizes and original_sizes must have the same length, got "
                f"{len(detections)}, {len(image_sizes)} and {len(original_sizes)}"
            )
        results = []
        for detection, image_size, original_size in zip(
            detections, image_sizes, original_sizes, strict=True
        ):
            result = dict(detection)
            if "boxes" in result:
                result["boxes"] = resize_boxes(
                    result["boxes"], original_size=image_size, new_size=original_size
                )
            if "keypoints" in result:
                result["keypoints"] = resize_keypoints(
                    result["keypoints"], original_size=image_size, new_size=original_size
                )
            results.append(result)
        return results


def _check_image(image: Tensor, image_idx: int) -> None:
    if not isinstance(image, Tensor) or image.ndim != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"images[{image_idx}] must have shape (C, H, W), got {tuple(shape)}")
    if not image.is_floating_point():
        raise TypeError(
            f"images[{image_idx}] must be a floating-point image in [0, 1], got {image.dtype}"
        )


def _check_target(target: dict[str, Tensor], image_idx: int) -> None:
    boxes = target.get("boxes")
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"targets[{image_idx}]['boxes'] must have shape (N, 4), got {shape}")
    masks = target.get("masks")
    if masks is not None and (masks.ndim != 3 or masks.shape[0] != boxes.shape[0]):
        raise ValueError(
            f"targets[{image_idx}]['masks'] must have shape ({boxes.shape[0]}, H, W), "
            f"got {tuple(masks.shape)}"
        )
    keypoints = target.get("keypoints")
    if keypoints is not None and (keypoints.ndim != 3 or keypoints.shape[0] != boxes.shape[0]):
        raise ValueError(
            f"targets[{image_idx}]['keypoints'] must have shape ({boxes.shape[0]}, K, 3), "
            f"got {tuple(keypoints.shape)}"
        )
