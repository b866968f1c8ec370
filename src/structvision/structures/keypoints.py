"""Keypoints: encoding into RoI heatmap targets and decoding heatmaps back to image points.

Keypoints are ``(N, K, 3)`` float tensors ``(x, y, visibility)`` in image pixels (COCO's
convention: visibility ``0`` = not labelled, ``1`` = labelled but hidden, ``2`` = visible; only
``> 0`` counts as a target). A RoI ``(x1, y1, x2, y2)`` is divided into ``S x S`` heatmap cells;
cell ``(i, j)`` covers ``[x1 + j * w / S, x1 + (j + 1) * w / S)`` horizontally (``w = x2 - x1``)
and likewise vertically. Discrete cell ``d`` and continuous position ``c`` relate by
``c = d + 0.5`` (Heckbert 1990), as in Detectron and torchvision's Keypoint R-CNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "heatmaps_to_keypoints",
    "keypoints_to_heatmap_distributions",
    "keypoints_to_heatmap_targets",
]


def keypoints_to_heatmap_targets(
    keypoints: Tensor, rois: Tensor, heatmap_size: int
) -> tuple[Tensor, Tensor]:
    """The heatmap cell of each keypoint inside its RoI, as a flat index for cross-entropy.

    Keypoint ``(x, y)`` falls in cell ``(floor((y - y1) * S / h), floor((x - x1) * S / w))``; a
    point exactly on the RoI's right (bottom) edge goes to the last column (row). A keypoint is
    a valid target when it is labelled (visibility ``> 0``) and its cell lies inside the RoI.
    The arithmetic is torchvision's ``keypoints_to_heatmap``.

    Args:
        keypoints: ``(N, K, 3)`` ``(x, y, visibility)`` in image pixels, one row per RoI.
        rois: ``(N, 4)`` ``xyxy`` RoIs in image pixels.
        heatmap_size: ``S``, cells per side of the heatmap (56 in Keypoint R-CNN).

    Returns:
        ``(target_idxs, valid)``: ``(N, K)`` int64 flat cell index ``row * S + col`` (``0``
        where not valid) and ``(N, K)`` bool validity.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (N, K, 3), got {tuple(keypoints.shape)}")
    if rois.ndim != 2 or rois.shape != (keypoints.shape[0], 4):
        raise ValueError(
            f"rois must have shape ({keypoints.shape[0]}, 4) (one per keypoint set), "
            f"got {tuple(rois.shape)}"
        )
    if heatmap_size <= 0:
        raise ValueError(f"heatmap_size must be positive, got {heatmap_size}")
    x1, y1, x2, y2 = (coord[:, None] for coord in rois.unbind(dim=1))  # each (N, 1)
    scale_x = heatmap_size / (x2 - x1)
    scale_y = heatmap_size / (y2 - y1)
    x, y = keypoints[..., 0], keypoints[..., 1]  # (N, K)
    cols = ((x - x1) * scale_x).floor().long()
    rows = ((y - y1) * scale_y).floor().long()
    cols[x == x2.expand_as(x)] = heatmap_size - 1
    rows[y == y2.expand_as(y)] = heatmap_size - 1
    inside = (cols >= 0) & (rows >= 0) & (cols < heatmap_size) & (rows < heatmap_size)
    valid = inside & (keypoints[..., 2] > 0)
    target_idxs = torch.where(valid, rows * heatmap_size + cols, torch.zeros_like(cols))
    return target_idxs, valid


