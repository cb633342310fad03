"""Independent torch (float64, CPU) autograd references for the closed-form Hessians.

These differentiate the sample loss (2) directly, so they share no algebra with Lemma 3 / eq. (9).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from src.theory.linear import flatten_weights, layer_dims


def _network_loss(dims: Sequence[int], X: np.ndarray, Y: np.ndarray):
    """w -> mean_i ||y_i - W_m...W_1 x_i||^2 (eq. 2) with w = [vec(W_1); ...] column-major."""
    Xt = torch.as_tensor(X, dtype=torch.float64)
    Yt = torch.as_tensor(Y, dtype=torch.float64)

    def loss(w: torch.Tensor) -> torch.Tensor:
        out, start = Xt.T, 0
        for k in range(1, len(dims)):
            size = dims[k] * dims[k - 1]
            # Column-major vec: reshape row-major to (d_{k-1}, d_k), then transpose.
            W = w[start : start + size].reshape(dims[k - 1], dims[k]).T
            start += size
            out = W @ out
        return ((Yt.T - out) ** 2).sum(dim=0).mean()

    return loss


def autograd_hessian(weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """N x N Hessian of the sample loss (2) at ``weights`` by torch.autograd.functional.hessian."""
    loss = _network_loss(layer_dims(weights), X, Y)
    w = torch.as_tensor(flatten_weights(weights), dtype=torch.float64)
    return torch.autograd.functional.hessian(loss, w, vectorize=True).numpy()


def autograd_gradient(weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Gradient of the sample loss (2) (zero at a global minimum)."""
    loss = _network_loss(layer_dims(weights), X, Y)
    w = torch.tensor(flatten_weights(weights), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(w), w)
    return grad.numpy()


def _scalar_loss(x: np.ndarray, y: np.ndarray):
    """w -> mean_i (y_i - w_m...w_1 x_i)^2, the scalar loss (S9)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    return lambda w: ((yt - torch.prod(w) * xt) ** 2).mean()


def autograd_scalar_hessian(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """m x m Hessian of the scalar sample loss (S9)."""
    wt = torch.as_tensor(w, dtype=torch.float64)
    return torch.autograd.functional.hessian(_scalar_loss(x, y), wt).numpy()


def autograd_line_curvature(
    w_at: np.ndarray, w_other: np.ndarray, x: np.ndarray, y: np.ndarray
) -> float:
    """d^2/dt^2 l(w_at + t alpha) at t = 0, alpha = unit vector from w_other to w_at (S24)."""
    alpha = (np.asarray(w_at, float) - w_other) / np.linalg.norm(np.asarray(w_at) - w_other)
    loss = _scalar_loss(x, y)
    base = torch.as_tensor(w_at, dtype=torch.float64)
    direction = torch.as_tensor(alpha, dtype=torch.float64)
    t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    value = loss(base + t * direction)
    (first,) = torch.autograd.grad(value, t, create_graph=True)
    (second,) = torch.autograd.grad(first, t)
    return float(second)
