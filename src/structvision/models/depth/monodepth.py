"""Monodepth: unsupervised monocular depth with left-right consistency (Godard et al. 2017).

One network sees only the *left* image and predicts two disparity maps, ``d_left`` and
``d_right`` (channels 0 and 1), at 4 scales (1/8, 1/4, 1/2, 1/1 of the input). In training
the right image of the stereo pair is rebuilt from the left one with ``d_right`` and the left
from the right with ``d_left``; the loss (:func:`~structvision.models.depth.losses.monodepth_loss`)
is appearance matching + edge-aware smoothness + left-right consistency. With
``supervised=True`` the same network is trained on true disparities instead (an upper bound
to compare against).

**Units.** The network outputs disparities as a *fraction of the input width* ``W`` (before
padding), each ``max_disp * sigmoid(conv3x3(.))``, so ``0 < d < max_disp``. Eval-mode
results are in pixels of the input image (``d * W``) and depth in metres,
``depth = focal * baseline / disparity_px`` with ``focal`` in pixels and ``baseline`` in
metres. Without per-image camera values the model's ``focal`` (``None`` = ``0.58 * W``,
KITTI's focal length normalised by the image width, as in monodepth2's intrinsics) and
``baseline`` (0.54 m, KITTI's stereo rig) are used.

**Any input size.** The normalised images are replicate-padded at the bottom/right to a
multiple of 32 (``H_p, W_p``); outputs are cropped back to ``(H, W)``. The training losses
are computed on the padded images (no padding when H, W are multiples of 32); for the warp
the disparities are rescaled to fractions of ``W_p`` so the shift in pixels is the same.

**Architecture.** An encoder returns 5 maps at strides 2, 4, 8, 16, 32. The decoder climbs
back with 5 up-convolutions (nearest 2x upsampling then 3x3 conv + ELU, the paper's
``upconv``), each followed by an ``iconv`` (3x3 conv + ELU) over the concatenation of the
upsampled features, the encoder's skip at that stride and, from 1/4 on, the nearest-upsampled
disparity of the previous scale (the paper's ``udisp``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.backbones import (
    ResNetFeatures,
    SmallBackbone,
    resnet_backbone,
    small_backbone,
)
from structvision.models.depth.losses import monodepth_loss, supervised_depth_loss

__all__ = [
    "MONODEPTH_BUILDERS",
    "Monodepth",
    "MonodepthDecoder",
    "ResNetEncoder",
    "SmallEncoder",
    "depth_predictions",
    "monodepth_resnet18",
    "monodepth_small",
    "post_process_disparity",
]

PAD_MULTIPLE = 32
NUM_SCALES = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KITTI_BASELINE = 0.54  # metres
KITTI_FOCAL_FRACTION = 0.58  # focal length / image width
MIN_DISPARITY_PX = 1e-3  # disparities are clamped to this before depth = f * b / d
Activation = Literal["elu", "relu"]


# --------------------------------------------------------------------------------------------
# Encoders: normalised (B, 3, H, W), H and W multiples of 32 -> 5 maps at strides 2 .. 32
# --------------------------------------------------------------------------------------------


class ResNetEncoder(nn.Module):
    """A torchvision ResNet trunk as a 5-level encoder (monodepth2's ``ResnetEncoder``).

    Returns ``[relu(bn1(conv1)), layer1, layer2, layer3, layer4]`` at strides 2, 4, 8, 16, 32
    (``layer1`` runs after the max-pool). ``resnet`` must keep ``layer1 .. layer4`` undilated;
    its parameters keep torchvision's names under ``resnet.``.
    """

    def __init__(self, resnet: ResNetFeatures) -> None:
        super().__init__()
        if resnet.layer_names != ["layer1", "layer2", "layer3", "layer4"] or any(
            resnet.strides.get(f"c{i + 1}") != 2 ** (i + 1) for i in (1, 2, 3, 4)
        ):
            raise ValueError(
                "ResNetEncoder needs an undilated ResNet returning c2 .. c5 at strides 4 .. 32, "
                f"got strides {resnet.strides}"
            )
        self.resnet = resnet
        self.out_channels = (
            resnet.bn1.num_features,
            *(resnet.out_channels[f"c{i}"] for i in (2, 3, 4, 5)),
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images (B, 3, H, W)`` normalised -> ``[(B, C_i, H / 2 ** i, W / 2 ** i)]``,
        ``i = 1 .. 5``."""
        resnet = self.resnet
        x = resnet.relu(resnet.bn1(resnet.conv1(images)))  # (B, 64, H/2, W/2)
        features = [x]
        x = resnet.maxpool(x)
        for name in resnet.layer_names:
            x = getattr(resnet, name)(x)
            features.append(x)
        return features


class SmallEncoder(nn.Module):
    """A :class:`~structvision.models.backbones.SmallBackbone` (stride-2 conv-BN-ReLU stem,
    then 4 stages of 2 conv-BN-ReLU with a stride-2 first conv) as a 5-level encoder:
    ``[stem, stage1, stage2, stage3, stage4]`` at strides 2 .. 32 with channels
    ``width * (1, 1, 2, 4, 8)``."""

    def __init__(self, backbone: SmallBackbone) -> None:
        super().__init__()
        if len(backbone.stages) != 4:
            raise ValueError(
                f"SmallEncoder needs all 4 stages of the backbone, got {len(backbone.stages)}"
            )
        self.backbone = backbone
        width = backbone.stem[0].out_channels
        self.out_channels = (width, *(stage[-1][0].out_channels for stage in backbone.stages))

    def forward(self, images: Tensor) -> list[Tensor]:
        """``images (B, 3, H, W)`` normalised -> ``[(B, C_i, H / 2 ** i, W / 2 ** i)]``,
        ``i = 1 .. 5``."""
        x = self.backbone.stem(images)  # (B, width, H/2, W/2)
        features = [x]
        for stage in self.backbone.stages:
            x = stage(x)
            features.append(x)
        return features


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------


def _conv_act(in_channels: int, out_channels: int, activation: Activation) -> nn.Sequential:
    act = nn.ELU(inplace=True) if activation == "elu" else nn.ReLU(inplace=True)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), act)


