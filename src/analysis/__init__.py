"""Measurements on trained networks: sharpness (top Hessian eigenvalue), intermediate gains,
loss cross-sections. Framework-free: any `nn.Module`, loss function and data tensors."""

from src.analysis.cross_sections import (
    loss_along_direction,
    loss_along_line,
    second_difference_at_zero,
)
from src.analysis.gains import GainProfile, gain_profile, linear_gain_profile
from src.analysis.hessian import (
    SharpnessNotConverged,
    SharpnessResult,
    exact_hessian,
    full_gradient,
    full_loss,
    hessian_eigenpairs,
    hessian_vector_product,
    top_hessian_eigenvalue,
)
from src.analysis.landscape import LossLandscape, auto_chunk_size, eval_mode, flat_parameters

__all__ = [
    "GainProfile",
    "LossLandscape",
    "SharpnessNotConverged",
    "SharpnessResult",
    "auto_chunk_size",
    "eval_mode",
    "exact_hessian",
    "flat_parameters",
    "full_gradient",
    "full_loss",
    "gain_profile",
    "hessian_eigenpairs",
    "hessian_vector_product",
    "linear_gain_profile",
    "loss_along_direction",
    "loss_along_line",
    "second_difference_at_zero",
    "top_hessian_eigenvalue",
]
