"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell, 2015).

A backbone's stride-32 features ``c5`` are scored by a 1x1 convolution (the paper's
``score_fr``), and the coarse class scores are brought back to the input resolution by
transposed convolutions initialised to bilinear upsampling:

* **FCN-32s**: ``score_fr`` -> 32x upsampling (``upscore32``).
* **FCN-16s**: ``score_fr`` -> 2x (``upscore2``) + ``score_pool4(c4)`` -> 16x (``upscore16``).
* **FCN-8s**: FCN-16s' fused stride-16 scores -> 2x (``upscore_pool4``) + ``score_pool3(c3)``
  -> 8x (``upscore8``).

The skip scoring layers ``score_pool4``/``score_pool3`` start at zero, as in the paper, so a
freshly built FCN-16s/8s predicts what its coarser parent predicts through the same
upsampling path, and the skips are learned from there. Module names differ only in the skip
branches and in the final upsampling (whose kernel size differs), so the paper's staged
training is ``fcn16.load_state_dict(fcn32.state_dict(), strict=False)``.

**Any input size.** The normalised images are zero-padded at the bottom/right to a multiple
of 32 (zero = the mean colour after normalisation); then ``c5``, ``c4`` and ``c3`` are exactly
1/32, 1/16 and 1/8 of the padded size, every 2x/8x/16x/32x upsampling lands exactly on the
next grid, and the final scores are cropped back to each image's own ``(H, W)``. Images of
different sizes in one list are padded to a common size.

**Scores vs. pixels.** Upsampling follows ``F.interpolate(..., align_corners=False)``: pixel
``o`` of an ``f``-times finer map sits at coarse coordinate ``(o + 0.5) / f - 0.5``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vgg import cfgs as vgg_configs
from torchvision.models.vgg import make_layers as make_vgg_layers

from structvision.models.backbones import _read_state_dict, resnet_backbone, small_backbone
from structvision.ops.crf import dense_crf_loss

__all__ = [
    "FCN",
    "IGNORE_INDEX",
    "BilinearUpsample",
    "VGGFeatures",
    "bilinear_upsampling_weights",
    "crf_regularized_loss",
    "fcn_resnet",
    "fcn_small",
    "fcn_vgg",
    "load_vgg_weights",
    "semantic_loss",
]

Variant = Literal["32s", "16s", "8s"]
VARIANTS: tuple[str, ...] = ("32s", "16s", "8s")
IGNORE_INDEX = 255
PAD_MULTIPLE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Which backbone maps each variant reads.
_REQUIRED_FEATURES = {"32s": ("c5",), "16s": ("c4", "c5"), "8s": ("c3", "c4", "c5")}


# --------------------------------------------------------------------------------------------
# Bilinear upsampling as a transposed convolution
# --------------------------------------------------------------------------------------------


def _kernel_size(factor: int) -> int:
    return 2 * factor - factor % 2


def bilinear_upsampling_weights(channels: int, factor: int) -> Tensor:
    """Weights ``(C, C, k, k)`` of a transposed convolution doing ``factor``-times bilinear
    upsampling of each channel separately, ``k = 2 * factor - factor % 2``.

    The ``k x k`` kernel is the outer product of the 1-D tent ``1 - |i - center| / factor``
    (``center = (k - 1) / 2``); it sits on the channel diagonal, every other entry is zero.
    """
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels!r}")
    if factor < 1:
        raise ValueError(f"factor must be positive, got {factor!r}")
    size = _kernel_size(factor)
    center = (size - 1) / 2
    positions = torch.arange(size, dtype=torch.float64)
    tent = 1.0 - (positions - center).abs() / factor  # (k,)
    kernel = (tent[:, None] * tent[None, :]).float()  # (k, k)
    weights = torch.zeros(channels, channels, size, size)
    weights[range(channels), range(channels)] = kernel
    return weights


class BilinearUpsample(nn.ConvTranspose2d):
    """``factor``-times upsampling ``(B, C, h, w) -> (B, C, h * factor, w * factor)``, a
    bias-free transposed convolution initialised to bilinear interpolation.

    Away from the borders (about ``factor`` output pixels) it equals
    ``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)``; at the
    borders it sees zeros where ``F.interpolate`` repeats the edge. ``trainable=False`` freezes
    the weights (``requires_grad=False``).
    """

    def __init__(self, channels: int, factor: int, *, trainable: bool = True) -> None:
        size = _kernel_size(factor)
        # out = (in - 1) * factor - 2 * padding + size = in * factor  <=>  padding = factor // 2
        super().__init__(channels, channels, size, stride=factor, padding=factor // 2, bias=False)
        self.factor = factor
        with torch.no_grad():
            self.weight.copy_(bilinear_upsampling_weights(channels, factor))
        self.weight.requires_grad_(trainable)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _score_layer(in_channels: int, num_classes: int, *, zero: bool) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, num_classes, 1)
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


