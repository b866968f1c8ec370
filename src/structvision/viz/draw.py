"""Drawing predictions and ground truth on images.

Everything here takes images as ``(3, H, W)`` float tensors in ``[0, 1]`` (the model contract)
or ``uint8`` tensors, and returns ``(3, H', W')`` ``uint8`` tensors ready for
:func:`save_png`. Boxes are absolute-pixel ``xyxy`` in the input image's coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from structvision.data.synthetic.figures import SKELETON as STICK_FIGURE_SKELETON

__all__ = [
    "COCO_PERSON_SKELETON",
    "colorize_semantic",
    "colorize_values",
    "default_skeleton",
    "draw_instances",
    "draw_legend",
    "draw_skeletons",
    "instance_colors",
    "save_depth_png",
    "save_label_png",
    "save_png",
    "semantic_palette",
    "tile_images",
]

COCO_PERSON_SKELETON: tuple[tuple[int, int], ...] = tuple(
    (i - 1, j - 1)
    for i, j in (
        (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
        (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
    )
)  # fmt: skip
"""The limbs of COCO's 17 person keypoints as 0-based index pairs (COCO's file is 1-based)."""

# Distinct, saturated colours for the skeletons of neighbouring instances.
_SKELETON_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 215, 0),
    (0, 230, 255),
    (255, 60, 200),
    (120, 255, 60),
    (255, 130, 30),
    (150, 110, 255),
    (255, 255, 255),
    (40, 120, 255),
)


def semantic_palette(num_colors: int = 256) -> torch.Tensor:
    """The Pascal VOC colour palette: ``(num_colors, 3)`` uint8, index 0 black.

    Colour ``i`` spreads the bits of ``i`` over the three channels, most significant first, so
    that neighbouring class ids get clearly different colours.
    """
    ids = torch.arange(num_colors)
    palette = torch.zeros(num_colors, 3, dtype=torch.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.to(torch.uint8)


def instance_colors(labels: torch.Tensor) -> list[tuple[int, int, int]]:
    """One colour per instance, chosen by its class label so a class keeps its colour."""
    palette = semantic_palette()
    return [tuple(int(c) for c in palette[int(label) % 256]) for label in labels.tolist()]


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.dtype == torch.uint8:
        return image.cpu()
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def _upscale(image: torch.Tensor, scale: int) -> torch.Tensor:
    # (3, H, W) uint8 -> (3, H*scale, W*scale), nearest neighbour so pixels stay crisp.
    if scale == 1:
        return image
    return F.interpolate(image[None].float(), scale_factor=scale, mode="nearest")[0].to(torch.uint8)


def default_skeleton(num_keypoints: int) -> tuple[tuple[int, int], ...]:
    """Limbs of a known keypoint layout, by its number of keypoints: 15 is structvision's stick
    figure (:data:`structvision.data.synthetic.figures.SKELETON`), 17 COCO's person
    (:data:`COCO_PERSON_SKELETON`); any other count has no known skeleton, ``()``."""
    return {15: STICK_FIGURE_SKELETON, 17: COCO_PERSON_SKELETON}.get(int(num_keypoints), ())


def draw_skeletons(
    image: torch.Tensor,
    keypoints: torch.Tensor,
    *,
    skeleton: Sequence[tuple[int, int]] = (),
    colors: Sequence[tuple[int, int, int]] | None = None,
    radius: int = 2,
    width: int = 2,
) -> torch.Tensor:
    """Draw keypoints and the limbs between them, one colour per instance.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]`` or uint8.
        keypoints: ``(N, K, 3)`` ``(x, y, visibility)`` in continuous pixel coordinates of
            ``image`` (pixel ``j`` spans ``[j, j + 1)``); points with visibility 0 are not
            drawn, nor are limbs that end at one.
        skeleton: limbs as pairs of 0-based keypoint indices.
        colors: one RGB colour per instance; default: a fixed cycle of distinct colours.
        radius: radius of a keypoint's dot, pixels.
        width: line width of a limb, pixels.

    Returns:
        ``(3, H, W)`` uint8.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be (N, K, 3), got {tuple(keypoints.shape)}")
    num_keypoints = keypoints.shape[1]
    bad = [pair for pair in skeleton if not all(0 <= int(k) < num_keypoints for k in pair)]
    if bad:
        raise ValueError(f"skeleton has pairs {bad} outside the {num_keypoints} keypoints")
    if colors is not None and len(colors) < len(keypoints):
        raise ValueError(f"colors has {len(colors)} entries for {len(keypoints)} instances")
    canvas = Image.fromarray(_to_uint8(image).permute(1, 2, 0).contiguous().numpy())
    draw = ImageDraw.Draw(canvas)
    for i, points in enumerate(keypoints.detach().float().cpu().tolist()):
        color = tuple(colors[i]) if colors is not None else _SKELETON_COLORS[i % 8]
        # PIL addresses pixel centres by integers: continuous x is PIL's x - 0.5
        centres = [(x - 0.5, y - 0.5) for x, y, _ in points]
        for a, b in skeleton:
            if points[a][2] > 0 and points[b][2] > 0:
                draw.line([centres[a], centres[b]], fill=color, width=width)
        for (x, y), (_, _, visibility) in zip(centres, points, strict=True):
            if visibility > 0:
                box = [x - radius, y - radius, x + radius, y + radius]
                draw.ellipse(box, fill=color, outline=(0, 0, 0))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def draw_instances(
    image: torch.Tensor,
    instances: dict[str, torch.Tensor],
    *,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    skeleton: Sequence[tuple[int, int]] | None = None,
    scale: int = 1,
    mask_alpha: float = 0.45,
) -> torch.Tensor:
    """Draw boxes, class names, scores, masks and keypoints of one image.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]`` or uint8.
        instances: a target or prediction dict: ``boxes (N, 4)`` xyxy pixels, ``labels (N,)``,
            optional ``scores (N,)`` (instances under ``score_threshold`` are not drawn),
            ``masks`` ``(N, H, W)`` or ``(N, 1, H, W)`` (uint8, or probabilities thresholded
            at ``mask_threshold``) and ``keypoints (N, K, 3)`` as ``(x, y, visibility)``.
        class_names: names indexed by label; label 0 is background. Without it labels are
            written as numbers.
        skeleton: pairs of keypoint indices to connect with lines; ``None`` picks
            :func:`default_skeleton` for the keypoint count, ``()`` draws no lines. Keypoints
            (with visibility > 0) and limbs are drawn by :func:`draw_skeletons`, one colour per
            instance so that overlapping people stay apart.
        scale: integer upscaling applied before drawing, so that small images stay legible.

    Returns:
        ``(3, H * scale, W * scale)`` uint8.
    """
    canvas = _upscale(_to_uint8(image), scale)
    boxes = instances.get("boxes", torch.zeros(0, 4)).detach().float().cpu()
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"instances['boxes'] must be (N, 4), got {tuple(boxes.shape)}")
    labels = instances.get("labels", torch.zeros(len(boxes), dtype=torch.int64)).cpu()
    keep = torch.ones(len(boxes), dtype=torch.bool)
    scores = instances.get("scores")
    if scores is not None:
        scores = scores.detach().float().cpu()
        keep = scores >= score_threshold
    if not keep.any():
        return canvas
    boxes, labels = boxes[keep], labels[keep]
    colors = instance_colors(labels)

    masks = instances.get("masks")
    if masks is not None and len(masks):
        masks = masks.detach().cpu()[keep]
        if masks.ndim == 4:  # (N, 1, H, W) probabilities from a mask head
            masks = masks[:, 0]
        masks = masks > mask_threshold if masks.is_floating_point() else masks.bool()
        if scale != 1:
            masks = F.interpolate(masks[None].float(), scale_factor=scale, mode="nearest")[0] > 0
        canvas = draw_segmentation_masks(canvas, masks, alpha=mask_alpha, colors=colors)

    texts = []
    for i, label in enumerate(labels.tolist()):
        name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        texts.append(f"{name} {scores[keep][i]:.2f}" if scores is not None else name)
    canvas = draw_bounding_boxes(canvas, boxes * scale, labels=texts, colors=colors, width=2)

    keypoints = instances.get("keypoints")
    if keypoints is not None and len(keypoints):
        keypoints = keypoints.detach().float().cpu()[keep].clone()  # (N, K, 3)
        keypoints[..., :2] *= scale
        if skeleton is None:
            skeleton = default_skeleton(keypoints.shape[1])
        canvas = draw_skeletons(
            canvas, keypoints, skeleton=skeleton, radius=max(1, scale), width=max(1, scale)
        )
    return canvas