def keypoints_to_heatmap_distributions(
    keypoints: Tensor, rois: Tensor, heatmap_size: int, sigma: float
) -> tuple[Tensor, Tensor]:
    """Each keypoint as a Gaussian distribution over its RoI's heatmap cells, centred exactly.

    The one-hot target of :func:`keypoints_to_heatmap_targets` moves a keypoint to its cell's
    centre, up to half a cell away, so a network trained on it cannot say where in the cell
    the keypoint lies. Here keypoint ``(x, y)`` sits at the continuous heatmap position
    ``u = (x - x1) * S / w``, ``v = (y - y1) * S / h`` and cell ``(i, j)`` (centre ``(j + 0.5,
    i + 0.5)``) gets probability proportional to ``exp(-((j + 0.5 - u)^2 + (i + 0.5 - v)^2) /
    (2 sigma^2))``, normalised over the map: the unbiased encoding of DARK (Zhang et al. 2020).
    A network that matches it has a log-heatmap that is a parabola with its vertex at the
    keypoint, which the sub-pixel decoding of :func:`heatmaps_to_keypoints` recovers. Validity
    is :func:`keypoints_to_heatmap_targets`'s.

    Args:
        keypoints: ``(N, K, 3)`` ``(x, y, visibility)`` in image pixels, one row per RoI.
        rois: ``(N, 4)`` ``xyxy`` RoIs in image pixels.
        heatmap_size: ``S``, cells per side of the heatmap.
        sigma: the Gaussian's standard deviation in cells, positive.

    Returns:
        ``(targets, valid)``: ``(N, K, S, S)`` float distributions (each sums to 1; zero where
        not valid) and ``(N, K)`` bool validity.
    """
    if not (isinstance(sigma, (int, float)) and 0 < sigma < float("inf")):
        raise ValueError(f"sigma must be a positive number of heatmap cells, got {sigma!r}")
    _, valid = keypoints_to_heatmap_targets(keypoints, rois, heatmap_size)
    x1, y1, x2, y2 = (coord[:, None] for coord in rois.unbind(dim=1))  # each (N, 1)
    u = (keypoints[..., 0] - x1) * (heatmap_size / (x2 - x1))  # (N, K)
    v = (keypoints[..., 1] - y1) * (heatmap_size / (y2 - y1))
    centres = torch.arange(heatmap_size, dtype=keypoints.dtype, device=keypoints.device) + 0.5
    log_x = -((centres - u[..., None]) ** 2) / (2 * sigma**2)  # (N, K, S)
    log_y = -((centres - v[..., None]) ** 2) / (2 * sigma**2)
    # separable: the x and y factors normalised apart (log-sum-exp keeps far-off points finite)
    prob_x = log_x.softmax(dim=-1)
    prob_y = log_y.softmax(dim=-1)
    targets = prob_y[..., :, None] * prob_x[..., None, :]  # (N, K, S, S)
    return torch.where(valid[..., None, None], targets, torch.zeros_like(targets)), valid


