"""Instance masks: COCO polygon and RLE conversion, mask boxes, and pasting into the image.

Masks are ``(H, W)`` (or ``(N, H, W)``) uint8 tensors with 1 = object, row ``y`` and column
``x`` in image pixels. Polygons are COCO's: flat lists ``[x1, y1, x2, y2, ...]`` in continuous
pixel coordinates (pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``). RLEs are COCO's
dicts ``{"size": [H, W], "counts": ...}`` (column-major run lengths), rasterised and encoded by
pycocotools.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F
from torch import Tensor

from structvision.structures.boxes import scale_boxes

__all__ = [
    "mask_to_rle",
    "masks_to_boxes",
    "paste_masks_in_image",
    "paste_masks_where_sampled",
    "polygons_to_mask",
    "rle_to_mask",
]


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> Tensor:
    """Rasterise the union of COCO polygons.

    Args:
        polygons: polygons of one object, each a flat ``[x1, y1, x2, y2, ...]`` list of at
            least 3 points, in pixels.
        height: image height ``H`` in pixels.
        width: image width ``W`` in pixels.

    Returns:
        ``(H, W)`` uint8 mask (all zeros for an empty list of polygons).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got ({height}, {width})")
    flat_polygons = []
    for polygon_idx, polygon in enumerate(polygons):
        coords = [float(c) for c in polygon]
        if len(coords) < 6 or len(coords) % 2 != 0:
            raise ValueError(
                f"polygons[{polygon_idx}] must be a flat [x1, y1, x2, y2, ...] list with an even "
                f"number (>= 6) of coordinates, got {len(coords)}"
            )
        flat_polygons.append(coords)
    if not flat_polygons:
        return torch.zeros((height, width), dtype=torch.uint8)
    rles = mask_utils.frPyObjects(flat_polygons, height, width)
    return _decode_rle(mask_utils.merge(rles))


