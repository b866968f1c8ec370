"""structvision.models: backbones, the feature pyramid, and the task models built on them.

Models take explicit keyword arguments and sub-modules; they never read a config object or the
command line.
"""

from structvision.models.backbones import resnet_backbone, small_backbone
from structvision.models.fpn import BackboneWithFPN, FeaturePyramidNetwork

__all__ = ["BackboneWithFPN", "FeaturePyramidNetwork", "resnet_backbone", "small_backbone"]