def colorize_semantic(semantic: torch.Tensor, *, ignore_index: int = 255) -> torch.Tensor:
    """Colour a ``(H, W)`` int label map with the VOC palette; ignored pixels become white.

    Returns ``(3, H, W)`` uint8.
    """
    if semantic.ndim != 2:
        raise ValueError(f"semantic must be (H, W), got {tuple(semantic.shape)}")
    labels = semantic.detach().long().cpu()
    palette = semantic_palette()
    palette[ignore_index % 256] = torch.tensor([255, 255, 255], dtype=torch.uint8)
    return palette[labels.clamp(0, 255)].permute(2, 0, 1).contiguous()


def tile_images(
    images: Sequence[torch.Tensor], *, columns: int = 4, padding: int = 4
) -> torch.Tensor:
    """Tile same-sized ``(3, H, W)`` uint8 images into one grid image (white gaps)."""
    if not images:
        raise ValueError("tile_images needs at least one image")
    return make_grid(list(images), nrow=columns, padding=padding, pad_value=255)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write a ``(3, H, W)`` uint8 (or float in [0, 1]) image as PNG; parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = _to_uint8(image).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path


def draw_legend(class_names: Sequence[str], *, width: int, row_height: int = 12) -> torch.Tensor:
    """A legend strip of ``width`` pixels: a VOC-palette swatch and the name of every class.

    Returns ``(3, rows * row_height, width)`` uint8 on white, as many names per row as fit.
    """
    palette = semantic_palette(max(len(class_names), 1))
    entries = [(str(name), tuple(palette[i].tolist())) for i, name in enumerate(class_names)]
    longest = max((len(name) for name, _ in entries), default=1)
    cell = 6 * longest + row_height + 6  # PIL's default font is about 6 pixels per character
    per_row = max(width // cell, 1)
    rows = max(-(-len(entries) // per_row), 1)
    picture = Image.new("RGB", (width, rows * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for index, (name, color) in enumerate(entries):
        x, y = (index % per_row) * cell, (index // per_row) * row_height
        draw.rectangle([x + 1, y + 2, x + row_height - 3, y + row_height - 2], fill=color)
        draw.text((x + row_height, y), name, fill=(0, 0, 0))
    array = torch.from_numpy(np.asarray(picture).copy())
    return array.permute(2, 0, 1).contiguous()


def save_label_png(labels: torch.Tensor, path: str | Path) -> Path:
    """Save an ``(H, W)`` label map (values 0..255, 255 = ignore) as a palette PNG.

    The pixel values are the class indices; the palette (VOC's, ignore white) only shows them.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got {tuple(labels.shape)}")
    values = labels.detach().cpu().long()
    if values.numel() and (values.min() < 0 or values.max() > 255):
        raise ValueError("labels must lie in [0, 255] to be saved as a palette PNG")
    palette = semantic_palette()
    palette[255] = torch.tensor([255, 255, 255], dtype=torch.uint8)
    picture = Image.fromarray(values.to(torch.uint8).numpy(), mode="P")
    picture.putpalette(palette.flatten().tolist())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


#: Anchor colours of a perceptually ordered dark-to-bright map (close to matplotlib's "magma").
_MAGMA_ANCHORS = (
    (0, 0, 4),
    (28, 16, 68),
    (79, 18, 123),
    (129, 37, 129),
    (181, 54, 122),
    (229, 80, 100),
    (251, 135, 97),
    (254, 194, 135),
    (252, 253, 191),
)


def colorize_values(
    values: torch.Tensor, *, vmin: float | None = None, vmax: float | None = None
) -> torch.Tensor:
    """Colour an ``(H, W)`` map (disparity, inverse depth, error) dark to bright, low to high.

    ``vmin``/``vmax`` default to the 1st and 99th percentiles of the finite values; non-finite
    pixels are black. Returns ``(3, H, W)`` uint8.
    """
    if values.ndim != 2:
        raise ValueError(f"values must be (H, W), got {tuple(values.shape)}")
    data = values.detach().float().cpu()
    finite = torch.isfinite(data)
    if finite.any():
        known = data[finite]
        low = float(torch.quantile(known, 0.01)) if vmin is None else vmin
        high = float(torch.quantile(known, 0.99)) if vmax is None else vmax
    else:
        low, high = 0.0, 1.0
    scaled = ((data - low) / max(high - low, 1e-12)).clamp(0, 1)
    scaled = torch.where(finite, scaled, torch.zeros_like(scaled))
    anchors = torch.tensor(_MAGMA_ANCHORS, dtype=torch.float32)  # (A, 3)
    position = scaled * (len(anchors) - 1)
    index = position.floor().long().clamp(max=len(anchors) - 2)
    weight = (position - index)[..., None]
    colors = anchors[index] * (1 - weight) + anchors[index + 1] * weight  # (H, W, 3)
    colors[~finite] = 0
    return colors.round().to(torch.uint8).permute(2, 0, 1).contiguous()


def save_depth_png(depth: torch.Tensor, path: str | Path) -> Path:
    """Save an ``(H, W)`` depth map in metres as KITTI's 16-bit PNG: value = round(depth * 256),
    0 = invalid (non-finite, non-positive, or beyond 255.99 m)."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {tuple(depth.shape)}")
    data = depth.detach().double().cpu()
    valid = torch.isfinite(data) & (data > 0) & (data * 256 < 65535.5)
    scaled = torch.where(valid, (data * 256).round(), torch.zeros_like(data))
    picture = Image.fromarray(scaled.numpy().astype(np.uint16))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
