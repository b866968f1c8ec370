"""Dilated-ResNet semantic segmentation: DeepLabV3 (Chen et al., 2017) and the "FCN-ResNet"
baseline of torchvision's model zoo.

Both are a :func:`~structvision.models.backbones.dilated_resnet_backbone` (ResNet whose
``layer3``/``layer4`` use dilation instead of stride, so ``c5`` has stride 8), a head that turns
``c5`` into class scores at stride 8, and bilinear interpolation (``align_corners=False``) of
the scores to the input size:

* **FCN-ResNet** head (:class:`FCNHead`): 3x3 conv to ``C_in / 4`` channels, BatchNorm, ReLU,
  dropout 0.1, 1x1 conv to the classes.
* **DeepLabV3** head (:class:`DeepLabHead`): Atrous Spatial Pyramid Pooling (:class:`ASPP`:
  a 1x1 conv, three 3x3 convs dilated by 12, 24 and 36, and an image-level pooling branch, each
  to 256 channels, concatenated and projected back to 256 with dropout 0.5), then a 3x3 conv,
  BatchNorm, ReLU and a 1x1 conv to the classes.

An optional auxiliary :class:`FCNHead` on ``c4`` (``layer3``) adds ``0.5 x`` its cross-entropy
to the training loss (``"loss_aux"``); it is not evaluated at inference.

**Inputs.** As for every structvision model, images are ``[0, 1]`` RGB and the model
normalises them itself (ImageNet mean/std by default). torchvision's segmentation models
instead expect already normalised tensors, so ``ours(x)`` corresponds to
``torchvision_model((x - mean) / std)["out"]``.

**Any input size, any mix of sizes.** The network runs on the image's own size (no padding to
a multiple of 8): ``c5`` has size ``ceil(H / 8) x ceil(W / 8)`` and the scores are
interpolated to exactly ``(H, W)``. At inference a list of differently sized images is run in
groups of equal size, so each image's prediction is what it would be alone (and equals
torchvision's for that image). In training the normalised images are zero-padded at the
bottom/right to the largest size in the batch and the targets padded with 255 (ignored), as
in torchvision's reference training scripts.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.backbones import NormName, dilated_resnet_backbone
from structvision.models.segmentation.fcn import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _as_image_list,
    _semantic_targets,
    _stack_padded,
    semantic_loss,
)

__all__ = [
    "ASPP",
    "DeepLabHead",
    "DilatedSegmenter",
    "FCNHead",
    "deeplabv3_resnet",
    "fcn_resnet_dilated",
]

DEEPLAB_RATES = (12, 24, 36)
AUX_LOSS_WEIGHT = 0.5


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, *, dilation: int = 1
) -> nn.Sequential:
    """``conv (no bias) -> BatchNorm2d -> ReLU`` keeping the spatial size (padding
    ``dilation * (kernel_size - 1) / 2``); submodules are named ``conv``, ``bn``, ``relu``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=padding,
                dilation=dilation,
                bias=False,
            ),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(inplace=True),
        )
    )


