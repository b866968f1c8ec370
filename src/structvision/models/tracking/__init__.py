"""Single-object tracking: the tracker interface, SINT (Siamese instance search), SiamFC and
OpenCV's trackers."""

from structvision.models.tracking.base import Tracker, as_box
from structvision.models.tracking.classical import OPENCV_TRACKERS, OpenCVTracker
from structvision.models.tracking.siamfc import SiamFC, SiamFCTracker, siamfc
from structvision.models.tracking.sint import (
    SINT,
    SINTTracker,
    contrastive_loss,
    radius_candidates,
    sample_training_boxes,
    sint_small,
)

__all__ = [
    "OPENCV_TRACKERS",
    "SINT",
    "OpenCVTracker",
    "SINTTracker",
    "SiamFC",
    "SiamFCTracker",
    "Tracker",
    "as_box",
    "contrastive_loss",
    "radius_candidates",
    "sample_training_boxes",
    "siamfc",
    "sint_small",
]
