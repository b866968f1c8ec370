"""Joint image/target augmentation for detection-style samples.

Built on ``torchvision.transforms.v2``: boxes are wrapped as ``tv_tensors.BoundingBoxes``
(xyxy, ``canvas_size=(H, W)``) and masks as ``tv_tensors.Mask`` so every geometric op moves
them with the image. Keypoints ``(N, K, 3)`` are transformed here by hand (``tv_tensors.KeyPoints``
does not exist before torchvision 0.23, and flip pairs need swapping anyway).

A transform is a callable ``(image, target) -> (image, target)`` on plain tensors:
``image (3, H, W)`` float in ``[0, 1]`` (uint8 is converted), ``target`` a dict following the
structvision contract. After the geometric steps, boxes are clamped to the image and boxes that
became smaller than ``min_box_size`` are removed together with every per-instance entry
(labels, masks, keypoints, area, iscrowd, ...).

Randomness comes only from torch's global generator, so ``torch.manual_seed`` makes
augmentation reproducible (per DataLoader worker, torch seeds each worker's generator).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "ColorJitter",
    "DetectionTransforms",
    "RandomHorizontalFlip",
    "RandomScale",
    "detection_eval_transforms",
    "detection_train_transforms",
    "from_tv",
    "hflip_keypoints",
    "keypoint_flip_order",
    "sanitize_instances",
    "to_tv",
]

Target = dict[str, Any]
Step = Callable[[Tensor, Target], tuple[Tensor, Target]]

# Per-image target entries: never filtered with the instances.
PER_IMAGE_KEYS = frozenset({"image_id", "orig_size", "size"})
# Dense per-pixel targets that detection transforms do not know how to move (a flip changes the
# sign of flow, a resize the scale of disparity). ``semantic`` moves like a mask.
DENSE_KEYS = frozenset({"depth", "disparity", "flow", "normals"})
# Label maps ``(H, W)`` that move like masks: the training labels and, for scribble-labelled
# data, the exact map they were drawn from.
SEMANTIC_KEYS = ("semantic", "semantic_full")


def _image_size(image: Tensor) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])


def to_tv(image: Tensor, target: Target) -> tuple[tv_tensors.Image, Target]:
    """Wrap a sample for torchvision v2 ops.

    ``image (3, H, W)`` becomes a ``tv_tensors.Image`` (uint8 is converted to float32 in
    ``[0, 1]``), ``boxes (N, 4)`` xyxy a ``tv_tensors.BoundingBoxes`` with
    ``canvas_size=(H, W)``, ``masks (N, H, W)`` and ``semantic (H, W)`` (and
    ``semantic_full``) ``tv_tensors.Mask``; other entries are kept.
    """
    if image.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
    dense = DENSE_KEYS.intersection(target)
    if dense:
        raise ValueError(
            f"detection transforms cannot transform dense target entries {sorted(dense)}; "
            "use a dense-task transform instead"
        )
    height, width = _image_size(image)
    out = dict(target)
    if "boxes" in target:
        boxes = target["boxes"].to(torch.float32).reshape(-1, 4)  # (N, 4)
        out["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
    if "masks" in target:
        out["masks"] = tv_tensors.Mask(target["masks"])  # (N, H, W)
    for key in SEMANTIC_KEYS:
        if key in target:
            out[key] = tv_tensors.Mask(target[key])  # (H, W), nearest when resized
    image = F.to_dtype(image, torch.float32, scale=True)
    return tv_tensors.Image(image), out


def from_tv(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Undo :func:`to_tv`: plain tensors with contract dtypes (boxes float32, masks uint8)."""
    out = {
        key: value.as_subclass(Tensor) if isinstance(value, Tensor) else value
        for key, value in target.items()
    }
    if "boxes" in out:
        out["boxes"] = out["boxes"].to(torch.float32)
    if "masks" in out:
        out["masks"] = out["masks"].to(torch.uint8)
    if "labels" in out:
        out["labels"] = out["labels"].to(torch.int64)
    for key in SEMANTIC_KEYS:
        if key in out:
            out[key] = out[key].to(torch.int64)
    return image.as_subclass(Tensor), out