def rle_to_mask(rle: dict[str, Any]) -> Tensor:
    """Decode a COCO run-length encoding.

    Args:
        rle: ``{"size": [H, W], "counts": c}`` where ``c`` is the compressed string (``str`` or
            ``bytes``) or the uncompressed list of run lengths (COCO's ``iscrowd`` format).

    Returns:
        ``(H, W)`` uint8 mask.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"rle must be a dict with keys 'size' and 'counts', got {rle!r:.200}")
    size = rle["size"]
    if len(size) != 2:
        raise ValueError(f"rle['size'] must be [H, W], got {size!r}")
    height, width = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects(
            {"size": [height, width], "counts": counts}, height, width
        )
    elif isinstance(counts, (str, bytes)):
        encoded = counts.encode("ascii") if isinstance(counts, str) else counts
        compressed = {"size": [height, width], "counts": encoded}
    else:
        raise ValueError(
            f"rle['counts'] must be a str, bytes or list of ints, got {type(counts).__name__}"
        )
    return _decode_rle(compressed)


def _decode_rle(rle: dict[str, Any]) -> Tensor:
    """Compressed RLE -> ``(H, W)`` uint8 tensor (C order)."""
    with warnings.catch_warnings():
        # pycocotools built against numpy 1 warns under numpy 2; the result is correct.
        warnings.filterwarnings(
            "ignore", message="__array__ implementation", category=DeprecationWarning
        )
        mask = mask_utils.decode(rle)  # (H, W) uint8, Fortran order
    return torch.from_numpy(np.ascontiguousarray(mask))


def mask_to_rle(mask: Tensor) -> dict[str, Any]:
    """Encode a binary mask as a compressed COCO RLE that can be written to JSON.

    Args:
        mask: ``(H, W)`` mask; any non-zero value counts as foreground.

    Returns:
        ``{"size": [H, W], "counts": str}``.
    """
    if not isinstance(mask, Tensor) or mask.ndim != 2:
        shape = getattr(mask, "shape", type(mask).__name__)
        raise ValueError(f"mask must have shape (H, W), got {tuple(shape)}")
    binary = (mask != 0).to(device="cpu", dtype=torch.uint8).numpy()
    rle = mask_utils.encode(np.asfortranarray(binary))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes around binary masks, torchvision's convention.

    The box is ``(x_min, y_min, x_max, y_max)`` of the foreground *pixel indices* (inclusive), so
    a one-pixel mask at ``(x, y)`` gives ``(x, y, x, y)``; add 1 to ``x2`` and ``y2`` for the box of
    pixel edges (COCO's ``toBbox``). Empty masks give ``(0, 0, 0, 0)``.

    Args:
        masks: ``(N, H, W)`` masks; non-zero is foreground.

    Returns:
        ``(N, 4)`` float32 boxes.
    """
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        shape = getattr(masks, "shape", type(masks).__name__)
        raise ValueError(f"masks must have shape (N, H, W), got {tuple(shape)}")
    _, height, width = masks.shape
    if masks.shape[0] == 0 or height == 0 or width == 0:
        return torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    foreground = masks != 0
    rows_used = foreground.any(dim=2).to(torch.uint8)  # (N, H)
    cols_used = foreground.any(dim=1).to(torch.uint8)  # (N, W)
    y1 = rows_used.argmax(dim=1)
    x1 = cols_used.argmax(dim=1)
    y2 = (height - 1) - rows_used.flip(1).argmax(dim=1)
    x2 = (width - 1) - cols_used.flip(1).argmax(dim=1)
    boxes = torch.stack((x1, y1, x2, y2), dim=1).to(torch.float32)  # (N, 4)
    is_empty = rows_used.sum(dim=1) == 0
    return torch.where(is_empty[:, None], torch.zeros_like(boxes), boxes)


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, image_size: tuple[int, int], *, padding: int = 1
) -> Tensor:
    """Resize each box-relative mask into its box and place it in an empty image.

    Reproduces torchvision's ``roi_heads.paste_masks_in_image`` (Mask R-CNN inference) for all
    masks at once: the ``(M, M)`` mask is zero-padded by ``padding`` on each side, its box is
    grown about its centre by ``(M + 2 * padding) / M`` and truncated to integer corners
    ``(x1, y1, x2, y2)``; the padded mask is bilinearly resized (``align_corners=False``) to
    ``(y2 - y1 + 1, x2 - x1 + 1)`` pixels, which land on image pixels ``x1..x2``, ``y1..y2``
    (inclusive); pixels outside that range or the image are 0. Boxes wholly outside the image
    give empty masks (torchvision raises there).

    Args:
        masks: ``(N, M, M)`` float mask probabilities in box coordinates.
        boxes: ``(N, 4)`` ``xyxy`` boxes in image pixels.
        image_size: ``(H, W)`` of the output image.
        padding: zero border added around each mask before resizing, in mask pixels.

    Returns:
        ``(N, H, W)`` masks in ``masks.dtype``.
    """
    _check_paste_inputs(masks, boxes, image_size, padding)
    height, width = int(image_size[0]), int(image_size[1])
    mask_size = masks.shape[-1]
    coord_dtype = torch.float64 if masks.dtype == torch.float64 else torch.float32
    padded = F.pad(masks.to(coord_dtype), (padding,) * 4)  # (N, P, P)
    src_size = mask_size + 2 * padding
    int_boxes = scale_boxes(boxes, src_size / mask_size).to(torch.int64)  # (N, 4)

    # Bilinear resizing is separable: pasted[n] = Ry[n] @ padded[n] @ Rx[n]^T, with Ry (H, P)
    # and Rx (W, P) holding each pixel's two taps (all-zero rows outside the box). Two batched
    # matrix products do every mask at once, x first as PyTorch's interpolation does.
    num_masks = masks.shape[0]
    x_pixels = torch.arange(width, device=boxes.device).expand(num_masks, width)
    y_pixels = torch.arange(height, device=boxes.device).expand(num_masks, height)
    resize_x = _resize_matrix(
        *_linear_taps(
            int_boxes[:, 0], int_boxes[:, 2], x_pixels, src_size=src_size, dtype=coord_dtype
        ),
        src_size=src_size,
    )  # (N, W, P)
    resize_y = _resize_matrix(
        *_linear_taps(
            int_boxes[:, 1], int_boxes[:, 3], y_pixels, src_size=src_size, dtype=coord_dtype
        ),
        src_size=src_size,
    )  # (N, H, P)
    along_x = torch.bmm(padded, resize_x.transpose(1, 2))  # (N, P, W)
    pasted = torch.bmm(resize_y, along_x)  # (N, H, W)
    return pasted.to(masks.dtype)


