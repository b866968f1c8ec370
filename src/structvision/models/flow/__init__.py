"""Optical flow: RAFT and FlowNetS (one file per model), classical OpenCV baselines.

Every model takes ``model(image1, image2)`` (``(B, 3, H, W)`` frames in ``[0, 1]``, any size) or
``model(pairs)`` (``(B, 6, H, W)``), returns ``{"loss_flow": ...}`` in training (with targets
holding ``flow``) and ``[{"flow": (2, H, W)}]`` in eval mode (see
:mod:`structvision.models.flow.common`).
"""

from structvision.models.flow.classical import CLASSICAL_METHODS, ClassicalFlow
from structvision.models.flow.flownet import FlowNetS, flownet_s, multiscale_epe
from structvision.models.flow.raft import (
    RAFT,
    RAFT_CONFIGS,
    raft,
    raft_large,
    raft_small,
    sequence_loss,
)

__all__ = [
    "CLASSICAL_METHODS",
    "RAFT",
    "RAFT_CONFIGS",
    "ClassicalFlow",
    "FlowNetS",
    "flownet_s",
    "multiscale_epe",
    "raft",
    "raft_large",
    "raft_small",
    "sequence_loss",
]