def _instance_tensors(inputs: Any) -> tuple[Tensor, ...]:
    """``labels_getter`` for ``SanitizeBoundingBoxes``: every per-instance plain tensor.

    ``boxes`` and ``masks`` (tv_tensors) are filtered by torchvision itself; this returns the
    other target tensors whose first dimension has one entry per box.
    """
    target = inputs[1]
    num_boxes = target["boxes"].shape[0]
    return tuple(
        value
        for key, value in target.items()
        if key not in PER_IMAGE_KEYS
        and isinstance(value, Tensor)
        and not isinstance(value, (tv_tensors.BoundingBoxes, tv_tensors.Mask))
        and value.ndim >= 1
        and value.shape[0] == num_boxes
    )


def sanitize_instances(
    image: Tensor, target: Target, *, min_size: float = 1.0
) -> tuple[Tensor, Target]:
    """Clamp boxes to the image, then drop boxes with width or height below ``min_size``
    pixels together with their labels, masks, keypoints, area, iscrowd and any other
    per-instance tensor. Takes and returns tv-wrapped samples (see :func:`to_tv`)."""
    if "boxes" not in target:
        return image, target
    target = dict(target)
    target["boxes"] = F.clamp_bounding_boxes(target["boxes"])
    sanitize = v2.SanitizeBoundingBoxes(min_size=min_size, labels_getter=_instance_tensors)
    return sanitize(image, target)