def paste_masks_where_sampled(
    masks: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    *,
    scale: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """Place each box-relative mask where Mask R-CNN's training targets sampled it: the inverse
    of :func:`~structvision.models.detection.mask_rcnn.mask_targets`.

    The targets come from RoIAlign with ``aligned=False`` on the network's input image, which
    reads that image's pixel ``k`` at continuous coordinate ``k`` (not ``k + 0.5``): cell ``j``
    of an ``M``-cell target over a box ``[x1, x2]`` holds the mask at input coordinate
    ``x1 + (j + 0.5) (x2 - x1) / M``, that is half an input pixel right of (and below) where the
    box's geometry puts it. Here image pixel ``k`` is read back from that same place: its
    centre, moved by half an input pixel, is located in the cell grid and interpolated
    bilinearly between the two nearest cell centres (the edge cells reach the box's edges);
    pixels whose moved centre lies outside the box are 0. A mask sampled from a true mask and
    pasted back gives the true mask (tested), where :func:`paste_masks_in_image`
    (torchvision's integer-box resizing) loses up to a pixel at every edge, which costs much
    of the mask AP at strict IoU on small objects.

    Args:
        masks: ``(N, M, M)`` float mask probabilities in box coordinates.
        boxes: ``(N, 4)`` ``xyxy`` boxes in image pixels.
        image_size: ``(H, W)`` of the output image.
        scale: ``(sy, sx)``, network input pixels per image pixel (the detector's resize), so
            that half an input pixel is ``0.5 / s`` image pixels.

    Returns:
        ``(N, H, W)`` masks in ``masks.dtype``.
    """
    _check_paste_inputs(masks, boxes, image_size, 0)
    height, width = int(image_size[0]), int(image_size[1])
    dtype = torch.float64 if masks.dtype == torch.float64 else torch.float32
    boxes = boxes.to(dtype)
    resize_x = _resize_matrix(
        *_taps_where_sampled(boxes[:, 0], boxes[:, 2], width, masks.shape[-1], scale[1]),
        src_size=masks.shape[-1],
    )  # (N, W, M)
    resize_y = _resize_matrix(
        *_taps_where_sampled(boxes[:, 1], boxes[:, 3], height, masks.shape[-1], scale[0]),
        src_size=masks.shape[-1],
    )  # (N, H, M)
    pasted = torch.bmm(resize_y, torch.bmm(masks.to(dtype), resize_x.transpose(1, 2)))
    return pasted.to(masks.dtype)


def _taps_where_sampled(
    start: Tensor, end: Tensor, length: int, cells: int, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps ``(idx0, idx1, weight0, weight1)``, each ``(N, length)``, reading image
    pixels ``0..length-1`` from the ``cells`` samples of boxes ``[start, end]`` (float ``(N,)``)
    as :func:`paste_masks_where_sampled` describes; weights 0 outside the boxes."""
    # the moved centre of pixel k: k + 0.5 - 0.5 / s, where input coordinate k s' reads
    place = torch.arange(length, dtype=start.dtype, device=start.device) + 0.5 - 0.5 / scale
    place = place.expand(len(start), length)
    # RoIAlign (aligned=False) treats boxes as at least one input pixel wide
    size = (end - start).clamp(min=1.0 / scale)[:, None]
    inside = (place >= start[:, None]) & (place <= start[:, None] + size)
    cell = ((place - start[:, None]) / size * cells - 0.5).clamp(0, cells - 1)
    idx0 = cell.floor().to(torch.int64)
    weight1 = cell - idx0.to(cell.dtype)
    idx1 = (idx0 + 1).clamp(max=cells - 1)
    zero = torch.zeros((), dtype=cell.dtype, device=cell.device)
    return (
        idx0,
        idx1,
        torch.where(inside, 1 - weight1, zero),
        torch.where(inside, weight1, zero),
    )


def _resize_matrix(
    idx0: Tensor, idx1: Tensor, weight0: Tensor, weight1: Tensor, *, src_size: int
) -> Tensor:
    """``(N, L, src_size)`` interpolation matrices from the ``(N, L)`` taps of `_linear_taps`."""
    matrix = weight0.new_zeros((*idx0.shape, src_size))
    matrix.scatter_add_(2, idx0[..., None], weight0[..., None])
    matrix.scatter_add_(2, idx1[..., None], weight1[..., None])
    return matrix


def _check_paste_inputs(
    masks: Tensor, boxes: Tensor, image_size: tuple[int, int], padding: int
) -> None:
    if not isinstance(masks, Tensor) or masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        shape = getattr(masks, "shape", type(masks).__name__)
        raise ValueError(
            f"masks must have shape (N, M, M) (squeeze the channel of (N, 1, M, M)), "
            f"got {tuple(shape)}"
        )
    if not masks.is_floating_point():
        raise ValueError(f"masks must be a floating tensor of probabilities, got {masks.dtype}")
    if masks.shape[0] > 0 and masks.shape[-1] == 0:
        raise ValueError(f"masks must have a positive size M, got {tuple(masks.shape)}")
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = getattr(boxes, "shape", type(boxes).__name__)
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(shape)}")
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(
            f"boxes must have one row per mask: masks {tuple(masks.shape)}, "
            f"boxes {tuple(boxes.shape)}"
        )
    if len(image_size) != 2 or int(image_size[0]) < 0 or int(image_size[1]) < 0:
        raise ValueError(f"image_size must be (H, W) with H, W >= 0, got {image_size!r}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")


def _linear_taps(
    start: Tensor, end: Tensor, pixels: Tensor, *, src_size: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one image axis for boxes covering pixels ``start..end`` (inclusive).

    A source of ``src_size`` samples is resized to ``end - start + 1`` pixels with
    ``align_corners=False``: output pixel ``j`` reads source coordinate
    ``max((j + 0.5) * src_size / length - 0.5, 0)``, split between two neighbouring samples.

    Args:
        start: ``(N,)`` int64 first pixel of each box.
        end: ``(N,)`` int64 last pixel of each box.
        pixels: ``(N, L)`` int64 image pixels at which to sample each box.

    Returns:
        ``(idx0, idx1, weight0, weight1)``, each ``(N, L)``: source indices and weights for
        those pixels; the weights are 0 outside ``start..end``.
    """
    length = end - start + 1  # (N,) pixels covered; <= 0 for an empty box
    local = pixels - start[:, None]  # (N, L) position inside the box
    inside = (local >= 0) & (local < length[:, None])

    src_scale = torch.full_like(length, src_size, dtype=dtype) / length.clamp(min=1).to(dtype)
    src = src_scale[:, None] * (local.to(dtype) + 0.5) - 0.5
    src = src.clamp(min=0)
    idx0 = src.to(torch.int64).clamp(max=src_size - 1)
    weight1 = (src - idx0.to(dtype)).clamp(0, 1)
    weight0 = 1 - weight1
    idx1 = (idx0 + 1).clamp(max=src_size - 1)
    zero = torch.zeros((), dtype=dtype, device=start.device)
    weight0 = torch.where(inside, weight0, zero)
    weight1 = torch.where(inside, weight1, zero)
    return idx0, idx1, weight0, weight1
