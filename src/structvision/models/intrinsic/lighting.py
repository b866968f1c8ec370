"""Global Lambertian lighting fitted to a per-pixel shading, and the shading re-rendered from it.

A per-pixel shading network decides the brightness of each region on its own, so distant
regions can disagree about the light (a wall a little too bright against the floor), which
pairwise reflectance judgements (WHDR) read directly. Under ``world``'s light (ambient plus
directional sources with hard shadows, Lambertian surfaces) the shading is a structured
output: with unit normals ``n`` it is one of a few levels per pixel,

    S(p) = ambient + sum_k color_k * max(0, <n(p), d_k>) * v_k(p),   v_k(p) in {0, 1},

or 1 on the (emissive) sky. :func:`fit_lighting` estimates the ``ambient (3,)``, the unit
directions towards the lights ``d_k`` and their colours from a predicted shading and normals:
the visibility of each sampled pixel is the level that explains it best, and the parameters
minimise the mean of that best L1 error of the log shading, by Adam from several starts.
:func:`relight_shading` then gives every pixel its best level under the fitted light: the
predicted shading says only which level (lit, shadowed by a light, sky), the light says how
bright that level is, the same everywhere in the image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Lighting", "RelitIntrinsic", "fit_lighting", "relight_shading", "shading_levels"]

_EPS = 1e-4


@dataclass(frozen=True)
class Lighting:
    """``ambient (3,)``, ``directions (K, 3)`` unit vectors towards the lights in the normals'
    frame, ``colors (K, 3)`` the lights' intensities per channel."""

    ambient: Tensor
    directions: Tensor
    colors: Tensor

    def __post_init__(self) -> None:
        if self.ambient.shape != (3,):
            raise ValueError(
                f"Lighting: ambient must have shape (3,), got {tuple(self.ambient.shape)}"
            )
        count = self.directions.shape[0] if self.directions.ndim == 2 else -1
        if self.directions.shape != (count, 3) or self.colors.shape != (count, 3):
            raise ValueError(
                "Lighting: directions and colors must both have shape (K, 3), got "
                f"{tuple(self.directions.shape)} and {tuple(self.colors.shape)}"
            )


def _visibility_patterns(count: int) -> Tensor:
    """``(2^K, K)``: every on/off combination of ``K`` lights."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=count))).reshape(-1, count)


def _levels(normals: Tensor, lighting: Lighting) -> Tensor:
    """``normals (P, 3)`` unit -> ``(P, 2^K + 1, 3)``: the shading of every visibility pattern,
    then the sky's 1."""
    return _batched_levels(
        normals, lighting.ambient[None], lighting.directions[None], lighting.colors[None]
    )[0]


def _batched_levels(normals: Tensor, ambient: Tensor, directions: Tensor, colors: Tensor) -> Tensor:
    """:func:`_levels` for ``R`` lightings at once: ``ambient (R, 3)``, ``directions`` and
    ``colors (R, K, 3)`` -> ``(R, P, 2^K + 1, 3)``."""
    patterns = _visibility_patterns(directions.shape[1]).to(normals)
    cosine = (normals @ directions.transpose(1, 2)).clamp(min=0)  # (R, P, K)
    direct = (cosine[:, :, None, :] * patterns) @ colors[:, None]  # (R, P, 2^K, 3)
    sky = torch.ones_like(direct[:, :, :1])
    return torch.cat([ambient[:, None, None] + direct, sky], dim=2)


def _check(shading: Tensor, normals: Tensor) -> None:
    if shading.ndim != 3 or shading.shape[0] not in (1, 3):
        raise ValueError(f"shading must be (3, H, W) or (1, H, W), got {tuple(shading.shape)}")
    if normals.ndim != 3 or normals.shape[0] != 3 or normals.shape[1:] != shading.shape[1:]:
        raise ValueError(
            f"normals must be (3, H, W) with the shading's size {tuple(shading.shape[1:])}, "
            f"got {tuple(normals.shape)}"
        )


def _pixels(shading: Tensor, normals: Tensor) -> tuple[Tensor, Tensor]:
    """``(P, 3)`` log shading (grey shading repeated) and ``(P, 3)`` unit normals."""
    log_shading = shading.float().clamp(min=_EPS).log().expand(3, -1, -1).reshape(3, -1).T
    unit = F.normalize(normals.float().reshape(3, -1).T, dim=1)
    return log_shading, unit


def shading_levels(normals: Tensor, lighting: Lighting) -> Tensor:
    """``normals (3, H, W)`` -> ``(2^K + 1, 3, H, W)``: the shading every pixel would have under
    each visibility pattern of the ``K`` lights (pattern ``i``'s bits, first light most
    significant), then 1 (sky)."""
    height, width = normals.shape[-2:]
    unit = F.normalize(normals.float().reshape(3, -1).T, dim=1)
    return _levels(unit, lighting).permute(1, 2, 0).reshape(-1, 3, height, width)


