"""structvision.models.detection: region proposals and (upcoming) R-CNN detectors.

:mod:`~structvision.models.detection.proposals` holds Selective Search proposals (OpenCV),
the on-disk :class:`ProposalCache` and proposal-recall metrics and plots.
"""

from structvision.models.detection.proposals import (
    ProposalCache,
    plot_recall,
    proposal_recall,
    recall_curve,
    selective_search,
)

__all__ = [
    "ProposalCache",
    "plot_recall",
    "proposal_recall",
    "recall_curve",
    "selective_search",
]
