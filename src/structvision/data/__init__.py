"""structvision.data: built-in generators, real-format readers, transforms and collate.

- ``structvision.data.synthetic``: procedural datasets with exact ground truth (``shapes``).
- ``structvision.data.coco``: any COCO-format folder, validated record by record.
- ``structvision.data.voc``: the Pascal VOC detection layout.
- ``structvision.data.export``: writing datasets in the COCO format.
- ``structvision.data.spec``: the ``--data SPEC`` strings of the command line.
"""

from structvision.data.coco import CocoDataset, DatasetError, Problem, check_coco
from structvision.data.collate import collate_dense, collate_detection
from structvision.data.spec import build_dataset, parse_spec
from structvision.data.voc import VOC_CLASSES, VOCDetection

__all__ = [
    "VOC_CLASSES",
    "CocoDataset",
    "DatasetError",
    "Problem",
    "VOCDetection",
    "build_dataset",
    "check_coco",
    "collate_dense",
    "collate_detection",
    "parse_spec",
]