def fit_lighting(
    shading: Tensor,
    normals: Tensor,
    *,
    num_lights: int = 1,
    samples: int = 1500,
    restarts: int = 4,
    steps: int = 100,
    seed: int = 0,
) -> Lighting:
    """Fit ambient and ``num_lights`` directional lights to ``shading (3 or 1, H, W)`` (positive)
    with ``normals (3, H, W)`` (module docstring), on ``samples`` random pixels, the best of
    ``restarts`` Adam runs of ``steps`` steps; deterministic for a ``seed``."""
    _check(shading, normals)
    if num_lights < 1:
        raise ValueError(f"num_lights must be at least 1, got {num_lights}")
    # the fit needs autograd even when called under inference_mode (an evaluation loop)
    with torch.inference_mode(False), torch.enable_grad():
        log_shading, unit = _pixels(shading.detach().cpu().clone(), normals.detach().cpu().clone())
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randint(0, log_shading.shape[0], (samples,), generator=generator)
        log_shading, unit = log_shading[pick], unit[pick]
        # all restarts at once: Adam is per element, so the summed loss optimises each alone
        start = torch.randn(restarts, num_lights, 3, generator=generator)
        start[..., 1] = -start[..., 1].abs()  # y points down: start with lights above
        direction = start.requires_grad_()
        color_logit = torch.full((restarts, num_lights, 3), -1.0, requires_grad=True)
        ambient_logit = torch.full((restarts, 3), -1.0, requires_grad=True)
        optimizer = torch.optim.Adam([direction, color_logit, ambient_logit], lr=0.05)

        def errors() -> Tensor:  # (R,): each restart's mean best log L1 error
            levels = _batched_levels(
                unit,
                torch.sigmoid(ambient_logit),
                F.normalize(direction, dim=2),
                torch.sigmoid(color_logit),
            )
            return (levels.log() - log_shading[:, None]).abs().sum(-1).amin(-1).mean(-1)

        for _ in range(steps):
            loss = errors().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            winner = int(errors().argmin())
            return Lighting(
                torch.sigmoid(ambient_logit[winner]),
                F.normalize(direction[winner], dim=1),
                torch.sigmoid(color_logit[winner]),
            )


def relight_shading(
    shading: Tensor,
    normals: Tensor,
    lighting: Lighting | None = None,
    *,
    num_lights: int = 1,
    smooth: int = 3,
) -> Tensor:
    """``shading (C, H, W)`` (``C`` 3 or 1) -> the same shape and dtype (at least 1e-4): each
    pixel's shading level under ``lighting`` (fitted with :func:`fit_lighting` when not given)
    that is nearest the given shading in log L1, the errors first averaged over ``smooth x
    smooth`` neighbourhoods (odd; 1: per pixel) so that the choice of level is locally coherent.
    A grey shading is fitted as three equal channels and returned as their mean."""
    _check(shading, normals)
    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth must be a positive odd number, got {smooth}")
    if lighting is None:
        lighting = fit_lighting(shading, normals, num_lights=num_lights)
    height, width = shading.shape[-2:]
    device = shading.device
    log_shading, unit = _pixels(shading.detach().cpu(), normals.detach().cpu())
    lighting = Lighting(
        *(
            t.detach().float().cpu()
            for t in (lighting.ambient, lighting.directions, lighting.colors)
        )
    )
    levels = _levels(unit, lighting)  # (P, L, 3)
    error = (levels.clamp(min=_EPS).log() - log_shading[:, None]).abs().sum(-1)  # (P, L)
    if smooth > 1:
        maps = error.T.reshape(1, -1, height, width)
        maps = F.avg_pool2d(maps, smooth, stride=1, padding=smooth // 2, count_include_pad=False)
        error = maps.reshape(-1, height * width).T
    choice = error.argmin(1)
    relit = (
        levels[torch.arange(levels.shape[0]), choice].clamp(min=_EPS).T.reshape(3, height, width)
    )
    if shading.shape[0] == 1:
        relit = relit.mean(0, keepdim=True)
    return relit.to(device=device, dtype=shading.dtype)


class RelitIntrinsic(nn.Module):
    """An intrinsic network followed by :func:`relight_shading` with another network's normals
    (a ``normals`` model), in eval mode: ``model(images)`` gives each image's ``albedo`` (the
    image over the relit shading when the intrinsic network returns it that way, else its own),
    the relit ``shading`` and the ``normals`` used."""

    def __init__(self, intrinsic: nn.Module, normals: nn.Module, *, num_lights: int = 1) -> None:
        super().__init__()
        self.intrinsic = intrinsic
        self.normals = normals
        self.num_lights = num_lights

    @torch.no_grad()
    def forward(self, images, targets=None) -> list[dict[str, Tensor]]:
        images = list(images)
        predictions = self.intrinsic(images)
        normals = self.normals(images)
        from_image = getattr(self.intrinsic, "albedo_from_image", False)
        results = []
        for image, prediction, normal in zip(images, predictions, normals, strict=True):
            relit = relight_shading(
                prediction["shading"], normal["normals"], num_lights=self.num_lights
            )
            albedo = image.to(relit) / relit if from_image else prediction["albedo"]
            results.append({"albedo": albedo, "shading": relit, "normals": normal["normals"]})
        return results
