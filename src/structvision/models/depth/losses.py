"""Losses of Monodepth (Godard, Mac Aodha & Brostow, CVPR 2017), as plain functions.

**Disparity convention.** A disparity map here is ``(B, 1, H, W)`` float, a *fraction of the
image width* ``W`` (Monodepth's convention), so the same map is valid at every scale of a
pyramid: ``d * W`` pixels on a ``W``-pixels-wide image. For a rectified stereo pair with the
right camera to the right of the left one, a scene point at column ``x`` of the left image is
at column ``x - d_left(x) * W`` of the right image, so

* ``left(x)  = right(x - d_left(x) * W)``  -> :func:`reconstruct_left`
* ``right(x) = left(x + d_right(x) * W)``  -> :func:`reconstruct_right`

and both are :func:`warp_horizontal`, which samples an image at ``x - d * W``.

**Pixel coordinates.** Column ``x = 0 .. W - 1`` is the *centre* of pixel ``x``. The warp uses
``grid_sample(..., align_corners=False)`` with the matching normalisation
``u = (2 * x + 1) / W - 1``, so an integer pixel shift reproduces whole columns exactly (up to
float rounding) and the grid is the one ``F.interpolate(..., align_corners=False)`` uses for
the image pyramid. Sampling is bilinear (linear along ``x``; rows are hit exactly) with
``padding_mode="border"``: a source column left of 0 or right of ``W - 1`` takes the edge
column's value.

The total loss :func:`monodepth_loss` is the paper's eq. (1) summed over 4 scales:
appearance matching (SSIM + L1) of both reconstructed views, edge-aware disparity smoothness
weighted by ``1 / 2 ** s`` at scale ``s`` (as the authors' code; its smoothness term only
used the x gradients through a list-concatenation slip, here both x and y count), and
left-right disparity consistency.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SSIM_C1",
    "SSIM_C2",
    "appearance_loss",
    "lr_consistency_loss",
    "monodepth_loss",
    "reconstruct_left",
    "reconstruct_right",
    "smoothness_loss",
    "ssim",
    "supervised_depth_loss",
    "warp_horizontal",
]

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _check_pair(image: Tensor, disparity: Tensor, names: tuple[str, str]) -> None:
    if image.dim() != 4:
        raise ValueError(f"{names[0]} must have shape (B, C, H, W), got {tuple(image.shape)}")
    expected = (image.shape[0], 1, *image.shape[-2:])
    if tuple(disparity.shape) != expected:
        raise ValueError(
            f"{names[1]} must have shape (B, 1, H, W) = {expected} (its image's B, H, W), "
            f"got {tuple(disparity.shape)}"
        )


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity map of ``x`` and ``y``, both ``(B, C, H, W)`` -> ``(B, C, H, W)``.

    As Monodepth/monodepth2: local means, variances and covariance are 3x3 averages (stride
    1) of the reflection-padded inputs, so the map is *padded* (same size as the input; the
    original Monodepth used unpadded "valid" pooling and lost a 1-pixel border). Variances are
    the population ones (divide by 9). ``C1 = 0.01 ** 2``, ``C2 = 0.03 ** 2`` (images in
    ``[0, 1]``). Values lie in ``[-1, 1]``, 1 where the windows are identical.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"x and y must both be (B, C, H, W) of the same shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return numerator / denominator


def appearance_loss(pred: Tensor, target: Tensor, alpha: float = 0.85) -> Tensor:
    """Photometric reconstruction error, a scalar:
    ``mean(alpha * clamp((1 - SSIM) / 2, 0, 1) + (1 - alpha) * |pred - target|)`` over
    ``(B, C, H, W)`` (the paper's eq. (2))."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    dissimilarity = ((1 - ssim(pred, target)) / 2).clamp(0, 1)  # (B, C, H, W)
    return (alpha * dissimilarity + (1 - alpha) * (pred - target).abs()).mean()


def warp_horizontal(image: Tensor, disparity: Tensor) -> Tensor:
    """Sample ``image (B, C, H, W)`` at ``(x - disparity * W, y)`` for every pixel ``(x, y)``.

    ``disparity (B, 1, H, W)`` is a fraction of the width ``W`` (positive = sample to the
    left). Bilinear, edge values outside the image, differentiable in ``image`` and
    ``disparity``; see the module docstring for the pixel-centre convention.
    """
    _check_pair(image, disparity, ("image", "disparity"))
    _, _, height, width = image.shape
    xs = torch.arange(width, dtype=disparity.dtype, device=disparity.device)  # (W,)
    ys = torch.arange(height, dtype=disparity.dtype, device=disparity.device)  # (H,)
    source_x = xs - disparity[:, 0] * width  # (B, H, W) pixels
    grid_x = (2 * source_x + 1) / width - 1
    grid_y = ((2 * ys + 1) / height - 1)[None, :, None].expand_as(grid_x)
    grid = torch.stack([grid_x, grid_y], dim=-1)  # (B, H, W, 2) in [-1, 1]
    return F.grid_sample(
        image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )


def reconstruct_left(right_image: Tensor, disp_left: Tensor) -> Tensor:
    """The left view rebuilt from the right one: ``left(x) = right(x - d_left(x) * W)``."""
    return warp_horizontal(right_image, disp_left)


def reconstruct_right(left_image: Tensor, disp_right: Tensor) -> Tensor:
    """The right view rebuilt from the left one: ``right(x) = left(x + d_right(x) * W)``."""
    return warp_horizontal(left_image, -disp_right)


def smoothness_loss(disp: Tensor, image: Tensor) -> Tensor:
    """Edge-aware smoothness, a scalar (the paper's eq. (3)):
    ``mean(|dx disp| * exp(-mean_c |dx image|)) + mean(|dy disp| * exp(-mean_c |dy image|))``.

    ``disp (B, 1, H, W)``, ``image (B, C, H, W)`` of the same view and size; ``dx``/``dy`` are
    forward differences (``W - 1`` resp. ``H - 1`` of them), so ``H, W >= 2``.
    """
    _check_pair(image, disp, ("image", "disp"))
    if image.shape[-1] < 2 or image.shape[-2] < 2:
        raise ValueError(f"smoothness_loss needs H, W >= 2, got {tuple(image.shape[-2:])}")
    disp_dx = disp[..., :, :-1] - disp[..., :, 1:]  # (B, 1, H, W - 1)
    disp_dy = disp[..., :-1, :] - disp[..., 1:, :]  # (B, 1, H - 1, W)
    weight_x = torch.exp(-(image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True))
    weight_y = torch.exp(-(image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True))
    return (disp_dx.abs() * weight_x).mean() + (disp_dy.abs() * weight_y).mean()


def lr_consistency_loss(disp_left: Tensor, disp_right: Tensor) -> Tensor:
    """Left-right disparity consistency, a scalar (the paper's eq. (4) and its mirror):
    ``mean|d_l - d_r(x - d_l * W)| + mean|d_r - d_l(x + d_r * W)|``; both ``(B, 1, H, W)``."""
    if disp_left.shape != disp_right.shape:
        raise ValueError(
            f"disp_left and disp_right must have the same shape, got {tuple(disp_left.shape)} "
            f"and {tuple(disp_right.shape)}"
        )
    right_to_left = reconstruct_left(disp_right, disp_left)  # d_r seen from the left view
    left_to_right = reconstruct_right(disp_left, disp_right)
    return (right_to_left - disp_left).abs().mean() + (left_to_right - disp_right).abs().mean()


def _resized(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image, size=size, mode="area")


def monodepth_loss(
    disp_pyramid_left: Sequence[Tensor],
    disp_pyramid_right: Sequence[Tensor],
    left: Tensor,
    right: Tensor,
    *,
    appearance_weight: float = 1.0,
    smoothness_weight: float = 0.1,
    lr_weight: float = 1.0,
    alpha: float = 0.85,
    lr_consistency: bool = True,
) -> dict[str, Tensor]:
    """Monodepth's self-supervised stereo loss, summed over scales and both views.

    Args:
        disp_pyramid_left, disp_pyramid_right: disparities ``(B, 1, H_s, W_s)`` of the left
            and the right view (fractions of the width), ordered from scale ``s = 0`` (the
            finest, usually the images' size) to the coarsest (usually ``H / 2 ** s``).
        left, right: the stereo pair ``(B, C, H, W)`` in ``[0, 1]``; at each scale they are
            area-downsampled to the disparity's size.
        appearance_weight, smoothness_weight, lr_weight: ``alpha_ap``, ``alpha_ds``,
            ``alpha_lr``; the smoothness term of scale ``s`` is further divided by ``2 ** s``.
        alpha: SSIM share of :func:`appearance_loss`.
        lr_consistency: include the left-right consistency term.

    Returns:
        ``{"loss_appearance", "loss_smoothness", "loss_lr"}`` scalars, already weighted (their
        sum is the total loss); no ``loss_lr`` when ``lr_consistency`` is False.
    """
    if len(disp_pyramid_left) != len(disp_pyramid_right) or not disp_pyramid_left:
        raise ValueError(
            "disp_pyramid_left and disp_pyramid_right must hold the same number (>= 1) of "
            f"scales, got {len(disp_pyramid_left)} and {len(disp_pyramid_right)}"
        )
    if left.shape != right.shape or left.dim() != 4:
        raise ValueError(
            f"left and right must both be (B, C, H, W) of the same shape, got "
            f"{tuple(left.shape)} and {tuple(right.shape)}"
        )
    appearance = smoothness = lr = left.new_zeros(())
    for scale, (disp_left, disp_right) in enumerate(
        zip(disp_pyramid_left, disp_pyramid_right, strict=True)
    ):
        size = (int(disp_left.shape[-2]), int(disp_left.shape[-1]))
        left_s, right_s = _resized(left, size), _resized(right, size)  # (B, C, H_s, W_s)
        left_est = reconstruct_left(right_s, disp_left)
        right_est = reconstruct_right(left_s, disp_right)
        appearance = appearance + appearance_loss(left_est, left_s, alpha)
        appearance = appearance + appearance_loss(right_est, right_s, alpha)
        smooth_s = smoothness_loss(disp_left, left_s) + smoothness_loss(disp_right, right_s)
        smoothness = smoothness + smooth_s / 2**scale
        if lr_consistency:
            lr = lr + lr_consistency_loss(disp_left, disp_right)
    losses = {
        "loss_appearance": appearance_weight * appearance,
        "loss_smoothness": smoothness_weight * smoothness,
    }
    if lr_consistency:
        losses["loss_lr"] = lr_weight * lr
    return losses


def supervised_depth_loss(
    disp_pyramid: Sequence[Tensor],
    gt_disparity: Tensor,
    valid: Tensor | None = None,
    *,
    weight: float = 1.0,
) -> dict[str, Tensor]:
    """L1 between predicted and true disparity on the valid pixels, averaged over scales.

    As monodepth2, every scale's prediction is first upsampled (bilinear,
    ``align_corners=False``) to the full resolution; since disparities are fractions of the
    width no rescaling of the values is needed.

    Args:
        disp_pyramid: predicted disparities ``(B, 1, H_s, W_s)`` (fractions of the width).
        gt_disparity: ``(B, H, W)`` true disparity, a fraction of the width (pixels / W).
        valid: ``(B, H, W)`` bool, the pixels with a true disparity; ``gt_disparity > 0`` if
            omitted.
        weight: factor of the loss.

    Returns:
        ``{"loss_supervised": weight * mean_s mean_valid |pred_s - gt|}``; a zero that still
        depends on the predictions when no pixel is valid.
    """
    if gt_disparity.dim() != 3:
        raise ValueError(f"gt_disparity must be (B, H, W), got {tuple(gt_disparity.shape)}")
    if valid is None:
        valid = gt_disparity > 0
    if valid.shape != gt_disparity.shape:
        raise ValueError(
            f"valid must have gt_disparity's shape {tuple(gt_disparity.shape)}, "
            f"got {tuple(valid.shape)}"
        )
    if not disp_pyramid:
        raise ValueError("disp_pyramid must hold at least one scale")
    size = (int(gt_disparity.shape[-2]), int(gt_disparity.shape[-1]))
    valid = valid.bool()
    any_valid = bool(valid.any())
    total = gt_disparity.new_zeros(())
    for disp in disp_pyramid:
        if disp.dim() != 4 or disp.shape[:2] != (gt_disparity.shape[0], 1):
            raise ValueError(
                f"disp_pyramid entries must be (B, 1, H_s, W_s) with B = "
                f"{gt_disparity.shape[0]}, got {tuple(disp.shape)}"
            )
        if tuple(disp.shape[-2:]) != size:
            disp = F.interpolate(disp, size=size, mode="bilinear", align_corners=False)
        error = (disp[:, 0] - gt_disparity).abs()  # (B, H, W)
        total = total + (error[valid].mean() if any_valid else error.sum() * 0.0)
    return {"loss_supervised": weight * total / len(disp_pyramid)}
