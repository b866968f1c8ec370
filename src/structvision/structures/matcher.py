"""Assignment of predictions (proposals, anchors) to ground-truth objects by match quality."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Matcher"]


class Matcher:
    """Give each prediction the index of its best ground truth, or a negative code.

    The input is an ``(M, N)`` matrix of match quality (usually IoU) between ``M`` ground-truth
    objects and ``N`` predictions. For each prediction, the best ground truth ``m`` (the first one
    on ties) is kept when its quality is ``>= high_threshold``; otherwise the prediction gets
    :attr:`BETWEEN_THRESHOLDS` (``-2``) when the quality is in ``[low_threshold, high_threshold)``
    and :attr:`BELOW_LOW_THRESHOLD` (``-1``) when it is ``< low_threshold``.

    With ``allow_low_quality_matches``, every prediction that attains some ground truth's highest
    quality (ties included) is matched to its own best ground truth even below the thresholds, so
    that no ground truth is left without a prediction (Faster R-CNN's RPN rule).

    Results equal torchvision's ``models.detection._utils.Matcher`` with one deliberate difference:
    an image with no ground truth (``M == 0``) returns :attr:`BELOW_LOW_THRESHOLD` for every
    prediction (all background) instead of raising, and ``N == 0`` returns an empty tensor.

    Args:
        high_threshold: quality at or above which a match is kept.
        low_threshold: quality below which a prediction is background; ``<= high_threshold``.
        allow_low_quality_matches: also match each ground truth's best predictions.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(
        self,
        high_threshold: float,
        low_threshold: float,
        *,
        allow_low_quality_matches: bool = False,
    ) -> None:
        if low_threshold > high_threshold:
            raise ValueError(
                f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})"
            )
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """Match predictions to ground truth.

        Args:
            match_quality_matrix: ``(M, N)`` quality of (ground truth ``m``, prediction ``n``).

        Returns:
            ``(N,)`` int64 ``matched_idxs``: a ground-truth index in ``[0, M - 1]``, or
            ``BELOW_LOW_THRESHOLD`` / ``BETWEEN_THRESHOLDS``.
        """
        if not isinstance(match_quality_matrix, Tensor) or match_quality_matrix.ndim != 2:
            shape = getattr(match_quality_matrix, "shape", type(match_quality_matrix).__name__)
            raise ValueError(f"match_quality_matrix must have shape (M, N), got {tuple(shape)}")
        num_gt, num_preds = match_quality_matrix.shape
        if num_gt == 0 or num_preds == 0:
            device = match_quality_matrix.device
            return torch.full(
                (num_preds,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=device
            )

        best_quality, matched_idxs = match_quality_matrix.max(dim=0)  # (N,), (N,)
        best_gt_idxs = matched_idxs.clone() if self.allow_low_quality_matches else None

        below_low = best_quality < self.low_threshold
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matched_idxs[below_low] = self.BELOW_LOW_THRESHOLD
        matched_idxs[between] = self.BETWEEN_THRESHOLDS

        if best_gt_idxs is not None:
            self._restore_low_quality_matches(matched_idxs, best_gt_idxs, match_quality_matrix)
        return matched_idxs

    @staticmethod
    def _restore_low_quality_matches(
        matched_idxs: Tensor, best_gt_idxs: Tensor, match_quality_matrix: Tensor
    ) -> None:
        """For each ground truth, re-match (in place) the predictions of its highest quality.

        ``matched_idxs`` and ``best_gt_idxs`` are ``(N,)``; a prediction that ties for several
        ground truths' maxima gets its own best ground truth ``best_gt_idxs[n]``.
        """
        best_quality_per_gt = match_quality_matrix.max(dim=1).values  # (M,)
        is_gt_best = match_quality_matrix == best_quality_per_gt[:, None]  # (M, N)
        pred_idxs = torch.where(is_gt_best)[1]
        matched_idxs[pred_idxs] = best_gt_idxs[pred_idxs]
