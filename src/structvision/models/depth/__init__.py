"""structvision.models.depth: monocular depth from stereo supervision (Monodepth)."""

from structvision.models.depth.classical import MeanDepthBaseline, SGBMStereo
from structvision.models.depth.losses import (
    appearance_loss,
    lr_consistency_loss,
    monodepth_loss,
    reconstruct_left,
    reconstruct_right,
    smoothness_loss,
    ssim,
    supervised_depth_loss,
    warp_horizontal,
)
from structvision.models.depth.monodepth import (
    MONODEPTH_BUILDERS,
    Monodepth,
    MonodepthDecoder,
    ResNetEncoder,
    SmallEncoder,
    monodepth_resnet18,
    monodepth_small,
    post_process_disparity,
)

__all__ = [
    "MONODEPTH_BUILDERS",
    "MeanDepthBaseline",
    "Monodepth",
    "MonodepthDecoder",
    "ResNetEncoder",
    "SGBMStereo",
    "SmallEncoder",
    "appearance_loss",
    "lr_consistency_loss",
    "monodepth_loss",
    "monodepth_resnet18",
    "monodepth_small",
    "post_process_disparity",
    "reconstruct_left",
    "reconstruct_right",
    "smoothness_loss",
    "ssim",
    "supervised_depth_loss",
    "warp_horizontal",
]
