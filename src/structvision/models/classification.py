"""Image classification over structvision's trunks: the pretraining task of the other recipes.

:class:`ImageClassifier` puts global average pooling and one linear layer on a backbone's
deepest map. Its ``backbone`` keeps the parameter names the detectors' and segmenters'
backbones use, so a trained trunk can start them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.backbones import small_backbone

__all__ = ["ConvolutionalClassifier", "ImageClassifier", "classifier_small", "convolutionalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """``backbone`` (normalised ``(B, 3, H, W)`` -> dict of maps, the last the deepest), global
    average pooling, dropout and a linear layer to ``num_classes`` logits.

    ``forward(images, targets=None)``: ``images`` is ``(B, 3, H, W)`` in ``[0, 1]`` or a list
    of equal-size ``(3, H, W)``. Training: ``targets[i]["label"]`` -> ``{"loss_cls"}``
    (cross-entropy). Eval: per image ``{"label": int64, "probabilities": (num_classes,)}``.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        feature_channels: int,
        num_classes: int,
        dropout: float = 0.1,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_channels, num_classes)
        self.register_buffer("image_mean", torch.tensor(image_mean).reshape(1, 3, 1, 1), False)
        self.register_buffer("image_std", torch.tensor(image_std).reshape(1, 3, 1, 1), False)

    def logits(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, num_classes)``."""
        features = self.backbone((images - self.image_mean) / self.image_std)
        deepest = list(features.values())[-1]  # (B, C, h, w)
        return self.fc(self.dropout(deepest.mean(dim=(2, 3))))

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[dict[str, Any]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        batch = images if isinstance(images, Tensor) else torch.stack(list(images))
        logits = self.logits(batch)
        if self.training:
            if targets is None:
                raise ValueError("targets must be given in training mode")
            labels = torch.stack([torch.as_tensor(t["label"]) for t in targets]).to(logits.device)
            return {"loss_cls": F.cross_entropy(logits, labels)}
        probabilities = logits.softmax(dim=1)
        return [{"label": p.argmax(), "probabilities": p} for p in probabilities]


def classifier_small(*, num_classes: int, width: int = 32, norm: str = "group") -> ImageClassifier:
    """The detectors' small backbone (:func:`~structvision.models.backbones.small_backbone`,
    ``c2 .. c5``) as a classifier; group norm by default, like the small detectors, so that its
    trunk starts them (``model.pretrained``)."""
    backbone = small_backbone(width=width, norm=norm)
    return ImageClassifier(
        backbone=backbone, feature_channels=backbone.out_channels["c5"], num_classes=num_classes
    )


class ConvolutionalClassifier(nn.Module):
    """A classifier "convolutionalised" (Long et al., 2015, section 3.1): its fully connected
    layer becomes the equivalent 1x1 convolution, so the net slides over an image of any size
    and returns a map of class scores, ``(B, K, H / 32, W / 32)``.

    The classifier pools before its linear layer; as both are linear, pooling the score map
    gives exactly the classifier's logits: ``scores(x).mean((2, 3)) == classifier.logits(x)``.
    """

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.backbone = classifier.backbone
        fc = classifier.fc
        self.score = nn.Conv2d(fc.in_features, fc.out_features, kernel_size=1)
        with torch.no_grad():
            self.score.weight.copy_(fc.weight[:, :, None, None])
            self.score.bias.copy_(fc.bias)
        self.register_buffer("image_mean", classifier.image_mean.clone(), False)
        self.register_buffer("image_std", classifier.image_std.clone(), False)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> class scores ``(B, K, h, w)`` at the deepest stride."""
        features = self.backbone((images - self.image_mean) / self.image_std)
        return self.score(list(features.values())[-1])


def convolutionalize(classifier: ImageClassifier) -> ConvolutionalClassifier:
    """The fully convolutional version of ``classifier`` (:class:`ConvolutionalClassifier`),
    sharing its backbone."""
    return ConvolutionalClassifier(classifier)