def _check_image(image: Tensor, where: str) -> None:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{where} must have shape (3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{where} must be a float tensor in [0, 1], got dtype {image.dtype}")


def _as_image_list(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(
                f"images must be (B, 3, H, W) or a list of (3, H, W), got {tuple(images.shape)}"
            )
        images = list(images)
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got none")
    for index, image in enumerate(images):
        _check_image(image, f"images[{index}]")
    return list(images)


def _padded_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    return (-(-height // PAD_MULTIPLE) * PAD_MULTIPLE, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE)


def _stack_padded(tensors: Sequence[Tensor], size: tuple[int, int], value: float) -> Tensor:
    """``[(..., h_i, w_i)]`` -> ``(B, ..., H, W)``, padding bottom/right with ``value``."""
    return torch.stack(
        [
            F.pad(t, (0, size[1] - t.shape[-1], 0, size[0] - t.shape[-2]), value=value)
            for t in tensors
        ]
    )


def _semantic_targets(
    targets: Sequence[Mapping[str, Tensor]] | Mapping[str, Tensor],
    sizes: Sequence[tuple[int, int]],
    num_classes: int,
) -> list[Tensor]:
    """Per-image ``semantic (H, W)`` int64 maps, checked against the image sizes."""
    if isinstance(targets, Mapping):
        if "semantic" not in targets:
            raise ValueError(f"targets is missing 'semantic' (has {sorted(targets)})")
        semantic = targets["semantic"]
        if semantic.dim() != 3:
            raise ValueError(f"targets['semantic'] must be (B, H, W), got {tuple(semantic.shape)}")
        maps = list(semantic)
    else:
        maps = []
        for index, target in enumerate(targets):
            if "semantic" not in target:
                raise ValueError(f"targets[{index}] is missing 'semantic' (has {sorted(target)})")
            maps.append(target["semantic"])
    if len(maps) != len(sizes):
        raise ValueError(f"got {len(sizes)} images but {len(maps)} semantic targets")
    for index, (semantic, size) in enumerate(zip(maps, sizes, strict=True)):
        if tuple(semantic.shape) != size:
            raise ValueError(
                f"semantic target {index} must have shape {size} (its image's H, W), "
                f"got {tuple(semantic.shape)}"
            )
        _check_labels(semantic, num_classes, f"semantic target {index}")
    return [semantic.long() for semantic in maps]


def _check_crf_options(weight: float, sxy: float, srgb: float, scale: float) -> None:
    if not weight >= 0:
        raise ValueError(f"crf_loss_weight must be >= 0, got {weight!r}")
    if not (sxy > 0 and srgb > 0):
        raise ValueError(f"crf_sxy and crf_srgb must be positive, got {sxy!r} and {srgb!r}")
    if not 0 < scale <= 1:
        raise ValueError(f"crf_scale must be in (0, 1], got {scale!r}")


def _check_labels(gt_semantic: Tensor, num_classes: int, name: str) -> None:
    invalid = (gt_semantic != IGNORE_INDEX) & ((gt_semantic < 0) | (gt_semantic >= num_classes))
    if bool(invalid.any()):
        bad = gt_semantic[invalid].unique().tolist()
        raise ValueError(
            f"{name} must hold labels in 0..{num_classes - 1} or {IGNORE_INDEX}, got {bad}"
        )


def semantic_loss(logits: Tensor, gt_semantic: Tensor) -> Tensor:
    """Mean cross-entropy over the pixels whose label is not 255.

    ``logits (B, C, H, W)``, ``gt_semantic (B, H, W)`` int64. With no labelled pixel at all
    the loss is a zero that still depends on ``logits`` (so ``backward`` works). On scribble
    labels (255 off the strokes) this is the *partial cross-entropy* of Tang et al. (2018).
    """
    if not bool((gt_semantic != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    _check_labels(gt_semantic, logits.shape[1], "gt_semantic")
    return F.cross_entropy(logits, gt_semantic, ignore_index=IGNORE_INDEX)


def crf_regularized_loss(
    images: Tensor,
    logits: Tensor,
    *,
    roi_mask: Tensor | None = None,
    weight: float,
    sxy: float,
    srgb: float,
    scale: float = 1.0,
) -> Tensor:
    """Dense-CRF loss (Tang et al. 2018) of the soft segmentation ``softmax(logits)``.

    As Tang et al.'s ``DenseCRFLoss``, the image and the segmentation are first resized by
    ``scale`` (image and ``roi_mask`` nearest, probabilities bilinear) and ``sxy`` is given in
    pixels of the input, so it becomes ``sxy * scale`` on the resized grid. Then
    :func:`~structvision.ops.crf.dense_crf_loss`: the relaxed Potts energy under the bilateral
    kernel, per pixel of ``roi_mask``, averaged over the batch, times ``weight``.

    Args:
        images: ``(B, 3, H, W)`` float RGB in ``[0, 1]``, *not* normalised.
        logits: ``(B, C, H, W)`` class scores.
        roi_mask: optional ``(B, H, W)`` 0/1: the pixels that take part (e.g. not padding).
        weight: factor ``lambda``.
        sxy: position standard deviation, pixels of the input.
        srgb: colour standard deviation, 0–255 units.
        scale: resize factor in ``(0, 1]``.
    """
    work_logits = logits if logits.dtype == torch.float64 else logits.float()  # autocast-safe
    probs = work_logits.softmax(dim=1)  # (B, C, H, W)
    if scale != 1.0:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
        probs = F.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False)
        if roi_mask is not None:
            roi_mask = F.interpolate(roi_mask[:, None].float(), scale_factor=scale)[:, 0]
    return dense_crf_loss(
        images, probs, sxy=sxy * scale, srgb=srgb, weight=weight, roi_mask=roi_mask
    )


class FCN(nn.Module):
    """FCN-32s, FCN-16s or FCN-8s over any backbone returning ``c3``/``c4``/``c5`` maps.

    Args:
        backbone: maps normalised ``(B, 3, H, W)`` images to a dict of feature maps with at
            least the ones the variant reads (``c5``; ``c4`` for 16s; ``c3`` too for 8s) at
            strides 32, 16 and 8 with sizes ``ceil(H / stride)``.
        variant: ``"32s"``, ``"16s"`` or ``"8s"``.
        num_classes: C, classes including background (labels ``0 .. C - 1``, 255 = ignore).
        in_channels: channels of the backbone maps the variant reads,
            e.g. ``{"c3": 128, "c4": 256, "c5": 512}`` (a backbone's ``out_channels``).
        trainable_upsampling: learn the transposed convolutions (``True``) or keep them fixed
            at bilinear interpolation.
        image_mean, image_std: per-channel statistics of ``[0, 1]`` RGB images used to
            normalise the input (ImageNet's by default).
        crf_loss_weight: ``lambda`` of the dense-CRF regularised loss for weak (scribble)
            supervision, Tang et al. (2018); 0 turns it off. The energy here is a mean over
            pixels (Tang et al. sum over the pixels of the half-size image), so comparable
            values are about ``N_pixels`` times theirs; ``5e-4`` worked best of
            ``{2e-4, 5e-4, 2e-3, 1e-2}`` on ``shapes`` with the defaults below (BENCHMARKS.md).
        crf_sxy: its bilateral kernel's position standard deviation, pixels of the input.
        crf_srgb: its colour standard deviation, 0–255 units.
        crf_scale: the loss is computed on images and segmentations resized by this factor
            (Tang et al. use 0.5; it also makes the loss about 4x cheaper).

    ``forward(images, targets=None)``: ``images`` is ``(B, 3, H, W)`` float in ``[0, 1]`` or a
    list of ``(3, H, W)`` (sizes may differ). In training mode ``targets`` (a list of dicts
    with ``semantic (H, W)`` int64, or one dict with ``semantic (B, H, W)``) gives
    ``{"loss_semantic": cross-entropy}`` averaged over the non-255 pixels (on scribbles: the
    partial cross-entropy) and, with ``crf_loss_weight > 0``, ``"loss_crf"``:
    :func:`crf_regularized_loss` of the segmentation on the un-normalised images (padding
    excluded). In eval mode the result is one dict per image: ``semantic (H, W)`` int64
    (argmax) and ``semantic_logits (C, H, W)`` float.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        variant: Variant,
        num_classes: int,
        in_channels: Mapping[str, int],
        trainable_upsampling: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        crf_loss_weight: float = 0.0,
        crf_sxy: float = 50.0,
        crf_srgb: float = 15.0,
        crf_scale: float = 0.5,
    ) -> None:
        super().__init__()
        _check_crf_options(crf_loss_weight, crf_sxy, crf_srgb, crf_scale)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        missing = [name for name in _REQUIRED_FEATURES[variant] if name not in in_channels]
        if missing:
            raise ValueError(
                f"in_channels must give the channels of {list(_REQUIRED_FEATURES[variant])} "
                f"for FCN-{variant}, missing {missing} (got {dict(in_channels)})"
            )
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError("image_mean and image_std must have 3 values (RGB)")
        self.backbone = backbone
        self.variant = variant
        self.num_classes = num_classes
        self.crf_loss_weight = float(crf_loss_weight)
        self.crf_sxy = float(crf_sxy)
        self.crf_srgb = float(crf_srgb)
        self.crf_scale = float(crf_scale)
        self.register_buffer("image_mean", torch.tensor(image_mean).reshape(3, 1, 1), False)
        self.register_buffer("image_std", torch.tensor(image_std).reshape(3, 1, 1), False)
        up = {"trainable": trainable_upsampling}
        self.score_fr = _score_layer(in_channels["c5"], num_classes, zero=False)
        if variant == "32s":
            self.upscore32 = BilinearUpsample(num_classes, 32, **up)
        else:
            self.upscore2 = BilinearUpsample(num_classes, 2, **up)
            self.score_pool4 = _score_layer(in_channels["c4"], num_classes, zero=True)
        if variant == "16s":
            self.upscore16 = BilinearUpsample(num_classes, 16, **up)
        if variant == "8s":
            self.upscore_pool4 = BilinearUpsample(num_classes, 2, **up)
            self.score_pool3 = _score_layer(in_channels["c3"], num_classes, zero=True)
            self.upscore8 = BilinearUpsample(num_classes, 8, **up)

    def _normalise_and_pad(self, images: list[Tensor]) -> Tensor:
        """List of ``(3, h_i, w_i)`` in [0, 1] -> ``(B, 3, H, W)`` normalised, zero-padded to
        multiples of 32."""
        normalised = [(image - self.image_mean) / self.image_std for image in images]
        return _stack_padded(normalised, _padded_size([i.shape[-2:] for i in images]), 0.0)

    def scores(self, batch: Tensor) -> Tensor:
        """Normalised ``(B, 3, H, W)`` with H, W multiples of 32 -> logits ``(B, C, H, W)``."""
        if batch.shape[-2] % PAD_MULTIPLE or batch.shape[-1] % PAD_MULTIPLE:
            raise ValueError(
                f"scores expects H and W divisible by {PAD_MULTIPLE}, got {tuple(batch.shape)}"
            )
        features = self.backbone(batch)
        coarse = self.score_fr(features["c5"])  # (B, C, H/32, W/32)
        if self.variant == "32s":
            return self.upscore32(coarse)  # (B, C, H, W)
        fused16 = self.upscore2(coarse) + self.score_pool4(features["c4"])  # (B, C, H/16, W/16)
        if self.variant == "16s":
            return self.upscore16(fused16)
        fused8 = self.upscore_pool4(fused16) + self.score_pool3(features["c3"])  # (.., H/8, W/8)
        return self.upscore8(fused8)

    def _crf_loss(self, image_list: list[Tensor], logits: Tensor) -> Tensor:
        """The weighted dense-CRF loss of ``logits (B, C, Hp, Wp)`` on the ``[0, 1]`` images,
        zero-padded like the logits; padded pixels take no part."""
        padded_size = (int(logits.shape[-2]), int(logits.shape[-1]))
        images = _stack_padded(image_list, padded_size, 0.0)  # (B, 3, Hp, Wp)
        roi_mask = None
        if any(tuple(image.shape[-2:]) != padded_size for image in image_list):
            ones = [image.new_ones(image.shape[-2:]) for image in image_list]
            roi_mask = _stack_padded(ones, padded_size, 0.0)  # (B, Hp, Wp)
        return crf_regularized_loss(
            images,
            logits,
            roi_mask=roi_mask,
            weight=self.crf_loss_weight,
            sxy=self.crf_sxy,
            srgb=self.crf_srgb,
            scale=self.crf_scale,
        )

    def forward(
        self,
        images: Tensor | Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]] | Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        image_list = _as_image_list(images)
        sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in image_list]
        if self.training:
            if targets is None:
                raise ValueError("targets must be given in training mode")
            gt_maps = _semantic_targets(targets, sizes, self.num_classes)
        logits = self.scores(self._normalise_and_pad(image_list))  # (B, C, Hp, Wp)
        if self.training:
            gt_semantic = _stack_padded(gt_maps, tuple(logits.shape[-2:]), IGNORE_INDEX)
            losses = {"loss_semantic": semantic_loss(logits, gt_semantic.to(logits.device))}
            if self.crf_loss_weight > 0:
                losses["loss_crf"] = self._crf_loss(image_list, logits)
            return losses
        predictions = []
        for image_logits, (height, width) in zip(logits, sizes, strict=True):
            cropped = image_logits[:, :height, :width]  # (C, H, W)
            predictions.append({"semantic": cropped.argmax(0), "semantic_logits": cropped})
        return predictions


# --------------------------------------------------------------------------------------------
# VGG trunk with convolutionalised fc6/fc7
# --------------------------------------------------------------------------------------------

_VGG_CONFIGS = {11: "A", 13: "B", 16: "D", 19: "E"}


class VGGFeatures(nn.Module):
    """A torchvision VGG-``depth`` trunk with ``fc6``/``fc7`` turned into convolutions, as in
    the FCN paper: ``c3`` = pool3 (stride 8, 256 channels), ``c4`` = pool4 (16, 512) and
    ``c5`` = fc7 after pool5 (32, ``fc_channels``).

    ``fc6`` is a 7x7 convolution with padding 3 (so it keeps the pool5 size; the paper padded
    the input by 100 px and cropped instead) and ``fc7`` a 1x1 convolution, each followed by
    ReLU and dropout. ``features.*`` keys equal torchvision's, so :func:`load_vgg_weights` loads
    a torchvision ImageNet checkpoint. Input: normalised ``(B, 3, H, W)``; map sizes are
    ``floor(H / stride)`` (the FCN pads H and W to multiples of 32 first).
    """

    def __init__(self, *, depth: int = 16, fc_channels: int = 4096, dropout: float = 0.5):
        super().__init__()
        if depth not in _VGG_CONFIGS:
            raise ValueError(f"depth must be one of {sorted(_VGG_CONFIGS)}, got {depth!r}")
        self.features = make_vgg_layers(vgg_configs[_VGG_CONFIGS[depth]], batch_norm=False)
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self._pool3, self._pool4 = pools[2], pools[3]  # indices in ``features``
        self.fc6 = nn.Conv2d(512, fc_channels, 7, padding=3)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = {"c3": 256, "c4": 512, "c5": fc_channels}
        self.strides = {"c3": 8, "c4": 16, "c5": 32}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images (B, 3, H, W)`` normalised -> ``{"c3": (B, 256, H/8, W/8), ...}``."""
        features = {}
        x = images
        for index, module in enumerate(self.features):
            x = module(x)
            if index == self._pool3:
                features["c3"] = x
            elif index == self._pool4:
                features["c4"] = x  # (B, 512, H/16, W/16)
        x = self.dropout(self.relu(self.fc6(x)))  # x was pool5: (B, 512, H/32, W/32)
        features["c5"] = self.dropout(self.relu(self.fc7(x)))
        return features


def load_vgg_weights(trunk: VGGFeatures, weights_path: str | Path) -> None:
    """Load a torchvision VGG state dict (``features.*``, ``classifier.0``/``classifier.3``)
    into ``trunk`` in place; the fully connected ``classifier.0``/``.3`` weights are reshaped
    into the ``fc6`` (7x7) and ``fc7`` (1x1) convolutions, ``classifier.6`` is ignored."""
    path = Path(weights_path)
    state_dict = _read_state_dict(path)
    converted = {k: v for k, v in state_dict.items() if k.startswith("features.")}
    for source, layer_name in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
        for name in ("weight", "bias"):
            key = f"{source}.{name}"
            if key not in state_dict:
                raise ValueError(f"weights_path {str(path)!r} has no {key!r}")
            own = getattr(getattr(trunk, layer_name), name)
            if state_dict[key].numel() != own.numel():
                raise ValueError(
                    f"weights_path {str(path)!r}: {key} has shape {tuple(state_dict[key].shape)}"
                    f", which does not fit {layer_name}.{name} {tuple(own.shape)}"
                )
            # (out, 512 * 7 * 7) -> (out, 512, 7, 7); (out, in) -> (out, in, 1, 1)
            converted[f"{layer_name}.{name}"] = state_dict[key].reshape(own.shape)
    try:
        trunk.load_state_dict(converted)
    except RuntimeError as error:
        raise ValueError(
            f"weights_path {str(path)!r} does not match the VGG trunk: {error}"
        ) from error


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _returned_layers(variant: str) -> tuple[int, ...]:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    # c{i + 1} is layer i.
    return tuple(int(name[1]) - 1 for name in _REQUIRED_FEATURES[variant])


def fcn_small(
    *,
    num_classes: int,
    variant: Variant = "8s",
    width: int = 32,
    norm: Literal["batch", "group"] = "batch",
    trainable_upsampling: bool = True,
    crf_loss_weight: float = 0.0,
    crf_sxy: float = 50.0,
    crf_srgb: float = 15.0,
    crf_scale: float = 0.5,
) -> FCN:
    """An FCN over :func:`~structvision.models.backbones.small_backbone` (a small VGG-style
    net with channels ``width * (2, 4, 8)`` at ``c3/c4/c5``), for training from scratch on a
    CPU. ``crf_*`` set the dense-CRF loss for scribble supervision (see :class:`FCN`)."""
    backbone = small_backbone(width=width, norm=norm, returned_layers=_returned_layers(variant))
    return FCN(
        backbone=backbone,
        variant=variant,
        num_classes=num_classes,
        in_channels=backbone.out_channels,
        trainable_upsampling=trainable_upsampling,
        crf_loss_weight=crf_loss_weight,
        crf_sxy=crf_sxy,
        crf_srgb=crf_srgb,
        crf_scale=crf_scale,
    )


def fcn_resnet(
    *,
    depth: int = 50,
    num_classes: int,
    variant: Variant = "8s",
    norm: Literal["frozen", "batch", "group"] = "frozen",
    trainable_layers: int = 3,
    weights_path: str | Path | None = None,
    trainable_upsampling: bool = True,
    crf_loss_weight: float = 0.0,
    crf_sxy: float = 50.0,
    crf_srgb: float = 15.0,
    crf_scale: float = 0.5,
) -> FCN:
    """An FCN over a torchvision ResNet-``depth`` trunk (``layer2/3/4`` = ``c3/c4/c5``);
    ``weights_path`` loads a local torchvision ImageNet state dict into the trunk (see
    :func:`~structvision.models.backbones.resnet_backbone`). ``crf_*``: see :class:`FCN`."""
    backbone = resnet_backbone(
        depth,
        norm=norm,
        trainable_layers=trainable_layers,
        returned_layers=_returned_layers(variant),
        weights_path=weights_path,
    )
    return FCN(
        backbone=backbone,
        variant=variant,
        num_classes=num_classes,
        in_channels=backbone.out_channels,
        trainable_upsampling=trainable_upsampling,
        crf_loss_weight=crf_loss_weight,
        crf_sxy=crf_sxy,
        crf_srgb=crf_srgb,
        crf_scale=crf_scale,
    )


def fcn_vgg(
    *,
    depth: int = 16,
    num_classes: int,
    variant: Variant = "8s",
    fc_channels: int = 4096,
    weights_path: str | Path | None = None,
    trainable_upsampling: bool = True,
    crf_loss_weight: float = 0.0,
    crf_sxy: float = 50.0,
    crf_srgb: float = 15.0,
    crf_scale: float = 0.5,
) -> FCN:
    """The paper's FCN over a VGG-``depth`` trunk (:class:`VGGFeatures`: pool3/pool4 skips,
    convolutionalised ``fc6``/``fc7``); ``weights_path`` loads a local torchvision VGG
    ImageNet state dict (see :func:`load_vgg_weights`). ``crf_*``: see :class:`FCN`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    trunk = VGGFeatures(depth=depth, fc_channels=fc_channels)
    if weights_path is not None:
        load_vgg_weights(trunk, weights_path)
    return FCN(
        backbone=trunk,
        variant=variant,
        num_classes=num_classes,
        in_channels=trunk.out_channels,
        trainable_upsampling=trainable_upsampling,
        crf_loss_weight=crf_loss_weight,
        crf_sxy=crf_sxy,
        crf_srgb=crf_srgb,
        crf_scale=crf_scale,
    )
