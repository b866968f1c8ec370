"""Baselines for normals and intrinsic images.

* :func:`normals_from_depth`: the camera-frame normal of the surface a depth map describes,
  from the cross product of the back-projected points' differences along the image axes
  (central differences inside, one-sided at the borders), turned to face the camera. With the
  true depth it is the geometry's own answer; with a predicted depth (Monodepth) a baseline.
* :func:`retinex`: Land & McCann's Retinex as Grosse et al. (2009) benchmark it: gradients of the
  log image whose magnitude exceeds ``threshold`` are reflectance changes, the others shading;
  the reflectance gradients are integrated by a least-squares (Poisson) solve with mirrored
  boundaries, and shading is the rest: ``log S = log I - log R``.
* :func:`poisson_integrate`: that solve, exact for a gradient field (up to a constant).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["normals_from_depth", "poisson_integrate", "retinex"]


def normals_from_depth(depth: Tensor, intrinsics: Tensor) -> tuple[Tensor, Tensor]:
    """``depth (H, W)`` (camera ``Z``; pixel centres at ``+0.5``) and ``intrinsics (3, 3)`` ->
    ``(normals (3, H, W) unit, valid (H, W))``; valid where the depth and its neighbours are
    finite and positive."""
    height, width = depth.shape
    depth = depth.double()
    k = intrinsics.double()
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    points = torch.stack(
        [(xs - k[0, 2]) / k[0, 0] * depth, (ys - k[1, 2]) / k[1, 1] * depth, depth]
    )
    along_y, along_x = torch.gradient(points, dim=(1, 2))
    normals = torch.cross(along_y, along_x, dim=0)  # faces the camera for y down, x right
    normals = torch.nn.functional.normalize(normals, dim=0)
    flip = (normals * points).sum(0) > 0
    normals = torch.where(flip, -normals, normals)
    good = torch.isfinite(depth) & (depth > 0)
    valid = good.clone()
    valid[1:] &= good[:-1]
    valid[:-1] &= good[1:]
    valid[:, 1:] &= good[:, :-1]
    valid[:, :-1] &= good[:, 1:]
    valid &= torch.isfinite(normals).all(0)
    return torch.where(valid, normals, 0.0).float(), valid


def poisson_integrate(grad_x: Tensor, grad_y: Tensor) -> Tensor:
    """The ``(H, W)`` field whose forward differences best match ``grad_x (H, W)`` (``f[:, j+1] -
    f[:, j]``, last column ignored) and ``grad_y``, with zero mean: a least-squares solve of
    ``laplace(f) = div(g)`` with Neumann boundaries, done by mirroring and the FFT."""
    height, width = grad_x.shape
    gx, gy = grad_x.double().clone(), grad_y.double().clone()
    gx[:, -1] = 0
    gy[-1, :] = 0
    divergence = gx.clone()
    divergence[:, 1:] -= gx[:, :-1]
    divergence += gy
    divergence[1:, :] -= gy[:-1, :]
    mirrored = torch.cat([divergence, divergence.flip(0)], 0)
    mirrored = torch.cat([mirrored, mirrored.flip(1)], 1)  # even extension: Neumann boundaries
    rows, cols = mirrored.shape
    fy = torch.arange(rows, dtype=torch.float64)
    fx = torch.arange(cols, dtype=torch.float64)
    eigen = (2 * torch.cos(2 * math.pi * fy / rows) - 2)[:, None] + (
        2 * torch.cos(2 * math.pi * fx / cols) - 2
    )[None]
    eigen[0, 0] = 1.0
    spectrum = torch.fft.fft2(mirrored) / eigen
    spectrum[0, 0] = 0
    field = torch.fft.ifft2(spectrum).real[:height, :width]
    return field - field.mean()


def retinex(image: Tensor, *, threshold: float = 0.075) -> tuple[Tensor, Tensor]:
    """``image (3, H, W)`` in ``(0, 1]`` -> ``(albedo (3, H, W), shading (1, H, W))`` (module
    docstring). The shading is grey; the albedo keeps the image's chromaticity."""
    intensity = image.double().mean(0).clamp(min=1e-4)
    log_i = torch.log(intensity)
    grad_x = torch.zeros_like(log_i)
    grad_y = torch.zeros_like(log_i)
    grad_x[:, :-1] = log_i[:, 1:] - log_i[:, :-1]
    grad_y[:-1, :] = log_i[1:, :] - log_i[:-1, :]
    keep_x = grad_x.abs() > threshold
    keep_y = grad_y.abs() > threshold
    log_r = poisson_integrate(grad_x * keep_x, grad_y * keep_y)
    log_s = log_i - log_r
    log_s = log_s - log_s.max()  # shading at most 1: the brightest point is lit fully
    shading = torch.exp(log_s)
    albedo = image.double() / shading.clamp(min=1e-4)
    return albedo.float(), shading[None].float()