class FCNHead(nn.Module):
    """Class scores from one feature map: 3x3 conv to ``hidden_channels`` (``in_channels // 4``
    by default), BatchNorm, ReLU, dropout, 1x1 conv with bias.

    ``forward(features (B, C_in, h, w)) -> scores (B, num_classes, h, w)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden_channels: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = in_channels // 4 if hidden_channels is None else hidden_channels
        if in_channels < 1 or hidden < 1:
            raise ValueError(
                f"in_channels and hidden_channels must be positive, got {in_channels!r} and "
                f"{hidden_channels!r}"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes!r}")
        self.block = _conv_bn_relu(in_channels, hidden, 3)
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.score(self.dropout(self.block(features)))


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: parallel branches over one feature map, concatenated in
    the order ``[1x1 conv, 3x3 conv at each rate ..., image pooling]`` and projected.

    Every branch is conv-BN-ReLU to ``out_channels``. The image-pooling branch averages the
    whole map to ``1 x 1``, applies a 1x1 conv-BN-ReLU and broadcasts the result back to
    ``h x w`` (so, in training, its BatchNorm needs a batch of at least 2 images). The
    projection is a 1x1 conv-BN-ReLU followed by dropout.

    ``forward(features (B, C_in, h, w)) -> (B, out_channels, h, w)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        atrous_rates: Sequence[int] = DEEPLAB_RATES,
        out_channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        rates = tuple(int(rate) for rate in atrous_rates)
        if not rates or any(rate < 1 for rate in rates):
            raise ValueError(f"atrous_rates must be positive integers, got {atrous_rates!r}")
        self.atrous_rates = rates
        self.conv1x1 = _conv_bn_relu(in_channels, out_channels, 1)
        self.atrous = nn.ModuleList(
            _conv_bn_relu(in_channels, out_channels, 3, dilation=rate) for rate in rates
        )
        self.pooling = _conv_bn_relu(in_channels, out_channels, 1)
        self.project = _conv_bn_relu((len(rates) + 2) * out_channels, out_channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor) -> Tensor:
        height, width = features.shape[-2:]
        pooled = self.pooling(F.adaptive_avg_pool2d(features, 1))  # (B, C_out, 1, 1)
        # Resizing 1x1 to h x w is a broadcast; bilinear interpolation rounds exactly as
        # torchvision does (``expand`` differs from it by ~1e-7), keeping conversions bit-exact.
        broadcast = F.interpolate(
            pooled, size=(height, width), mode="bilinear", align_corners=False
        )
        branches = [
            self.conv1x1(features),
            *(branch(features) for branch in self.atrous),
            broadcast,
        ]  # each (B, C_out, h, w)
        return self.dropout(self.project(torch.cat(branches, dim=1)))


class DeepLabHead(nn.Module):
    """DeepLabV3's head: :class:`ASPP`, then a 3x3 conv-BN-ReLU and a 1x1 conv to the classes.

    ``forward(features (B, C_in, h, w)) -> scores (B, num_classes, h, w)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        atrous_rates: Sequence[int] = DEEPLAB_RATES,
        aspp_channels: int = 256,
        aspp_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes!r}")
        self.aspp = ASPP(
            in_channels,
            atrous_rates=atrous_rates,
            out_channels=aspp_channels,
            dropout=aspp_dropout,
        )
        self.block = _conv_bn_relu(aspp_channels, aspp_channels, 3)
        self.score = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.score(self.block(self.aspp(features)))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class DilatedSegmenter(nn.Module):
    """A backbone, a head on ``c5`` and an optional auxiliary head on ``c4``, with scores
    bilinearly interpolated to the input size (DeepLabV3, FCN-ResNet).

    Args:
        backbone: maps normalised ``(B, 3, H, W)`` images to a dict with ``c5`` (and ``c4``
            when there is an auxiliary head), e.g. :func:`dilated_resnet_backbone`.
        classifier: ``c5 (B, C_5, h, w) -> (B, num_classes, h, w)``, e.g. :class:`DeepLabHead`
            or :class:`FCNHead`.
        num_classes: C, classes including background (labels ``0 .. C - 1``, 255 = ignore).
        aux_classifier: ``c4 -> (B, num_classes, h4, w4)`` trained with weight
            ``aux_loss_weight`` and unused at inference, or ``None``.
        aux_loss_weight: factor of the auxiliary cross-entropy (0.5, as torchvision's
            references).
        image_mean, image_std: per-channel statistics of ``[0, 1]`` RGB images used to
            normalise the input (ImageNet's by default).

    ``forward(images, targets=None)``: ``images`` is ``(B, 3, H, W)`` float in ``[0, 1]`` or a
    list of ``(3, H, W)`` (sizes may differ). In training mode ``targets`` (a list of dicts
    with ``semantic (H, W)`` int64, or one dict with ``semantic (B, H, W)``) gives
    ``{"loss_semantic": ...}`` plus ``"loss_aux"`` (already weighted) with an auxiliary head,
    each a cross-entropy averaged over the non-255 pixels. In eval mode the result is one dict
    per image: ``semantic (H, W)`` int64 (argmax) and ``semantic_logits (C, H, W)`` float.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        classifier: nn.Module,
        num_classes: int,
        aux_classifier: nn.Module | None = None,
        aux_loss_weight: float = AUX_LOSS_WEIGHT,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError("image_mean and image_std must have 3 values (RGB)")
        if aux_loss_weight < 0:
            raise ValueError(f"aux_loss_weight must be non-negative, got {aux_loss_weight!r}")
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.num_classes = num_classes
        self.aux_loss_weight = aux_loss_weight
        self.register_buffer("image_mean", torch.tensor(image_mean).reshape(3, 1, 1), False)
        self.register_buffer("image_std", torch.tensor(image_std).reshape(3, 1, 1), False)

    def _normalise(self, image: Tensor) -> Tensor:
        return (image - self.image_mean) / self.image_std

    def scores(self, batch: Tensor, *, with_aux: bool = False) -> tuple[Tensor, Tensor | None]:
        """Normalised ``(B, 3, H, W)`` -> logits ``(B, C, H, W)`` and, if ``with_aux`` and the
        model has an auxiliary head, its logits ``(B, C, H, W)`` (else ``None``).

        Equals torchvision's ``model(batch)["out"]`` (and ``["aux"]``) for a converted model.
        """
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"batch must have shape (B, 3, H, W), got {tuple(batch.shape)}")
        size = batch.shape[-2:]
        features = self.backbone(batch)
        coarse = self.classifier(features["c5"])  # (B, C, H/8, W/8) for output stride 8
        logits = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        if not with_aux or self.aux_classifier is None:
            return logits, None
        coarse_aux = self.aux_classifier(features["c4"])  # (B, C, h4, w4)
        aux_logits = F.interpolate(coarse_aux, size=size, mode="bilinear", align_corners=False)
        return logits, aux_logits

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
            return self._losses(image_list, sizes, gt_maps)
        return self._predict(image_list, sizes)

    def _losses(
        self, image_list: list[Tensor], sizes: list[tuple[int, int]], gt_maps: list[Tensor]
    ) -> dict[str, Tensor]:
        size = (max(h for h, _ in sizes), max(w for _, w in sizes))
        batch = _stack_padded([self._normalise(i) for i in image_list], size, 0.0)
        logits, aux_logits = self.scores(batch, with_aux=True)  # (B, C, Hmax, Wmax) each
        gt_semantic = _stack_padded(gt_maps, size, IGNORE_INDEX).to(logits.device)
        losses = {"loss_semantic": semantic_loss(logits, gt_semantic)}
        if aux_logits is not None:
            losses["loss_aux"] = self.aux_loss_weight * semantic_loss(aux_logits, gt_semantic)
        return losses

    def _predict(
        self, image_list: list[Tensor], sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, size in enumerate(sizes):
            groups[size].append(index)
        predictions: list[dict[str, Tensor]] = [{} for _ in image_list]
        for indices in groups.values():
            batch = torch.stack([self._normalise(image_list[i]) for i in indices])
            logits, _ = self.scores(batch)  # (b, C, H, W)
            for index, image_logits in zip(indices, logits, strict=True):
                predictions[index] = {
                    "semantic": image_logits.argmax(0),
                    "semantic_logits": image_logits,
                }
        return predictions


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _dilated_backbone(
    depth: int,
    *,
    aux: bool,
    norm: NormName,
    trainable_layers: int,
    weights_path: str | Path | None,
) -> nn.Module:
    return dilated_resnet_backbone(
        depth,
        replace_stride_with_dilation=(False, True, True),
        norm=norm,
        trainable_layers=trainable_layers,
        returned_layers=(3, 4) if aux else (4,),
        weights_path=weights_path,
    )


def deeplabv3_resnet(
    *,
    depth: int = 50,
    num_classes: int = 21,
    aux: bool = False,
    atrous_rates: Sequence[int] = DEEPLAB_RATES,
    norm: NormName = "batch",
    trainable_layers: int = 5,
    weights_path: str | Path | None = None,
) -> DilatedSegmenter:
    """DeepLabV3 over a dilated ResNet-``depth`` (50, 101 or 152; output stride 8), as
    torchvision's ``deeplabv3_resnet50/101``: :class:`DeepLabHead` on ``c5`` (2048 channels)
    and, with ``aux``, an :class:`FCNHead` on ``c4`` (1024 channels).

    ``norm``, ``trainable_layers`` and ``weights_path`` (a local torchvision ImageNet ResNet
    state dict) are passed to :func:`dilated_resnet_backbone`.
    """
    backbone = _dilated_backbone(
        depth, aux=aux, norm=norm, trainable_layers=trainable_layers, weights_path=weights_path
    )
    return DilatedSegmenter(
        backbone=backbone,
        classifier=DeepLabHead(backbone.out_channels["c5"], num_classes, atrous_rates=atrous_rates),
        aux_classifier=FCNHead(backbone.out_channels["c4"], num_classes) if aux else None,
        num_classes=num_classes,
    )


def fcn_resnet_dilated(
    *,
    depth: int = 50,
    num_classes: int = 21,
    aux: bool = False,
    norm: NormName = "batch",
    trainable_layers: int = 5,
    weights_path: str | Path | None = None,
) -> DilatedSegmenter:
    """torchvision's "FCN-ResNet" (``fcn_resnet50/101``): an :class:`FCNHead` on ``c5`` of a
    dilated ResNet-``depth`` (50, 101 or 152; output stride 8) and, with ``aux``, another on
    ``c4``. Not the paper's FCN-32s/16s/8s (see :class:`~.fcn.FCN`): no skips, no learned
    upsampling.

    ``norm``, ``trainable_layers`` and ``weights_path`` (a local torchvision ImageNet ResNet
    state dict) are passed to :func:`dilated_resnet_backbone`.
    """
    backbone = _dilated_backbone(
        depth, aux=aux, norm=norm, trainable_layers=trainable_layers, weights_path=weights_path
    )
    return DilatedSegmenter(
        backbone=backbone,
        classifier=FCNHead(backbone.out_channels["c5"], num_classes),
        aux_classifier=FCNHead(backbone.out_channels["c4"], num_classes) if aux else None,
        num_classes=num_classes,
    )
