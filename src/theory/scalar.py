"""Scalar networks f_w(x) = w_m ... w_1 x (Sec. 3, App. III).

With sigma_x2 = E[x^2], sigma_xy = E[xy] and tau = sigma_xy / sigma_x2 (S10), the loss (S9) is
l(w) = E[y^2] - 2 sigma_xy p + sigma_x2 p^2 with p = prod_j w_j, i.e.
l(w) - min l = sigma_x2 (p - tau)^2. All functions take float64 numpy arrays ``w`` of shape (m,).
"""

from __future__ import annotations

import itertools

import numpy as np


def scalar_data_with_target(
    tau: float, n: int, rng: np.random.Generator, noise_std: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Samples (x, y) with sigma_xy / sigma_x2 = tau exactly (S10): y = tau x + e, e orthogonal to x."""
    x = rng.standard_normal(n) * np.exp(rng.uniform(-1.0, 1.0))
    e = noise_std * rng.standard_normal(n)
    e -= (e @ x) / (x @ x) * x
    return x, tau * x + e


def scalar_excess_loss(w: np.ndarray, tau: float, sigma_x2: float = 1.0) -> np.ndarray:
    """l(w) - min l = sigma_x2 (prod_j w_j - tau)^2 (from (S9)); ``w`` may be batched (..., m)."""
    return sigma_x2 * (np.prod(w, axis=-1) - tau) ** 2


def scalar_loss_gradient(w: np.ndarray, tau: float, sigma_x2: float = 1.0) -> np.ndarray:
    """d l / d w_k = 2 sigma_x2 (prod_j w_j - tau) prod_{j != k} w_j, eq. (S12)."""
    w = np.asarray(w, float)
    others = np.array([np.prod(np.delete(w, k)) for k in range(len(w))])
    return 2 * sigma_x2 * (np.prod(w) - tau) * others


def is_scalar_minimum(w: np.ndarray, tau: float, rtol: float = 1e-12) -> bool:
    """w is in Omega of eq. (7): prod_j w_j = tau."""
    return bool(abs(np.prod(w) - tau) <= rtol * abs(tau))


def random_scalar_minimum(
    tau: float,
    depth: int,
    rng: np.random.Generator,
    signs: np.ndarray | None = None,
    spread: float = 1.0,
) -> np.ndarray:
    """A random point of Omega (eq. 7): log-normal magnitudes rescaled so that prod_j w_j = tau.

    ``signs`` fixes the sign pattern (its product must be sgn(tau)); otherwise it is random.
    """
    if signs is None:
        signs = rng.choice([-1.0, 1.0], size=depth)
        if np.prod(signs) != np.sign(tau):
            signs[rng.integers(depth)] *= -1
    elif np.prod(signs) != np.sign(tau):
        raise ValueError("the product of the signs must equal sgn(tau)")
    logs = spread * rng.standard_normal(depth)
    logs += (np.log(abs(tau)) - logs.sum()) / depth
    return np.asarray(signs, float) * np.exp(logs)


def scalar_hessian_at_minimum(w: np.ndarray, tau: float, sigma_x2: float = 1.0) -> np.ndarray:
    """H_w = 2 sigma_x2 tau^2 z z^T with z = [1/w_1, ..., 1/w_m], eq. (8)-(9)."""
    z = 1.0 / np.asarray(w, float)
    return 2 * sigma_x2 * tau**2 * np.outer(z, z)


def scalar_sharpness(w: np.ndarray, tau: float, sigma_x2: float = 1.0) -> np.ndarray:
    """lambda_max(H_w) = 2 sigma_x2 tau^2 sum_j 1 / w_j^2 at a minimum, eq. (10); batched."""
    return 2 * sigma_x2 * tau**2 * np.sum(1.0 / np.asarray(w, float) ** 2, axis=-1)


def flattest_scalar_sharpness(tau: float, depth: int, sigma_x2: float = 1.0) -> float:
    """min over Omega of lambda_max = 2 m sigma_x2 tau^{2(1 - 1/m)}, eq. (13)."""
    return float(2 * depth * sigma_x2 * abs(tau) ** (2 * (1 - 1 / depth)))


def flattest_scalar_minima(tau: float, depth: int) -> np.ndarray:
    """All 2^{m-1} points of Omega_0, eq. (12): |w_j| = |tau|^{1/m}, prod sgn(w_j) = sgn(tau)."""
    root = abs(tau) ** (1.0 / depth)
    points = [
        np.array(signs) * root
        for signs in itertools.product([1.0, -1.0], repeat=depth)
        if np.prod(signs) == np.sign(tau)
    ]
    return np.array(points)


def line_curvature(
    w_at: np.ndarray, w_other: np.ndarray, tau: float, sigma_x2: float = 1.0
) -> float:
    """Second derivative of l along the unit line through two minima, at ``w_at`` (S24)-(S25).

    alpha = (w_at - w_other) / ||w_at - w_other|| and alpha^T H(w_at) alpha =
    2 sigma_x2 tau^2 (alpha^T z)^2 with z = 1 / w_at (S16). This is the sharpness that the
    "interpolation" picture shows around ``w_at``.
    """
    alpha = (np.asarray(w_at, float) - w_other) / np.linalg.norm(np.asarray(w_at) - w_other)
    return float(2 * sigma_x2 * tau**2 * (alpha @ (1.0 / np.asarray(w_at, float))) ** 2)


def appears_sharper_on_line(w1: np.ndarray, w2: np.ndarray) -> bool:
    """Claim S1 (S23): on the line through them, w1 looks sharper than w2 iff
    sum_i w2_i / w1_i > sum_i w1_i / w2_i (same sign pattern, S27)."""
    return bool(np.sum(w2 / w1) > np.sum(w1 / w2))


def lemma2_partner(w_flat: np.ndarray, w_other: np.ndarray) -> np.ndarray:
    """w3_i = (w1_i)^2 / w2_i, eq. (S29): a minimum that the line picture shows flatter than w1.

    Keeps the sign pattern and prod_i w3_i = tau^2 / tau = tau, so w3 is in Omega.
    """
    return np.asarray(w_flat, float) ** 2 / np.asarray(w_other, float)


def two_layer_descent(
    start: tuple[float, float],
    tau: float,
    lr: float,
    steps: int,
    momentum: float = 0.0,
    sigma_x2: float = 1.0,
) -> np.ndarray:
    """(Heavy-ball) gradient descent on l(w1, w2) = sigma_x2 (w1 w2 - tau)^2 (+ const), Fig. 1.

    Returns the trajectory, an array of shape (steps + 1, 2). A minimum w is linearly stable for
    GD only if lambda_max(H_w) <= 2 / lr (App. I, (S4)); for heavy ball with momentum beta the
    threshold is 2 (1 + beta) / lr.
    """
    w = np.array(start, float)
    velocity = np.zeros(2)
    path = [w.copy()]
    for _ in range(steps):
        velocity = momentum * velocity - lr * scalar_loss_gradient(w, tau, sigma_x2)
        w = w + velocity
        path.append(w.copy())
        if not np.all(np.isfinite(w)):
            break
    return np.array(path)
