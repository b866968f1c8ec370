"""Single-object tracking: the tracker interface, SINT (Siamese instance search) and OpenCV's
trackers (SiamFC to come)."""

from structvision.models.tracking.base import Tracker, as_box
from structvision.models.tracking.classical import OPENCV_TRACKERS, OpenCVTracker
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
    "Tracker",
    "as_box",
    "contrastive_loss",
    "radius_candidates",
    "sample_training_boxes",
    "sint_small",
]