class MonodepthDecoder(nn.Module):
    """Up-convolutions with skips and disparity heads at 4 scales.

    Args:
        encoder_channels: channels of the 5 encoder maps at strides 2, 4, 8, 16, 32.
        decoder_channels: channels of the 5 decoder levels, at strides 16, 8, 4, 2, 1 (the
            paper's ResNet decoder: ``(256, 128, 64, 32, 16)``).
        max_disp: upper bound of the disparities, a fraction of the width (paper: 0.3).
        activation: ``"elu"`` (the paper) or ``"relu"``.
        initial_disp: the disparity (fraction of the width) the heads start from, set through
            their biases; ``None`` leaves PyTorch's default (about ``max_disp / 2``). A start
            near a typical disparity (0.02 of the width is about 5 pixels at W = 256, the
            median of ``world-stereo`` and KITTI) keeps the finest scale, whose photometric
            loss has useful gradients only within a few pixels of the truth, from settling
            at a constant ``max_disp / 2`` (38 pixels) while the coarse scales learn.

    Level ``k = 0 .. 4`` (output stride ``16 / 2 ** k``): ``upconv_k`` = nearest 2x then
    conv3x3 + act; ``iconv_k`` = conv3x3 + act over ``[upconv_k, encoder skip at that stride
    (none at stride 1), upsampled disparity of level k - 1 (from k = 2)]``; levels 1 .. 4 end
    in a disparity head ``max_disp * sigmoid(conv3x3(iconv_k))`` with 2 channels
    (``d_left``, ``d_right``).
    """

    def __init__(
        self,
        *,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        max_disp: float = 0.3,
        activation: Activation = "elu",
        initial_disp: float | None = 0.02,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError(
                "encoder_channels and decoder_channels must have 5 entries each, got "
                f"{list(encoder_channels)} and {list(decoder_channels)}"
            )
        if not 0 < max_disp <= 1:
            raise ValueError(
                f"max_disp must be in (0, 1] (a fraction of the width), got {max_disp!r}"
            )
        if activation not in ("elu", "relu"):
            raise ValueError(f"activation must be 'elu' or 'relu', got {activation!r}")
        self.max_disp = float(max_disp)
        self.upconvs = nn.ModuleList()
        self.iconvs = nn.ModuleList()
        self.disp_heads = nn.ModuleList()
        in_channels = encoder_channels[4]
        for level, out_channels in enumerate(decoder_channels):
            skip_channels = encoder_channels[3 - level] if level < 4 else 0
            disp_channels = 2 if level >= 2 else 0
            self.upconvs.append(_conv_act(in_channels, out_channels, activation))
            self.iconvs.append(
                _conv_act(out_channels + skip_channels + disp_channels, out_channels, activation)
            )
            if level >= 1:
                self.disp_heads.append(nn.Conv2d(out_channels, 2, 3, padding=1))
            in_channels = out_channels
        if initial_disp is not None:
            if not 0 < initial_disp < max_disp:
                raise ValueError(
                    f"initial_disp must be in (0, max_disp={max_disp}), got {initial_disp!r}"
                )
            fraction = initial_disp / max_disp
            for head in self.disp_heads:
                nn.init.constant_(head.bias, math.log(fraction / (1 - fraction)))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """5 encoder maps (strides 2 .. 32) -> 4 disparities ``(B, 2, H / 2 ** s, W / 2 ** s)``
        for ``s = 0 .. 3``, *finest first*; channel 0 is ``d_left``, 1 is ``d_right``,
        fractions of the width in ``(0, max_disp)``."""
        x = features[4]  # (B, C5, H/32, W/32)
        disparities: list[Tensor] = []
        for level, (upconv, iconv) in enumerate(zip(self.upconvs, self.iconvs, strict=True)):
            x = upconv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            parts = [x] if level == 4 else [x, features[3 - level]]
            if disparities:
                parts.append(F.interpolate(disparities[-1], scale_factor=2.0, mode="nearest"))
            x = iconv(torch.cat(parts, dim=1))
            if level >= 1:
                disparities.append(self.max_disp * torch.sigmoid(self.disp_heads[level - 1](x)))
        return disparities[::-1]


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def post_process_disparity(disparity: Tensor, flipped_disparity: Tensor) -> Tensor:
    """Godard's flip post-processing of a left-view disparity, ``(..., H, W)`` -> same.

    ``disparity`` is the prediction on the image, ``flipped_disparity`` the prediction on the
    horizontally flipped image, flipped back. With ``x = linspace(0, 1, W)``,
    ``l_mask = 1 - clip(20 * (x - 0.05), 0, 1)`` (1 on the left 5 %, ramping to 0 at 10 %) and
    ``r_mask = flip(l_mask)``, the result is
    ``r_mask * disparity + l_mask * flipped_disparity + (1 - l_mask - r_mask) * mean``: the
    left border (occluded in the right view, where a left disparity is unreliable) comes from
    the flipped run, the right border from the plain run, the mean elsewhere. For a right-view
    disparity swap the two arguments. Needs ``W >= 11`` for the ramps not to overlap.
    """
    if disparity.shape != flipped_disparity.shape:
        raise ValueError(
            f"disparity and flipped_disparity must have the same shape, got "
            f"{tuple(disparity.shape)} and {tuple(flipped_disparity.shape)}"
        )
    width = disparity.shape[-1]
    xs = torch.linspace(0, 1, width, dtype=disparity.dtype, device=disparity.device)  # (W,)
    l_mask = 1 - (20 * (xs - 0.05)).clamp(0, 1)
    r_mask = l_mask.flip(0)
    mean = 0.5 * (disparity + flipped_disparity)
    return r_mask * disparity + l_mask * flipped_disparity + (1 - l_mask - r_mask) * mean


# --------------------------------------------------------------------------------------------
# Inputs and targets
# --------------------------------------------------------------------------------------------


def _stack_images(images: Tensor | Sequence[Tensor]) -> Tensor:
    if not isinstance(images, Tensor):
        if len(images) == 0:
            raise ValueError("images must hold at least one image, got none")
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) != 1:
            raise ValueError(f"images in a list must all have the same shape, got {sorted(shapes)}")
        images = torch.stack(list(images))
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be (B, 3, H, W) or a list of (3, H, W), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    return images


