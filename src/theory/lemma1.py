"""Lemma 1: gradient descent / gradient flow from identity initialization (Sec. 2, App. II).

Setting of the lemma: white data (A2), d_x = d_y = d, all layers d x d, W_k(0) = I.
(i) gradient flow can only converge to a flattest minimum; (ii) if T is positive definite, GD
with eta <= (1/2m) min{1, sigma_max(T)^{-2(1-1/m)}} converges to a flattest minimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from src.theory.linear import Weights, end_to_end, excess_loss, partial_products


def lemma1_step_size(T: np.ndarray, depth: int) -> float:
    """The largest step size allowed by Lemma 1(ii): (1/2m) min{1, sigma_max(T)^{-2(1-1/m)}}."""
    sigma_max = np.linalg.norm(T, 2)
    return float(min(1.0, sigma_max ** (-2 * (1 - 1 / depth))) / (2 * depth))


def loss_gradients(
    weights: Sequence[np.ndarray], T: np.ndarray, sigma_x: np.ndarray | None = None
) -> Weights:
    """d l / d W_k = 2 P_k^T (W_m...W_1 - T) Sigma_x L_k^T for the loss (2).

    (Since Sigma_yx = T Sigma_x by eq. (3), this needs only T and Sigma_x, not the samples.)
    """
    residual = end_to_end(weights) - T
    if sigma_x is not None:
        residual = residual @ sigma_x
    lefts, rights = partial_products(weights)
    return [2.0 * P.T @ residual @ L.T for L, P in zip(lefts, rights)]


@dataclass
class DescentResult:
    """Outcome of `gradient_descent_from_identity`."""

    weights: Weights
    steps: int
    excess_loss: float
    converged: bool
    balancedness: float  # max_k ||W_k W_k^T - W_{k+1}^T W_{k+1}||_F, conserved (= 0) by GF (S5)


def balancedness_violation(weights: Sequence[np.ndarray]) -> float:
    """max_k ||W_k W_k^T - W_{k+1}^T W_{k+1}||_F; gradient flow from W_k(0) = I keeps it 0 (S5)."""
    return float(
        max(
            (np.linalg.norm(A @ A.T - B.T @ B) for A, B in zip(weights[:-1], weights[1:])),
            default=0.0,
        )
    )


def gradient_descent_from_identity(
    T: np.ndarray,
    depth: int,
    lr: float,
    *,
    sigma_x: np.ndarray | None = None,
    max_steps: int = 200_000,
    excess_tol: float = 1e-14,
) -> DescentResult:
    """Full-batch GD on the loss (2) from W_k = I (square layers), until l - min l <= excess_tol.

    With a small ``lr`` this is the Euler discretization of gradient flow (Lemma 1(i)).
    """
    d = T.shape[0]
    if T.shape != (d, d):
        raise ValueError("Lemma 1 needs d_x = d_y (square layers)")
    weights = [np.eye(d) for _ in range(depth)]
    converged = False
    step = 0
    for step in range(1, max_steps + 1):
        grads = loss_gradients(weights, T, sigma_x)
        weights = [W - lr * G for W, G in zip(weights, grads)]
        if step % 10 == 0 or step == max_steps:
            value = excess_loss(weights, T, sigma_x)
            if not np.isfinite(value):
                break
            if value <= excess_tol:
                converged = True
                break
    return DescentResult(
        weights, step, excess_loss(weights, T, sigma_x), converged, balancedness_violation(weights)
    )
