"""Surface normals and intrinsic images: a multi-scale network (Eigen & Fergus style) with
normal, depth, albedo and shading heads, their losses, the baselines and a global
Lambertian lighting fitted to a predicted shading."""

from structvision.models.intrinsic.baselines import normals_from_depth, poisson_integrate, retinex
from structvision.models.intrinsic.lighting import (
    Lighting,
    RelitIntrinsic,
    fit_lighting,
    relight_shading,
    shading_levels,
)
from structvision.models.intrinsic.losses import (
    normal_loss,
    ordinal_reflectance_loss,
    reconstruction_loss,
    scale_invariant_log_loss,
)
from structvision.models.intrinsic.networks import IntrinsicNet, MultiScaleDense, NormalsNet

__all__ = [
    "IntrinsicNet",
    "Lighting",
    "MultiScaleDense",
    "NormalsNet",
    "RelitIntrinsic",
    "fit_lighting",
    "normal_loss",
    "normals_from_depth",
    "ordinal_reflectance_loss",
    "poisson_integrate",
    "reconstruction_loss",
    "relight_shading",
    "retinex",
    "scale_invariant_log_loss",
    "shading_levels",
]
