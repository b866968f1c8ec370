"""structvision.models.segmentation: fully convolutional networks for per-pixel labels."""

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
    "FCN",
    "BilinearUpsample",
    "VGGFeatures",
    "bilinear_upsampling_weights",
    "fcn_resnet",
    "fcn_small",
    "fcn_vgg",
    "load_vgg_weights",
    "semantic_loss",
]
