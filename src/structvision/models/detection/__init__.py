"""structvision.models.detection: proposals and the R-CNN detectors.

- ``proposals``: Selective Search (OpenCV), the on-disk ``ProposalCache``, proposal recall.
- ``transform``, ``anchors``, ``rpn``, ``roi_heads``: the parts, each mirroring torchvision's
  numerics so that converted torchvision weights give equal detections.
- ``fast_rcnn``: Fast R-CNN on external (Selective Search) proposals with RoI pooling, SPP or
  RoIAlign.
- ``faster_rcnn``: Faster R-CNN (RPN + box head), single-level and FPN, with builders.
"""

from structvision.models.detection.anchors import AnchorGenerator
from structvision.models.detection.fast_rcnn import (
    FastRCNN,
    SelectiveSearchProposer,
    fast_rcnn_small,
)
from structvision.models.detection.faster_rcnn import (
    FasterRCNN,
    faster_rcnn,
    faster_rcnn_resnet50_fpn,
    faster_rcnn_resnet50_fpn_v2,
    faster_rcnn_small_c4,
    faster_rcnn_small_fpn,
)
from structvision.models.detection.image_batch import ImageBatch
from structvision.models.detection.proposals import (
    ProposalCache,
    plot_recall,
    proposal_recall,
    recall_curve,
    selective_search,
)
from structvision.models.detection.roi_heads import (
    ConvFCHead,
    FastRCNNPredictor,
    RoIHeads,
    SingleLevelRoIPool,
    TwoMLPHead,
    fastrcnn_loss,
)
from structvision.models.detection.rpn import RegionProposalNetwork, RPNHead, rpn_loss
from structvision.models.detection.transform import DetectionTransform

__all__ = [
    "AnchorGenerator",
    "ConvFCHead",
    "DetectionTransform",
    "FastRCNN",
    "FastRCNNPredictor",
    "FasterRCNN",
    "ImageBatch",
    "ProposalCache",
    "RPNHead",
    "RegionProposalNetwork",
    "RoIHeads",
    "SelectiveSearchProposer",
    "SingleLevelRoIPool",
    "TwoMLPHead",
    "fast_rcnn_small",
    "faster_rcnn",
    "faster_rcnn_resnet50_fpn",
    "faster_rcnn_resnet50_fpn_v2",
    "faster_rcnn_small_c4",
    "faster_rcnn_small_fpn",
    "fastrcnn_loss",
    "plot_recall",
    "proposal_recall",
    "recall_curve",
    "rpn_loss",
    "selective_search",
]
