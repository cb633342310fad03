"""One-dimensional cross-sections of the full training loss (Fig. 2, Fig. 7, Lemma 2).

* `loss_along_line`: L(theta_a + t (theta_b - theta_a)), the interpolation picture of Fig. 7(a)
  (t = 0 at theta_a, t = 1 at theta_b). Lemma 2 / App. III.2: the curvature seen along this
  line is generally not the sharpness of either minimum, so this plot can mislead.
* `loss_along_direction`: L(theta_0 + t d) for a unit direction d, e.g. the top Hessian
  eigenvector (Fig. 7(d), (e)); there L(t) ~ L(0) + 0.5 lambda_max t^2, returned for overlay.

The model is evaluated with `torch.func.functional_call` on the given flat vectors, so its own
parameters and train/eval flags are unchanged afterwards. Plotting lives with the figures.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from src.analysis.landscape import LossFn, LossLandscape, dot64, norm64


def _losses(landscape: LossLandscape, origin: torch.Tensor, step: torch.Tensor, ts) -> np.ndarray:
    values = [landscape.loss(origin + float(t) * step) for t in np.asarray(ts, dtype=np.float64)]
    return torch.stack(values).to("cpu", torch.float64).numpy()  # one transfer for the grid


def loss_along_line(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    ts,
    chunk_size: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Full training loss at theta_a + t (theta_b - theta_a) for every t in ts."""
    landscape = LossLandscape(
        model, loss_fn, inputs, targets, chunk_size=chunk_size, dtype=dtype, device=device
    )
    theta_a = landscape.as_vector(theta_a)
    return _losses(landscape, theta_a, landscape.as_vector(theta_b) - theta_a, ts)


def second_difference_at_zero(ts, losses) -> float | None:
    """Three-point estimate of L''(0) from a grid that contains 0 and points on both sides
    (exact for quadratics, also on uneven grids); None if the grid does not allow it."""
    ts = np.asarray(ts, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    order = np.argsort(ts)
    ts, losses = ts[order], losses[order]
    zero = np.flatnonzero(ts == 0.0)
    if len(zero) != 1 or zero[0] == 0 or zero[0] == len(ts) - 1:
        return None
    i = zero[0]
    left, right = -ts[i - 1], ts[i + 1]
    slope_right = (losses[i + 1] - losses[i]) / right
    slope_left = (losses[i] - losses[i - 1]) / left
    return float(2.0 * (slope_right - slope_left) / (left + right))


def loss_along_direction(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    theta0: torch.Tensor | None,
    direction: torch.Tensor,
    ts,
    chunk_size: int | None = None,
    *,
    eigenvalue: float | None = None,
    normalize: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Full training loss at theta0 + t d for every t in ts.

    Args:
        theta0: flat parameters (None: the model's own).
        direction: flat direction; scaled to unit norm if `normalize`, so t is the Euclidean
            distance in parameter space.
        eigenvalue: e.g. `SharpnessResult.eigenvalue` when `direction` is its eigenvector; adds
            the quadratic model L(0) + 0.5 lambda t^2.

    Returns a dict of numpy arrays / floats: ts, loss, loss_at_0, slope_at_0 (grad . d, ~0 at
    a minimum), direction_norm (before normalization), curvature_at_0 (three-point second
    difference at t = 0 from the grid points next to 0, if there are such on both sides), and
    when eigenvalue is given: eigenvalue, quadratic (L(0) + 0.5 lambda t^2, the overlay of
    Fig. 7) and taylor (quadratic + slope_at_0 t, for points that are not exact minima).

    ReLU nets: L is only piecewise smooth along a line (activation patterns change), so the
    second difference equals d^T H d only for steps below the distance to the nearest kink. On
    a 784-wide denoiser with 256 samples this was 1e-4 (steps of 1e-3..1e-1 were off by
    0.1-0.4%); use tiny steps next to 0 when checking lambda_max.
    """
    landscape = LossLandscape(
        model, loss_fn, inputs, targets, chunk_size=chunk_size, dtype=dtype, device=device
    )
    theta0 = landscape.as_vector(theta0)
    direction = landscape.as_vector(direction)
    direction_norm = float(norm64(direction))
    if direction_norm == 0.0:
        raise ValueError("direction is zero")
    if normalize:
        direction = (direction.to(torch.float64) / direction_norm).to(landscape.dtype)
    ts = np.asarray(ts, dtype=np.float64)
    losses = _losses(landscape, theta0, direction, ts)
    loss_at_0 = float(landscape.loss(theta0))
    slope_at_0 = float(dot64(landscape.gradient(theta0), direction))
    result = {
        "ts": ts,
        "loss": losses,
        "loss_at_0": loss_at_0,
        "slope_at_0": slope_at_0,
        "direction_norm": direction_norm,
        "curvature_at_0": second_difference_at_zero(ts, losses),
    }
    if eigenvalue is not None:
        # second-order Taylor model along d with d^T H d = lambda (d a unit eigenvector)
        result["eigenvalue"] = float(eigenvalue)
        result["quadratic"] = loss_at_0 + 0.5 * float(eigenvalue) * ts**2
        result["taylor"] = result["quadratic"] + slope_at_0 * ts
    return result


def curvature_along(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    direction: torch.Tensor,
    chunk_size: int | None = None,
) -> float:
    """d^T H d at the model's own parameters for a unit direction d (flat): the exact curvature
    of the training loss along d, one Hessian-vector product. Along the line between two
    minima this is what the interpolation picture shows at each end (Fig. 7, Lemma 2), to be
    set beside each end's lambda_max."""
    landscape = LossLandscape(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    return float(direction @ landscape.hvp(direction))