def heatmaps_to_keypoints(
    heatmaps: Tensor, rois: Tensor, *, subpixel: bool = False
) -> tuple[Tensor, Tensor]:
    """Decode each keypoint's heatmap into an image point and a score (torchvision's method).

    Each RoI's ``S x S`` maps are resized with bicubic interpolation to ``ceil(h) x ceil(w)``
    pixels (``w, h`` the RoI's size, at least 1); the argmax cell ``(row, col)`` of each map
    becomes ``x = x1 + (col + 0.5) * w / ceil(w)``, ``y = y1 + (row + 0.5) * h / ceil(h)``, and
    the resized map's value there is the keypoint's score. The resize runs RoI by RoI because
    every RoI has its own size.

    With ``subpixel`` the peak is found more precisely, as DARK (Zhang et al. 2020) does: the
    ``S x S`` maps are first smoothed with the 3x3 binomial kernel ``[1, 2, 1]^T [1, 2, 1] / 16``
    (edges replicated), which evens out the cell-to-cell noise of a predicted heatmap, and
    after the resize, along each axis, a parabola through the argmax and its two neighbours
    moves ``col`` (``row``) to its vertex, ``0.5 (left - right) / (left - 2 centre + right)``, by
    at most half a pixel (no move at the map's border or where the three values are not
    concave). Exact for a quadratic peak, which the smoothing keeps in place. The scores are
    then read from the smoothed maps.

    Args:
        heatmaps: ``(N, K, S, S)`` keypoint logits, one set of maps per RoI.
        rois: ``(N, 4)`` ``xyxy`` RoIs in image pixels.
        subpixel: smooth, then refine each peak to a fraction of a pixel (``False``:
            torchvision's).

    Returns:
        ``(keypoints, scores)``: ``(N, K, 3)`` ``(x, y, 1)`` in image pixels and ``(N, K)`` the
        resized heatmap's value at each keypoint (a logit, not a probability).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must have shape (N, K, S, S), got {tuple(heatmaps.shape)}")
    num_rois, num_keypoints = heatmaps.shape[:2]
    if rois.shape != (num_rois, 4):
        raise ValueError(f"rois must have shape ({num_rois}, 4), got {tuple(rois.shape)}")
    offset_x, offset_y = rois[:, 0], rois[:, 1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)  # (N,)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    map_widths = widths.ceil().long().tolist()
    map_heights = heights.ceil().long().tolist()
    keypoints = heatmaps.new_zeros((num_rois, num_keypoints, 3))
    scores = heatmaps.new_zeros((num_rois, num_keypoints))
    keypoint_idxs = torch.arange(num_keypoints, device=heatmaps.device)
    if subpixel and num_rois:
        heatmaps = _binomial_smooth(heatmaps)
    for roi in range(num_rois):
        map_h, map_w = map_heights[roi], map_widths[roi]
        roi_map = F.interpolate(
            heatmaps[roi][:, None], size=(map_h, map_w), mode="bicubic", align_corners=False
        )[:, 0]  # (K, map_h, map_w)
        best = roi_map.reshape(num_keypoints, -1).argmax(dim=1)  # (K,)
        cols = best % map_w
        rows = torch.div(best - cols, map_w, rounding_mode="floor")
        x, y = cols.to(keypoints.dtype), rows.to(keypoints.dtype)
        if subpixel:
            x = x + _vertex_offset(roi_map, keypoint_idxs, rows, cols, axis=2)
            y = y + _vertex_offset(roi_map, keypoint_idxs, rows, cols, axis=1)
        keypoints[roi, :, 0] = (x + 0.5) * (widths[roi] / map_w) + offset_x[roi]
        keypoints[roi, :, 1] = (y + 0.5) * (heights[roi] / map_h) + offset_y[roi]
        keypoints[roi, :, 2] = 1
        scores[roi] = roi_map[keypoint_idxs, rows, cols]
    return keypoints, scores


def _vertex_offset(maps: Tensor, idxs: Tensor, rows: Tensor, cols: Tensor, *, axis: int) -> Tensor:
    """``(K,)`` shift of each map's peak ``(rows, cols)`` along ``axis`` (1: rows, 2: columns)
    to the vertex of the parabola through it and its two neighbours, within half a pixel; 0 at
    the border and where the three values are not concave."""
    at = cols if axis == 2 else rows
    size = maps.shape[axis]
    inside = (at > 0) & (at < size - 1)
    before, after = (at - 1).clamp(min=0), (at + 1).clamp(max=size - 1)
    if axis == 2:
        left, right = maps[idxs, rows, before], maps[idxs, rows, after]
    else:
        left, right = maps[idxs, before, cols], maps[idxs, after, cols]
    centre = maps[idxs, rows, cols]
    curvature = left - 2 * centre + right
    concave = inside & (curvature < 0)
    shift = 0.5 * (left - right) / torch.where(concave, curvature, torch.ones_like(curvature))
    return torch.where(concave, shift.clamp(-0.5, 0.5), torch.zeros_like(shift))


def _binomial_smooth(maps: Tensor) -> Tensor:
    """``(N, K, S, S)`` maps convolved with ``[1, 2, 1]^T [1, 2, 1] / 16``, edges replicated."""
    num_rois, num_keypoints, height, width = maps.shape
    taps = maps.new_tensor([1.0, 2.0, 1.0])
    kernel = (taps[:, None] * taps[None, :] / 16)[None, None]
    flat = F.pad(maps.reshape(-1, 1, height, width), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(flat, kernel).reshape(num_rois, num_keypoints, height, width)
