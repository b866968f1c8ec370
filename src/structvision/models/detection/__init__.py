"""structvision.models.detection: proposals and the R-CNN detectors.

- ``proposals``: Selective Search (OpenCV), the on-disk ``ProposalCache``, proposal recall.
- ``transform``, ``anchors``, ``rpn``, ``roi_heads``: the parts, each mirroring torchvision's
  numerics so that converted torchvision weights give equal detections.
- ``fast_rcnn``: Fast R-CNN on external (Selective Search) proposals with RoI pooling, SPP or
  RoIAlign.
- ``faster_rcnn``: Faster R-CNN (RPN + box head), single-level and FPN, with builders.
- ``mask_rcnn``: Mask R-CNN (Faster R-CNN + a per-class 28 x 28 mask branch), with builders.
- ``keypoint_rcnn``: Keypoint R-CNN (Faster R-CNN + 56 x 56 keypoint heatmaps), with builders.
- ``tta``: horizontal-flip test-time augmentation for the three R-CNNs (``FlipTTA``).
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
from structvision.models.detection.keypoint_rcnn import (
    KeypointBranch,
    KeypointHead,
    KeypointPredictor,
    KeypointRCNN,
    keypoint_rcnn,
    keypoint_rcnn_loss,
    keypoint_rcnn_resnet50_fpn,
    keypoint_rcnn_small_fpn,
)
from structvision.models.detection.mask_rcnn import (
    MaskBranch,
    MaskHead,
    MaskPredictor,
    MaskRCNN,
    mask_rcnn,
    mask_rcnn_loss,
    mask_rcnn_resnet50_fpn,
    mask_rcnn_resnet50_fpn_v2,
    mask_rcnn_small_fpn,
    mask_targets,
)
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
from structvision.models.detection.tta import FlipTTA, flip_boxes

__all__ = [
    "AnchorGenerator",
    "ConvFCHead",
    "DetectionTransform",
    "FastRCNN",
    "FastRCNNPredictor",
    "FasterRCNN",
    "FlipTTA",
    "ImageBatch",
    "KeypointBranch",
    "KeypointHead",
    "KeypointPredictor",
    "KeypointRCNN",
    "MaskBranch",
    "MaskHead",
    "MaskPredictor",
    "MaskRCNN",
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
    "flip_boxes",
    "keypoint_rcnn",
    "keypoint_rcnn_loss",
    "keypoint_rcnn_resnet50_fpn",
    "keypoint_rcnn_small_fpn",
    "mask_rcnn",
    "mask_rcnn_loss",
    "mask_rcnn_resnet50_fpn",
    "mask_rcnn_resnet50_fpn_v2",
    "mask_rcnn_small_fpn",
    "mask_targets",
    "plot_recall",
    "proposal_recall",
    "recall_curve",
    "rpn_loss",
    "selective_search",
]
