"""structvision.models.segmentation: fully convolutional networks for per-pixel labels."""

from structvision.models.segmentation.deeplab import (
    ASPP,
    DeepLabHead,
    DilatedSegmenter,
    FCNHead,
    deeplabv3_resnet,
    fcn_resnet_dilated,
)
from structvision.models.segmentation.fcn import (
    FCN,
    BilinearUpsample,
    VGGFeatures,
    bilinear_upsampling_weights,
    fcn_resnet,
    fcn_small,
    fcn_vgg,
    load_vgg_weights,
    semantic_loss,
)

__all__ = [
    "ASPP",
    "FCN",
    "BilinearUpsample",
    "DeepLabHead",
    "DilatedSegmenter",
    "FCNHead",
    "VGGFeatures",
    "bilinear_upsampling_weights",
    "deeplabv3_resnet",
    "fcn_resnet",
    "fcn_resnet_dilated",
    "fcn_small",
    "fcn_vgg",
    "load_vgg_weights",
    "semantic_loss",
]