def _collate(targets: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A dict of batched values; a list of per-image dicts is stacked key by key."""
    if isinstance(targets, Mapping):
        return dict(targets)
    if len(targets) == 0:
        raise ValueError("targets must not be an empty list")
    keys = set.intersection(*(set(target) for target in targets))
    return {key: torch.stack([torch.as_tensor(t[key]) for t in targets]) for key in keys}


def _require(targets: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> Tensor:
    if key not in targets:
        raise ValueError(f"targets is missing {key!r} (has {sorted(targets)})")
    value = targets[key]
    if not isinstance(value, Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"targets[{key!r}] must have shape {shape}, got {got}")
    return value


def _per_image(targets: Mapping[str, Any], key: str, batch: int, default: float) -> list[float]:
    if key not in targets or targets[key] is None:
        return [default] * batch
    values = torch.as_tensor(targets[key], dtype=torch.float64).reshape(-1)
    if values.numel() == 1:
        values = values.expand(batch)
    if values.numel() != batch:
        raise ValueError(f"targets[{key!r}] must have shape ({batch},), got {tuple(values.shape)}")
    return values.tolist()


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class Monodepth(nn.Module):
    """Monocular disparity and depth from one image, trained on stereo pairs.

    Args:
        encoder: normalised ``(B, 3, H, W)`` (H, W multiples of 32) -> 5 maps at strides
            2 .. 32 (:class:`ResNetEncoder`, :class:`SmallEncoder`).
        decoder: the 5 maps -> 4 disparities ``(B, 2, H / 2 ** s, W / 2 ** s)``, finest first
            (:class:`MonodepthDecoder`); its ``max_disp`` bounds them.
        lr_consistency: include the left-right consistency loss.
        supervised: train on true disparities (``loss_supervised`` only) instead.
        appearance_weight, smoothness_weight, lr_weight, alpha: the loss weights (paper: 1,
            0.1, 1, 0.85); see :func:`~structvision.models.depth.losses.monodepth_loss`.
        supervised_weight: factor of ``loss_supervised``.
        focal: default focal length in pixels for depth; ``None`` = ``0.58 * W``.
        baseline: default stereo baseline in metres.
        post_process: use the flip post-processing (:func:`post_process_disparity`) in eval.
        image_mean, image_std: statistics of ``[0, 1]`` RGB used to normalise the input.

    ``forward(images, targets=None)``: ``images`` is ``(B, 3, H, W)`` float in ``[0, 1]`` or a
    list of equal-size ``(3, H, W)``. ``targets`` is a dict of batched tensors (or a list of
    per-image dicts, stacked).

    * Training: ``targets["image_right"] (B, 3, H, W)`` in ``[0, 1]`` -> ``{"loss_appearance",
      "loss_smoothness", "loss_lr"}`` (weighted; no ``loss_lr`` without ``lr_consistency``).
      With ``supervised=True``: ``targets["disparity"] (B, H, W)`` pixels and optional
      ``targets["valid"] (B, H, W)`` bool (default ``disparity > 0``) -> ``{"loss_supervised"}``.
    * Eval: one dict per image with ``disparity (H, W)`` and ``disparity_right (H, W)`` in
      pixels of the input, and ``depth (H, W)`` metres (``focal * baseline / disparity``,
      disparity clamped to ``MIN_DISPARITY_PX``); optional ``targets`` give ``focal (B,)``
      pixels and ``baseline (B,)`` metres.
    """

    def __init__(
        self,
        *,
        encoder: nn.Module,
        decoder: nn.Module,
        lr_consistency: bool = True,
        supervised: bool = False,
        appearance_weight: float = 1.0,
        smoothness_weight: float = 0.1,
        lr_weight: float = 1.0,
        alpha: float = 0.85,
        supervised_weight: float = 1.0,
        focal: float | None = None,
        baseline: float = KITTI_BASELINE,
        post_process: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError("image_mean and image_std must have 3 values (RGB)")
        if focal is not None and not focal > 0:
            raise ValueError(f"focal must be positive (pixels) or None, got {focal!r}")
        if not baseline > 0:
            raise ValueError(f"baseline must be positive (metres), got {baseline!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.lr_consistency = bool(lr_consistency)
        self.supervised = bool(supervised)
        self.appearance_weight = float(appearance_weight)
        self.smoothness_weight = float(smoothness_weight)
        self.lr_weight = float(lr_weight)
        self.alpha = float(alpha)
        self.supervised_weight = float(supervised_weight)
        self.focal = None if focal is None else float(focal)
        self.baseline = float(baseline)
        self.post_process = bool(post_process)
        self.register_buffer("image_mean", torch.tensor(image_mean).reshape(1, 3, 1, 1), False)
        self.register_buffer("image_std", torch.tensor(image_std).reshape(1, 3, 1, 1), False)

    def disparity_pyramid(self, images: Tensor) -> list[Tensor]:
        """``images (B, 3, H, W)`` in [0, 1] -> 4 disparities ``(B, 2, H_p / 2 ** s,
        W_p / 2 ** s)`` of the padded size, finest first, fractions of the input width W."""
        normalised = (images - self.image_mean) / self.image_std
        return self.decoder(self.encoder(_pad_to_multiple(normalised)))

    def disparities(self, images: Tensor, *, post_process: bool = False) -> Tensor:
        """``images (B, 3, H, W)`` in [0, 1] -> full-resolution ``(B, 2, H, W)`` disparities
        (``d_left``, ``d_right``), fractions of W; ``post_process`` runs the flipped images
        too and combines them with :func:`post_process_disparity`."""
        height, width = images.shape[-2:]
        if not post_process:
            return self.disparity_pyramid(images)[0][..., :height, :width]
        both = self.disparity_pyramid(torch.cat([images, images.flip(-1)]))[0]
        both = both[..., :height, :width]
        plain, flipped = both.chunk(2)
        flipped = flipped.flip(-1)  # back to the image's orientation
        disp_left = post_process_disparity(plain[:, 0], flipped[:, 0])
        disp_right = post_process_disparity(flipped[:, 1], plain[:, 1])  # mirrored masks
        return torch.stack([disp_left, disp_right], dim=1)

    def forward(
        self,
        images: Tensor | Sequence[Tensor],
        targets: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        batch = _stack_images(images)  # (B, 3, H, W)
        if not self.training:
            return self.predict(batch, targets)
        if targets is None:
            raise ValueError("targets must be given in training mode")
        collated = _collate(targets)
        if self.supervised:
            return self._supervised_losses(batch, collated)
        return self._stereo_losses(batch, collated)

    def _stereo_losses(self, left: Tensor, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        right = _require(targets, "image_right", tuple(left.shape)).to(left)
        pyramid = self.disparity_pyramid(left)
        padded_width = pyramid[0].shape[-1]
        to_padded = left.shape[-1] / padded_width  # fraction of W -> fraction of W_p
        return monodepth_loss(
            [disp[:, :1] * to_padded for disp in pyramid],
            [disp[:, 1:] * to_padded for disp in pyramid],
            _pad_to_multiple(left),
            _pad_to_multiple(right),
            appearance_weight=self.appearance_weight,
            smoothness_weight=self.smoothness_weight,
            lr_weight=self.lr_weight,
            alpha=self.alpha,
            lr_consistency=self.lr_consistency,
        )

    def _supervised_losses(self, images: Tensor, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        batch, _, height, width = images.shape
        gt_disparity = _require(targets, "disparity", (batch, height, width)).to(images)
        if "valid" in targets:
            valid = _require(targets, "valid", (batch, height, width)).to(images.device).bool()
        else:
            valid = gt_disparity > 0
        pyramid = self.disparity_pyramid(images)
        padded_height, padded_width = pyramid[0].shape[-2:]
        pad = (0, padded_width - width, 0, padded_height - height)
        return supervised_depth_loss(
            [disp[:, :1] for disp in pyramid],
            F.pad(gt_disparity / width, pad),  # fraction of W, (B, H_p, W_p)
            F.pad(valid, pad, value=False),
            weight=self.supervised_weight,
        )

    @torch.no_grad()
    def predict(
        self,
        images: Tensor | Sequence[Tensor],
        targets: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        post_process: bool | None = None,
    ) -> list[dict[str, Tensor]]:
        """Eval-mode results (see the class docstring); ``post_process`` overrides the
        model's setting."""
        batch = _stack_images(images)
        use_post_process = self.post_process if post_process is None else post_process
        disparity_px = self.disparities(batch, post_process=use_post_process) * batch.shape[-1]
        return depth_predictions(disparity_px, targets, focal=self.focal, baseline=self.baseline)


def depth_predictions(
    disparity_px: Tensor,
    targets: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    focal: float | None = None,
    baseline: float = KITTI_BASELINE,
) -> list[dict[str, Tensor]]:
    """Monodepth's eval-mode results from ``disparity_px (B, 2, H, W)`` (left and right
    disparities in pixels): per image ``disparity``, ``disparity_right`` and ``depth =
    focal * baseline / disparity``, the camera taken from ``targets`` (``focal`` in pixels,
    ``baseline``) where they give it, else from the arguments (``focal=None``: KITTI's
    ``0.58 * W``)."""
    batch, width = len(disparity_px), disparity_px.shape[-1]
    cameras = _collate(targets) if targets is not None else {}
    default_focal = focal if focal is not None else KITTI_FOCAL_FRACTION * width
    focals = _per_image(cameras, "focal", batch, default_focal)
    baselines = _per_image(cameras, "baseline", batch, baseline)
    return [
        {
            "disparity": disp[0],
            "disparity_right": disp[1],
            "depth": focal * baseline / disp[0].clamp_min(MIN_DISPARITY_PX),
        }
        for disp, focal, baseline in zip(disparity_px, focals, baselines, strict=True)
    ]


def _pad_to_multiple(images: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H_p, W_p)`` replicate-padded at the bottom/right,
    ``H_p, W_p`` the next multiples of 32."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _assemble(
    encoder: nn.Module,
    *,
    builder: str,
    extra: dict[str, Any],
    decoder_channels: Sequence[int],
    max_disp: float,
    activation: Activation,
    **options: Any,
) -> Monodepth:
    """``encoder`` + a :class:`MonodepthDecoder` as a :class:`Monodepth`; ``options`` go to
    the model. Records every argument in ``model.builder_args`` (with ``extra``)."""
    decoder = MonodepthDecoder(
        encoder_channels=encoder.out_channels,
        decoder_channels=decoder_channels,
        max_disp=max_disp,
        activation=activation,
    )
    model = Monodepth(encoder=encoder, decoder=decoder, **options)
    model.builder_args = {
        "builder": builder,
        **extra,
        "max_disp": max_disp,
        "decoder_channels": tuple(decoder_channels),
        "activation": activation,
        **options,
    }
    return model


