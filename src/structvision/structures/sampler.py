"""Sampling of a fixed-size, class-balanced minibatch of training examples per image."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BalancedPositiveNegativeSampler"]


class BalancedPositiveNegativeSampler:
    """Pick up to ``batch_size_per_image`` examples per image with a bounded positive share.

    Labels are per example (anchor or proposal): ``>= 1`` positive, ``0`` negative, ``-1``
    ignored (never sampled). At most ``int(batch_size_per_image * positive_fraction)`` positives
    are drawn uniformly at random; negatives fill the rest of the batch (so an image with few
    positives gets more negatives). Either count is capped by the number available.

    Same semantics and, with the default generator, the same random draws as torchvision's
    ``models.detection._utils.BalancedPositiveNegativeSampler``; the masks are ``bool`` instead
    of ``uint8``.

    Args:
        batch_size_per_image: number of examples to sample per image.
        positive_fraction: largest fraction of the batch that may be positive, in ``[0, 1]``.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image < 0:
            raise ValueError(f"batch_size_per_image must be >= 0, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __repr__(self) -> str:
        return (
            f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction})"
        )

    def __call__(
        self, matched_labels: list[Tensor], *, generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Sample examples for each image.

        Args:
            matched_labels: one ``(N_i,)`` integer tensor per image with values ``-1``, ``0`` or
                ``>= 1``.
            generator: random generator on the labels' device; the global one when ``None``.

        Returns:
            ``(pos_masks, neg_masks)``: two lists of ``(N_i,)`` bool tensors marking the sampled
            positives and negatives of each image.
        """
        pos_masks, neg_masks = [], []
        for image_idx, labels in enumerate(matched_labels):
            if not isinstance(labels, Tensor) or labels.ndim != 1:
                shape = getattr(labels, "shape", type(labels).__name__)
                raise ValueError(
                    f"matched_labels[{image_idx}] must have shape (N,), got {tuple(shape)}"
                )
            pos_mask, neg_mask = self._sample_image(labels, generator)
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks

    def _sample_image(
        self, labels: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """``(N,)`` labels -> ``(N,)`` bool positive mask and ``(N,)`` bool negative mask."""
        positive_idxs = torch.where(labels >= 1)[0]
        negative_idxs = torch.where(labels == 0)[0]

        num_pos = int(self.batch_size_per_image * self.positive_fraction)
        num_pos = min(positive_idxs.numel(), num_pos)
        num_neg = min(negative_idxs.numel(), self.batch_size_per_image - num_pos)

        device = labels.device
        pos_perm = torch.randperm(positive_idxs.numel(), device=device, generator=generator)
        neg_perm = torch.randperm(negative_idxs.numel(), device=device, generator=generator)
        sampled_pos_idxs = positive_idxs[pos_perm[:num_pos]]
        sampled_neg_idxs = negative_idxs[neg_perm[:num_neg]]

        pos_mask = torch.zeros_like(labels, dtype=torch.bool)
        neg_mask = torch.zeros_like(labels, dtype=torch.bool)
        pos_mask[sampled_pos_idxs] = True
        neg_mask[sampled_neg_idxs] = True
        return pos_mask, neg_mask