def hflip_keypoints(
    keypoints: Tensor,
    *,
    image_width: int,
    flip_pairs: Sequence[tuple[int, int]] | None = None,
) -> Tensor:
    """Mirror ``keypoints (N, K, 3)`` (x, y, visibility) in an image ``image_width`` pixels wide.

    ``x -> image_width - x`` (the same convention as boxes: continuous pixel coordinates);
    points with visibility 0 are left as they are (COCO stores them as ``(0, 0, 0)``).
    ``flip_pairs`` lists index pairs that swap, e.g. ``(left_eye, right_eye)``.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (N, K, 3), got {tuple(keypoints.shape)}")
    flipped = keypoints.clone()
    flipped[..., 0] = image_width - keypoints[..., 0]
    invisible = keypoints[..., 2] == 0  # (N, K)
    flipped[invisible] = keypoints[invisible]
    if flip_pairs:
        flipped = flipped[:, keypoint_flip_order(flip_pairs, keypoints.shape[1])]
    return flipped


def keypoint_flip_order(flip_pairs: Sequence[Sequence[int]], num_keypoints: int) -> list[int]:
    """The keypoint order of a mirror image: ``mirrored[:, order]`` puts each keypoint back at
    its own index, ``flip_pairs`` (e.g. ``(left_eye, right_eye)``) trading places.

    Raises ``ValueError`` naming a pair that is not two different indices in
    ``[0, num_keypoints)`` or that shares an index with another pair.
    """
    order = list(range(num_keypoints))
    seen: set[int] = set()
    for pair in flip_pairs:
        try:
            left, right = (operator.index(index) for index in pair)
        except (TypeError, ValueError):
            left = right = -1
        if (
            not (0 <= left < num_keypoints and 0 <= right < num_keypoints)
            or left == right
            or ({left, right} & seen)
        ):
            raise ValueError(
                f"keypoint flip pair {pair!r} must be two different keypoint indices in "
                f"[0, {num_keypoints}) that no other pair names"
            )
        seen.update((left, right))
        order[left], order[right] = right, left
    return order


class RandomHorizontalFlip:
    """Flip image, boxes, masks, semantic map and keypoints left-right with probability ``p``."""

    def __init__(
        self, *, p: float = 0.5, keypoint_flip_pairs: Sequence[tuple[int, int]] | None = None
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.keypoint_flip_pairs = list(keypoint_flip_pairs) if keypoint_flip_pairs else None

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        if torch.rand(()) >= self.p:
            return image, target
        width = _image_size(image)[1]
        target = dict(target)
        for key in ("boxes", "masks", *SEMANTIC_KEYS):
            if key in target:
                target[key] = F.horizontal_flip(target[key])
        if "keypoints" in target:
            target["keypoints"] = hflip_keypoints(
                target["keypoints"], image_width=width, flip_pairs=self.keypoint_flip_pairs
            )
        return F.horizontal_flip(image), target


class RandomScale:
    """Resize the sample by a factor drawn uniformly from ``scale_range`` (aspect kept).

    Image: bilinear with antialiasing; masks and semantic map: nearest; boxes, keypoints and
    area scaled.
    """

    def __init__(self, *, scale_range: tuple[float, float] = (0.8, 1.2)) -> None:
        low, high = scale_range
        if not 0.0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        height, width = _image_size(image)
        new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
        scale_x, scale_y = new_width / width, new_height / height
        size = [new_height, new_width]
        target = dict(target)
        for key in ("boxes", "masks", *SEMANTIC_KEYS):
            if key in target:
                target[key] = F.resize(target[key], size)
        if "keypoints" in target:
            keypoints = target["keypoints"].clone()  # (N, K, 3)
            keypoints[..., 0] *= scale_x
            keypoints[..., 1] *= scale_y
            target["keypoints"] = keypoints
        if "area" in target:
            target["area"] = target["area"] * (scale_x * scale_y)
        return F.resize(image, size, antialias=True), target


class ColorJitter:
    """Random brightness/contrast/saturation/hue (image only; torchvision's ColorJitter)."""

    def __init__(
        self,
        *,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
    ) -> None:
        self.jitter = v2.ColorJitter(
            brightness=brightness, contrast=contrast, saturation=saturation, hue=hue
        )

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        return self.jitter(image), target


class DetectionTransforms:
    """Run ``steps`` on a detection sample, then (``sanitize=True``) clamp the boxes and remove
    the instances whose box became smaller than ``min_box_size`` pixels.

    Takes and returns plain tensors; the image comes out float32 in ``[0, 1]``.
    """

    def __init__(
        self, steps: Sequence[Step] = (), *, sanitize: bool = True, min_box_size: float = 1.0
    ) -> None:
        self.steps = list(steps)
        self.sanitize = sanitize
        self.min_box_size = min_box_size

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        image, target = to_tv(image, target)
        for step in self.steps:
            image, target = step(image, target)
        if self.sanitize:
            image, target = sanitize_instances(image, target, min_size=self.min_box_size)
        return from_tv(image, target)

    def __repr__(self) -> str:
        steps = ", ".join(type(step).__name__ for step in self.steps)
        return f"DetectionTransforms([{steps}], sanitize={self.sanitize})"


def detection_train_transforms(
    *,
    hflip_prob: float = 0.5,
    scale_range: tuple[float, float] | None = (0.8, 1.2),
    color_jitter: bool = False,
    keypoint_flip_pairs: Sequence[tuple[int, int]] | None = None,
    min_box_size: float = 1.0,
) -> DetectionTransforms:
    """Standard detection training augmentation: random scale, horizontal flip, colour jitter.

    Args:
        hflip_prob: probability of a left-right flip (0 disables it).
        scale_range: ``(low, high)`` resize factor range, or ``None`` for no rescaling.
        color_jitter: add brightness/contrast/saturation/hue jitter.
        keypoint_flip_pairs: keypoint index pairs swapped by the flip (e.g. left/right eye);
            see :func:`structvision.data.coco.keypoint_flip_pairs_from_names`.
        min_box_size: boxes narrower or shorter than this (pixels) after augmentation are
            removed with their instances.
    """
    steps: list[Step] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range=scale_range))
    if hflip_prob > 0:
        steps.append(RandomHorizontalFlip(p=hflip_prob, keypoint_flip_pairs=keypoint_flip_pairs))
    if color_jitter:
        steps.append(ColorJitter())
    return DetectionTransforms(steps, sanitize=True, min_box_size=min_box_size)


def detection_eval_transforms() -> DetectionTransforms:
    """Identity apart from dtypes: image float32 in ``[0, 1]``, boxes float32, masks uint8."""
    return DetectionTransforms((), sanitize=False)
