"""Single-object tracking: the tracker interface and OpenCV's trackers (SINT and SiamFC to come)."""

from structvision.models.tracking.base import Tracker, as_box
from structvision.models.tracking.classical import OPENCV_TRACKERS, OpenCVTracker

__all__ = ["OPENCV_TRACKERS", "OpenCVTracker", "Tracker", "as_box"]
