"""structvision.evaluation: metrics for every task (COCO AP via pycocotools, VOC mAP, ...).

Every evaluator follows one protocol, which the training engine relies on:
``update(targets, predictions)``, a picklable ``records`` list that distributed ranks gather
and concatenate, and ``compute() -> dict[str, float]`` with flat keys such as ``bbox/AP``.
"""

from structvision.evaluation.classification import ClassificationEvaluator
from structvision.evaluation.coco import COCOEvaluator
from structvision.evaluation.depth import DepthEvaluator, depth_errors
from structvision.evaluation.flow import FlowEvaluator, flow_errors
from structvision.evaluation.intrinsic import (
    IntrinsicEvaluator,
    NormalEvaluator,
    lmse,
    normal_errors,
    whdr,
)
from structvision.evaluation.segmentation import SegmentationEvaluator
from structvision.evaluation.tracking import TrackingEvaluator
from structvision.evaluation.voc import VOCEvaluator, voc_ap

__all__ = [
    "COCOEvaluator",
    "ClassificationEvaluator",
    "DepthEvaluator",
    "FlowEvaluator",
    "IntrinsicEvaluator",
    "NormalEvaluator",
    "SegmentationEvaluator",
    "TrackingEvaluator",
    "VOCEvaluator",
    "depth_errors",
    "flow_errors",
    "lmse",
    "normal_errors",
    "voc_ap",
    "whdr",
]
