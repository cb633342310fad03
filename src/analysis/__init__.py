"""Measurements on trained networks: sharpness (top Hessian eigenvalue), Hessian trace and
spectral density, intermediate gains, loss cross-sections. Framework-free: any `nn.Module`,
loss function and data tensors."""

from src.analysis.cross_sections import (
    curvature_along,
    loss_along_direction,
    loss_along_line,
    second_difference_at_zero,
)
from src.analysis.gains import (
    GainProfile,
    gain_profile,
    gains_at_input_norms,
    linear_gain_profile,
    training_input_gains,
)
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
from src.analysis.spectrum import (
    SpectralDensity,
    TopEigenpairs,
    TraceResult,
    broadened_density,
    exact_trace_by_basis,
    gap_ratio,
    hessian_spectral_density,
    hessian_trace,
    spectral_density_of_landscape,
    top_hessian_eigenpairs,
    trace_of_landscape,
)

__all__ = [
    "GainProfile",
    "LossLandscape",
    "SharpnessNotConverged",
    "SharpnessResult",
    "SpectralDensity",
    "TopEigenpairs",
    "TraceResult",
    "auto_chunk_size",
    "broadened_density",
    "curvature_along",
    "eval_mode",
    "exact_hessian",
    "exact_trace_by_basis",
    "flat_parameters",
    "full_gradient",
    "full_loss",
    "gain_profile",
    "gains_at_input_norms",
    "gap_ratio",
    "hessian_eigenpairs",
    "hessian_spectral_density",
    "hessian_trace",
    "hessian_vector_product",
    "linear_gain_profile",
    "loss_along_direction",
    "loss_along_line",
    "second_difference_at_zero",
    "spectral_density_of_landscape",
    "top_hessian_eigenpairs",
    "top_hessian_eigenvalue",
    "trace_of_landscape",
    "training_input_gains",
]
