"""Surface normals and intrinsic images: losses and baselines (networks to come)."""

from structvision.models.intrinsic.baselines import normals_from_depth, poisson_integrate, retinex
from structvision.models.intrinsic.losses import (
    normal_loss,
    ordinal_reflectance_loss,
    reconstruction_loss,
    scale_invariant_log_loss,
)

__all__ = [
    "normal_loss",
    "normals_from_depth",
    "ordinal_reflectance_loss",
    "poisson_integrate",
    "reconstruction_loss",
    "retinex",
    "scale_invariant_log_loss",
]
