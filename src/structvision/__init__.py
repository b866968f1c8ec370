"""structvision: structured prediction in computer vision.

Boxes, instance masks, keypoints, per-pixel labels refined by a dense CRF, tracks, depth and
flow — the classic systems of the field as one library and command-line tool.
"""

__version__ = "0.1.0"
