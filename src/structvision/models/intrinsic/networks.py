"""A multi-scale dense network in Eigen & Fergus's style (ICCV 2015), with task heads.

    image -> small trunk -> c2 (1/4) ... c5 (1/32)
    scale 1 (global): c5 -> two 1x1 convolutions over the whole coarse map, global average
                      features broadcast back (the paper's fully connected layers, made
                      size-independent) -> upsampled to 1/4
    scale 2 (1/4):    [c2, scale 1] -> 4 conv3x3 -> a first prediction of every head
    scale 3 (1/2):    [conv features of the image at 1/2, scale 2's predictions upsampled]
                      -> 4 conv3x3 -> the final prediction, upsampled bilinearly to the input

Heads: ``normals`` (3 channels, unit length), ``depth`` (positive, metres: ``exp`` of the
output), ``albedo`` (3) and ``shading`` (3 for coloured light as in ``world``, or 1), both
positive (``exp``). :class:`NormalsNet` trains
with the negative-cosine loss (plus the scale-invariant depth loss when it predicts depth);
:class:`IntrinsicNet` with scale-invariant log losses on albedo and shading, the
reconstruction term and, given judgements, the ordinal reflectance loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.backbones import small_backbone
from structvision.models.intrinsic.lighting import relight_shading
from structvision.models.intrinsic.losses import (
    normal_loss,
    ordinal_reflectance_loss,
    reconstruction_loss,
    scale_invariant_log_loss,
)

__all__ = ["IntrinsicNet", "MultiScaleDense", "NormalsNet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _block(in_channels: int, out_channels: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    for index in range(layers):
        modules += [
            nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, padding=1),
            nn.GroupNorm(min(8, out_channels), out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*modules)


class MultiScaleDense(nn.Module):
    """The three-scale network (module docstring); ``heads`` maps a name to its channels."""

    def __init__(self, heads: Mapping[str, int], *, width: int = 32) -> None:
        super().__init__()
        self.heads = dict(heads)
        self.trunk = small_backbone(width=width, norm="group", returned_layers=(1, 2, 3, 4))
        c2, c5 = width, width * 8
        hidden = width * 4
        total = sum(self.heads.values())
        self.global_scale = nn.Sequential(
            nn.Conv2d(c5, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
        )
        self.scale2 = _block(c2 + 2 * hidden, hidden, 4)
        self.predict2 = nn.Conv2d(hidden, total, 3, padding=1)
        self.image_half = _block(3, width, 1)
        self.scale3 = _block(width + total, width * 2, 4)
        self.predict3 = nn.Conv2d(width * 2, total, 3, padding=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def raw(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> raw outputs at scale 2 (1/4) and the final ones at
        full size, channels in ``heads`` order (``H``, ``W`` multiples of 32 after padding)."""
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % 32, -width % 32
        x = F.pad((images - self.mean) / self.std, (0, pad_w, 0, pad_h), mode="replicate")
        maps = self.trunk(x)
        coarse = self.global_scale(maps["c5"])
        pooled = coarse.mean(dim=(2, 3), keepdim=True).expand_as(coarse)
        quarter = maps["c2"].shape[-2:]
        scale1 = F.interpolate(
            torch.cat([coarse, pooled], 1), size=quarter, mode="bilinear", align_corners=False
        )
        second = self.predict2(self.scale2(torch.cat([maps["c2"], scale1], 1)))
        half = self.image_half(F.avg_pool2d(x, 2))
        third = self.scale3(
            torch.cat(
                [
                    half,
                    F.interpolate(
                        second, size=half.shape[-2:], mode="bilinear", align_corners=False
                    ),
                ],
                1,
            )
        )
        final = F.interpolate(
            self.predict3(third), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return second, final[..., :height, :width]

    def split(self, raw: Tensor) -> dict[str, Tensor]:
        """Raw channels -> named outputs (normals unit, the others positive)."""
        outputs, start = {}, 0
        for name, channels in self.heads.items():
            part = raw[:, start : start + channels]
            start += channels
            outputs[name] = (
                F.normalize(part, dim=1) if name == "normals" else torch.exp(part.clamp(-10, 10))
            )
        return outputs


def _stack(images: Any) -> Tensor:
    return images if isinstance(images, Tensor) and images.ndim == 4 else torch.stack(list(images))


def _target_stack(targets: Sequence[dict], key: str, device: torch.device) -> Tensor:
    values = [t[key] for t in targets]
    stacked = torch.stack([v if v.ndim == 3 else v[None] for v in values]).to(device).float()
    return stacked


class NormalsNet(MultiScaleDense):
    """Surface normals (and depth with ``with_depth=True``, from the same trunk)."""

    def __init__(
        self, *, width: int = 32, with_depth: bool = False, depth_weight: float = 0.5
    ) -> None:
        super().__init__({"normals": 3, **({"depth": 1} if with_depth else {})}, width=width)
        self.depth_weight = depth_weight

    def forward(self, images: Any, targets: Sequence[dict] | None = None):
        batch = _stack(images)
        second, final = self.raw(batch)
        if not self.training:
            outputs = self.split(final)
            return [
                {k: v[i] if k == "normals" else v[i, 0] for k, v in outputs.items()}
                for i in range(len(batch))
            ]
        if targets is None:
            raise ValueError("targets must be given in training mode")
        gt = _target_stack(targets, "normals", batch.device)
        losses = {}
        for weight, raw in ((0.5, second), (1.0, final)):
            outputs = self.split(raw)
            size = raw.shape[-2:]
            gt_s = F.interpolate(gt, size=size, mode="nearest") if size != gt.shape[-2:] else gt
            valid_s = gt_s.norm(dim=1) > 0.5
            losses["loss_normals"] = losses.get("loss_normals", 0) + weight * normal_loss(
                outputs["normals"], gt_s, valid_s
            )
            if "depth" in outputs:
                depth = _target_stack(targets, "depth", batch.device)
                depth_s = (
                    F.interpolate(depth, size=size, mode="nearest")
                    if size != depth.shape[-2:]
                    else depth
                )
                mask = (depth_s[:, 0] > 0) & torch.isfinite(depth_s[:, 0])
                term = scale_invariant_log_loss(outputs["depth"], depth_s, mask, lam=0.5)
                losses["loss_depth"] = (
                    losses.get("loss_depth", 0) + weight * self.depth_weight * term
                )
        return losses


class IntrinsicNet(MultiScaleDense):
    """Albedo and shading whose product reconstructs the image (module docstring).

    With ``albedo_from_image`` (the default) the albedo returned in eval mode is the input image
    divided by the predicted shading, so that ``image = albedo * shading`` holds exactly and the
    albedo keeps the image's full-resolution detail, which the final scale (half resolution,
    upsampled) blurs; the albedo head is still trained and shapes the shared features. Measured
    on held-out ``world`` in BENCHMARKS.md. With ``False`` the albedo head's own output is
    returned.

    ``with_normals`` adds a normals head to the same network (negative-cosine loss weighted by
    ``normals_weight`` where the targets have normals), returned as ``normals`` in eval mode.
    ``relight`` (needs the normals head) replaces the predicted shading in eval mode by its
    levels under a global Lambertian lighting (ambient plus ``relight_lights`` directional
    lights) fitted to it with the predicted normals
    (:func:`~structvision.models.intrinsic.lighting.relight_shading`), so that distant regions
    agree about the light.
    """

    def __init__(
        self,
        *,
        width: int = 32,
        shading_channels: int = 3,
        reconstruction_weight: float = 0.5,
        ordinal_weight: float = 1.0,
        albedo_from_image: bool = True,
        with_normals: bool = False,
        normals_weight: float = 1.0,
        relight: bool = False,
        relight_lights: int = 1,
    ) -> None:
        if shading_channels not in (1, 3):
            raise ValueError(f"shading_channels must be 1 (grey) or 3, got {shading_channels}")
        for name, value in (
            ("albedo_from_image", albedo_from_image),
            ("with_normals", with_normals),
            ("relight", relight),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        if relight and not with_normals:
            raise ValueError("relight needs the normals head: set with_normals=true as well")
        if not isinstance(relight_lights, int) or relight_lights < 1:
            raise ValueError(f"relight_lights must be a positive integer, got {relight_lights!r}")
        heads = {
            "albedo": 3,
            "shading": shading_channels,
            **({"normals": 3} if with_normals else {}),
        }
        super().__init__(heads, width=width)
        self.reconstruction_weight = reconstruction_weight
        self.ordinal_weight = ordinal_weight
        self.albedo_from_image = albedo_from_image
        self.with_normals = with_normals
        self.normals_weight = normals_weight
        self.relight = relight
        self.relight_lights = relight_lights

    def forward(self, images: Any, targets: Sequence[dict] | None = None):
        batch = _stack(images)
        second, final = self.raw(batch)
        if not self.training:
            outputs = self.split(final)
            shading = outputs["shading"]
            if self.relight:
                shading = torch.stack(
                    [
                        relight_shading(s, n, num_lights=self.relight_lights)
                        for s, n in zip(shading, outputs["normals"], strict=True)
                    ]
                )
            # shading is exp(...) >= exp(-10) (relit: >= 1e-4), so the division is finite
            albedo = batch / shading if self.albedo_from_image else outputs["albedo"]
            extra = {"normals": outputs["normals"]} if self.with_normals else {}
            return [
                {
                    "albedo": albedo[i],
                    "shading": shading[i],
                    **{name: value[i] for name, value in extra.items()},
                }
                for i in range(len(batch))
            ]
        if targets is None:
            raise ValueError("targets must be given in training mode")
        losses: dict[str, Tensor] = {}
        for weight, raw in ((0.5, second), (1.0, final)):
            outputs = self.split(raw)
            size = raw.shape[-2:]
            image = (
                F.interpolate(batch, size=size, mode="area") if size != batch.shape[-2:] else batch
            )
            terms = self.reconstruction_weight * reconstruction_loss(
                outputs["albedo"], outputs["shading"], image
            )
            if all("albedo" in t for t in targets):
                albedo = _target_stack(targets, "albedo", batch.device)
                shading = _target_stack(targets, "shading", batch.device)
                if shading.shape[1] != outputs["shading"].shape[1]:
                    shading = shading.mean(dim=1, keepdim=True)
                if size != albedo.shape[-2:]:
                    albedo = F.interpolate(albedo, size=size, mode="area")
                    shading = F.interpolate(shading, size=size, mode="area")
                terms = terms + scale_invariant_log_loss(outputs["albedo"], albedo)
                terms = terms + scale_invariant_log_loss(outputs["shading"], shading)
            if self.with_normals and all("normals" in t for t in targets):
                normals = _target_stack(targets, "normals", batch.device)
                if size != normals.shape[-2:]:
                    normals = F.interpolate(normals, size=size, mode="nearest")
                terms = terms + self.normals_weight * normal_loss(
                    outputs["normals"], normals, normals.norm(dim=1) > 0.5
                )
            if weight == 1.0 and all("judgements" in t for t in targets):
                terms = terms + self.ordinal_weight * ordinal_reflectance_loss(
                    outputs["albedo"], [t["judgements"] for t in targets]
                )
            losses["loss_intrinsic"] = losses.get("loss_intrinsic", 0) + weight * terms
        return losses
