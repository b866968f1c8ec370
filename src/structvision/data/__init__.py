"""structvision.data: built-in generators, real-format readers, transforms and collate.

- ``structvision.data.synthetic``: procedural datasets with exact ground truth (``shapes``).
- ``structvision.data.coco``: any COCO-format folder, validated record by record.
- ``structvision.data.voc``, ``voc_segmentation``: the Pascal VOC detection and segmentation
  layouts.
- ``structvision.data.export``: writing datasets in the COCO format.
- ``structvision.data.spec``: the ``--data SPEC`` strings of the command line.
"""

from structvision.data.coco import CocoDataset, DatasetError, Problem, check_coco
from structvision.data.collate import collate_dense, collate_detection
from structvision.data.spec import build_dataset, parse_spec
from structvision.data.voc import VOC_CLASSES, VOCDetection
from structvision.data.voc_segmentation import VOC_SEGMENTATION_CLASSES, VOCSegmentation

__all__ = [
    "VOC_CLASSES",
    "VOC_SEGMENTATION_CLASSES",
    "CocoDataset",
    "DatasetError",
    "Problem",
    "VOCDetection",
    "VOCSegmentation",
    "build_dataset",
    "check_coco",
    "collate_dense",
    "collate_detection",
    "parse_spec",
]
