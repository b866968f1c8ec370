"""Dense-CRF post-processing of a semantic segmentation (DeepLab's recipe, Chen et al. 2015).

The network's per-pixel class probabilities are the CRF's unary term and
`structvision.ops.dense_crf` returns the refined marginals; the refined label map is their
argmax. `CRFRefiner` wraps any segmenter that predicts ``semantic_logits`` so that evaluation
and prediction code need not know the CRF is there:

    refined = CRFRefiner(model, bilateral_sxy=20.0).eval()
    prediction = refined([image])[0]   # semantic (H, W), semantic_probs (C, H, W)

In training mode the wrapper is the wrapped model: the CRF is a post-processor here (the
trainable CRF layer is `structvision.ops.DenseCRF`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from structvision.ops import dense_crf

__all__ = ["CRF_PARAMETERS", "CRFRefiner", "check_crf_parameters", "refine_with_crf"]

#: The keyword arguments of `dense_crf` that a user may set for post-processing.
CRF_PARAMETERS = (
    "iterations",
    "gaussian_sxy",
    "gaussian_weight",
    "bilateral_sxy",
    "bilateral_srgb",
    "bilateral_weight",
)


def check_crf_parameters(parameters: Mapping[str, Any]) -> dict[str, float]:
    """The parameters as numbers; an unknown name or a non-numeric value raises naming it."""
    checked = {}
    for name, value in parameters.items():
        if name not in CRF_PARAMETERS:
            raise ValueError(
                f"CRF parameter {name!r} is unknown; choose from {', '.join(CRF_PARAMETERS)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"CRF parameter {name}={value!r} must be a number")
        if name == "iterations" and not (float(value).is_integer() and value >= 0):
            raise ValueError(f"CRF parameter iterations={value!r} must be a whole number >= 0")
        checked[name] = int(value) if name == "iterations" else float(value)
    return checked


def refine_with_crf(
    image: Tensor, prediction: Mapping[str, Tensor], **crf_parameters: float
) -> dict[str, Tensor]:
    """Refine one image's prediction; adds ``semantic_probs (C, H, W)`` (the CRF marginals)
    and replaces ``semantic (H, W)`` by their argmax.

    ``image`` is ``(3, H, W)`` float in [0, 1]; ``prediction`` must hold
    ``semantic_logits (C, H, W)``; ``crf_parameters`` are `dense_crf`'s keyword arguments.
    """
    if "semantic_logits" not in prediction:
        raise ValueError(
            "the dense CRF refines semantic segmentations: the prediction has no "
            f"'semantic_logits' (has {sorted(prediction)})"
        )
    logits = prediction["semantic_logits"]
    if logits.dim() != 3 or logits.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"semantic_logits must be (C, H, W) with the image's (H, W) = "
            f"{tuple(image.shape[-2:])}, got {tuple(logits.shape)}"
        )
    probs = logits.float().softmax(dim=0)  # (C, H, W)
    refined = dense_crf(image.to(probs.device), probs, **check_crf_parameters(crf_parameters))
    return {**prediction, "semantic": refined.argmax(dim=0), "semantic_probs": refined}


class CRFRefiner(nn.Module):
    """A segmenter followed by the dense CRF at inference.

    Args:
        segmenter: a model whose eval-mode predictions hold ``semantic_logits (C, H, W)``
            in the input image's coordinates (e.g. `FCN`).
        **crf_parameters: `dense_crf`'s keyword arguments (`CRF_PARAMETERS`).
    """

    def __init__(self, segmenter: nn.Module, **crf_parameters: float) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.crf_parameters = check_crf_parameters(crf_parameters)

    def forward(self, images: Tensor | Sequence[Tensor], targets: Any = None) -> Any:
        if self.training:
            return self.segmenter(images, targets)
        predictions = self.segmenter(images)
        return [
            refine_with_crf(image, prediction, **self.crf_parameters)
            for image, prediction in zip(images, predictions, strict=True)
        ]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.crf_parameters.items())