def monodepth_resnet18(
    *,
    weights_path: str | Path | None = None,
    max_disp: float = 0.3,
    lr_consistency: bool = True,
    supervised: bool = False,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    activation: Activation = "elu",
    smoothness_weight: float = 0.1,
    lr_weight: float = 1.0,
    focal: float | None = None,
    baseline: float = KITTI_BASELINE,
    post_process: bool = False,
) -> Monodepth:
    """Monodepth over a ResNet-18 (``nn.BatchNorm2d``, all layers trainable), the paper's
    decoder channels. ``weights_path``: a local torchvision ImageNet ResNet-18 state dict
    (see :func:`~structvision.models.backbones.resnet_backbone`)."""
    resnet = resnet_backbone(18, norm="batch", trainable_layers=5, weights_path=weights_path)
    return _assemble(
        ResNetEncoder(resnet),
        builder="monodepth_resnet18",
        extra={},
        decoder_channels=decoder_channels,
        max_disp=max_disp,
        activation=activation,
        lr_consistency=lr_consistency,
        supervised=supervised,
        smoothness_weight=smoothness_weight,
        lr_weight=lr_weight,
        focal=focal,
        baseline=baseline,
        post_process=post_process,
    )


def monodepth_small(
    *,
    width: int = 24,
    max_disp: float = 0.3,
    lr_consistency: bool = True,
    supervised: bool = False,
    decoder_channels: Sequence[int] | None = None,
    activation: Activation = "elu",
    smoothness_weight: float = 0.1,
    lr_weight: float = 1.0,
    focal: float | None = None,
    baseline: float = KITTI_BASELINE,
    post_process: bool = False,
) -> Monodepth:
    """Monodepth over a small from-scratch trunk (:class:`SmallEncoder`, channels
    ``width * (1, 1, 2, 4, 8)`` at strides 2 .. 32), for CPU training. The decoder's channels
    default to ``width * (4, 2, 1, 1/2, 1/2)`` at strides 16 .. 1 (at least 8)."""
    if decoder_channels is None:
        decoder_channels = tuple(
            max(8, c) for c in (4 * width, 2 * width, width, width // 2, width // 2)
        )
    return _assemble(
        SmallEncoder(small_backbone(width=width, norm="batch")),
        builder="monodepth_small",
        extra={"width": width},
        decoder_channels=decoder_channels,
        max_disp=max_disp,
        activation=activation,
        lr_consistency=lr_consistency,
        supervised=supervised,
        smoothness_weight=smoothness_weight,
        lr_weight=lr_weight,
        focal=focal,
        baseline=baseline,
        post_process=post_process,
    )


MONODEPTH_BUILDERS = {"monodepth_small": monodepth_small, "monodepth_resnet18": monodepth_resnet18}
