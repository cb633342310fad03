"""Verify every theoretical claim of the paper over randomized cases, and report one JSON file.

Usage::

    python -m src.theory.verify --out results/theory/verify.json            # full set
    python -m src.theory.verify --out /tmp/v.json --quick                   # a quick subset

The JSON has ``{"claims": {NAME: {"cases", "worst_error", "tolerance", "passed", "measure",
"parts"}}, "findings": {...}, "settings": {...}}``; the command exits with status 1 if any claim
fails. ``findings`` holds numbers that are reported, not checked (the non-white conjecture after
eq. (29)).

Every case draws its own generator ``np.random.default_rng([base_seed, experiment id, case])``;
depths cycle through 1..10, layer sizes alternate between square and rectangular (d_x != d_y,
hidden widths >= min(d_x, d_y) as A1 requires, often with a bottleneck at exactly that width).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.theory import autograd_reference as ref
from src.theory import lemma1, linear, scalar

DEFAULT_CASES = 60  # randomized cases per (network) claim in the full run
QUICK_CASES = 8


# --------------------------------------------------------------------------------------------
# Random problems
# --------------------------------------------------------------------------------------------


def case_depth(case: int, low: int = 1, high: int = 10) -> int:
    """Depths cycle through low..high."""
    return low + case % (high - low + 1)


def case_is_rectangular(case: int) -> bool:
    """Alternates, and swaps the alternation every 10 cases so every depth gets both kinds."""
    return (case + case // 10) % 2 == 1


def random_dims(
    rng: np.random.Generator, depth: int, rectangular: bool, max_width: int = 5
) -> tuple[int, ...]:
    """Layer sizes (d_0, ..., d_m). Square: all equal d in 2..max_width. Rectangular: d_x != d_y
    in 1..max_width, hidden widths in [min(d_x, d_y), max_width + 1], half the time with one
    bottleneck of width exactly min(d_x, d_y) (the edge of assumption A1)."""
    if not rectangular:
        return (int(rng.integers(2, max_width + 1)),) * (depth + 1)
    d_x, d_y = (int(d) for d in rng.choice(np.arange(1, max_width + 1), size=2, replace=False))
    low = min(d_x, d_y)
    hidden = [int(rng.integers(low, max_width + 2)) for _ in range(depth - 1)]
    if hidden and rng.random() < 0.5:
        hidden[int(rng.integers(len(hidden)))] = low
    return (d_x, *hidden, d_y)


@dataclass
class Problem:
    """Regression data, its moments and its least-squares map T (eq. 3)."""

    dims: tuple[int, ...]
    X: np.ndarray
    Y: np.ndarray
    sigma_x: np.ndarray | None  # None for white data (A2): Sigma_x = I exactly
    T: np.ndarray


def random_problem(rng: np.random.Generator, dims: tuple[int, ...], white: bool) -> Problem:
    """Synthetic data (App. IX.1) for layer sizes ``dims``; T computed from the data by eq. (3)."""
    n = max(12, 3 * dims[0])
    X, Y = linear.synthetic_regression(n, dims[0], dims[-1], rng, white=white)
    T = linear.least_squares_target(X, Y)
    sigma_x = None if white else linear.second_moments(X, Y)[0]
    return Problem(dims, X, Y, sigma_x, T)


def random_scalar_problem(rng: np.random.Generator) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(tau, sigma_x2, x, y) with tau = sigma_xy / sigma_x2 computed from the samples (S10)."""
    magnitude = math.exp(rng.uniform(math.log(0.1), math.log(10.0)))
    x, y = scalar.scalar_data_with_target(rng.choice([-1.0, 1.0]) * magnitude, 30, rng)
    sigma_x2 = float(np.mean(x * x))
    return float(np.mean(x * y) / sigma_x2), sigma_x2, x, y


def _rel(a: float, b: float) -> float:
    return float(abs(a - b) / abs(b))


# --------------------------------------------------------------------------------------------
# Experiments: each runs one randomized case and returns {claim name: {part: error}}
# --------------------------------------------------------------------------------------------

Errors = dict[str, dict[str, float]]


def scalar_hessian_case(rng: np.random.Generator, case: int) -> Errors:
    """Eq. (9)-(10) vs the autograd Hessian of the scalar sample loss (S9) at a random minimum."""
    tau, sigma_x2, x, y = random_scalar_problem(rng)
    w = scalar.random_scalar_minimum(tau, case_depth(case), rng)
    H_auto = ref.autograd_scalar_hessian(w, x, y)
    H = scalar.scalar_hessian_at_minimum(w, tau, sigma_x2)
    top_auto = float(np.linalg.eigvalsh(H_auto)[-1])
    return {
        "scalar_hessian_eq9_eq10": {
            "hessian_eq9": float(np.linalg.norm(H - H_auto) / np.linalg.norm(H_auto)),
            "sharpness_eq10": _rel(float(scalar.scalar_sharpness(w, tau, sigma_x2)), top_auto),
        }
    }


def scalar_flattest_case(rng: np.random.Generator, case: int) -> Errors:
    """Eq. (12)-(13): the 2^{m-1} points of Omega_0 attain (13); random minima never beat it."""
    tau, sigma_x2, _, _ = random_scalar_problem(rng)
    depth = case_depth(case)
    bound = scalar.flattest_scalar_sharpness(tau, depth, sigma_x2)
    flattest = scalar.flattest_scalar_minima(tau, depth)
    others = np.array(
        [
            scalar.random_scalar_minimum(tau, depth, rng, spread=s)
            for s in np.geomspace(1e-6, 2.0, 60)
        ]
    )
    return {
        "scalar_flattest_eq12_eq13": {
            "omega0_sharpness": float(
                np.max(np.abs(scalar.scalar_sharpness(flattest, tau, sigma_x2) - bound)) / bound
            ),
            "omega0_in_omega": float(np.max(np.abs(np.prod(flattest, axis=1) - tau)) / abs(tau)),
            "random_minimum_below_bound": float(
                max(0.0, np.max(bound - scalar.scalar_sharpness(others, tau, sigma_x2)) / bound)
            ),
        }
    }


def line_curvature_case(rng: np.random.Generator, case: int) -> Errors:
    """Claim S1: line curvature (S25) vs autograd, and criterion (S23) vs comparing curvatures."""
    tau, sigma_x2, x, y = random_scalar_problem(rng)
    depth = case_depth(case, 2, 10)
    w1 = scalar.random_scalar_minimum(tau, depth, rng)
    w2 = scalar.random_scalar_minimum(tau, depth, rng, signs=np.sign(w1))
    c1, c2 = (scalar.line_curvature(a, b, tau, sigma_x2) for a, b in ((w1, w2), (w2, w1)))
    a1, a2 = (ref.autograd_line_curvature(a, b, x, y) for a, b in ((w1, w2), (w2, w1)))
    mismatch = 0.0
    if abs(c1 - c2) > 1e-9 * max(c1, c2):  # (S23) decides strict inequalities only
        mismatch = float(scalar.appears_sharper_on_line(w1, w2) != (c1 > c2))
    return {
        "claim_s1_line_curvature": {
            "curvature_vs_autograd": max(_rel(c1, a1), _rel(c2, a2)),
            "s23_criterion_mismatch": mismatch,
        }
    }


def lemma2_case(rng: np.random.Generator, case: int) -> Errors:
    """Lemma 2 via (S29): w3 = w1^2 / w2 is truly sharper than the flattest w1, yet looks flatter."""
    tau, sigma_x2, _, _ = random_scalar_problem(rng)
    depth = case_depth(case, 3, 10)
    omega0 = scalar.flattest_scalar_minima(tau, depth)
    w1 = omega0[int(rng.integers(len(omega0)))]
    for _ in range(1000):  # draw w2 until the picture shows it sharper (Lemma 2's hypothesis)
        w2 = scalar.random_scalar_minimum(tau, depth, rng, signs=np.sign(w1))
        if scalar.appears_sharper_on_line(w2, w1):
            break
    else:
        return {"lemma2_interpolation_deceives": {"no_hypothesis_case": 1.0}}
    w3 = scalar.lemma2_partner(w1, w2)
    looks_flatter = scalar.line_curvature(w3, w1, tau, sigma_x2) < scalar.line_curvature(
        w1, w3, tau, sigma_x2
    )
    truly_sharper = scalar.scalar_sharpness(w3, tau, sigma_x2) > scalar.scalar_sharpness(
        w1, tau, sigma_x2
    )
    return {
        "lemma2_interpolation_deceives": {
            "w3_in_omega": float(abs(np.prod(w3) - tau) / abs(tau)),
            "w3_not_shown_flatter": float(not looks_flatter),
            "w3_not_truly_sharper": float(not truly_sharper),
        }
    }


def s32_case(rng: np.random.Generator, case: int) -> Errors:
    """(S32): for m = 2 both minima of a pair show the same sharpness along their line."""
    tau, sigma_x2, x, y = random_scalar_problem(rng)
    omega0 = scalar.flattest_scalar_minima(tau, 2)
    # Fig. 2's pair (flattest, other) on even cases, two arbitrary minima on odd cases.
    w1 = (
        omega0[int(rng.integers(len(omega0)))]
        if case % 2 == 0
        else scalar.random_scalar_minimum(tau, 2, rng, spread=1.0)
    )
    # Nearly coincident minima make both line curvatures ~0 and their relative difference pure
    # rounding ((alpha^T z)^2 cancels), so the pair is kept at least 5% apart.
    while True:
        w2 = scalar.random_scalar_minimum(tau, 2, rng, signs=np.sign(w1), spread=1.0)
        if np.linalg.norm(w2 - w1) >= 0.05 * max(np.linalg.norm(w1), np.linalg.norm(w2)):
            break
    c1, c2 = (scalar.line_curvature(a, b, tau, sigma_x2) for a, b in ((w1, w2), (w2, w1)))
    a1, a2 = (ref.autograd_line_curvature(a, b, x, y) for a, b in ((w1, w2), (w2, w1)))
    return {
        "s32_two_layer_equal_line_sharpness": {
            "formula": abs(c1 - c2) / max(c1, c2),
            "autograd": abs(a1 - a2) / max(a1, a2),
        }
    }


def _sample_minima(problem: Problem, rng: np.random.Generator) -> dict[str, linear.Weights]:
    T, dims = problem.T, problem.dims
    return {
        "canonical_eq27": linear.canonical_flattest_minimum(T, dims),
        "arbitrary_s104": linear.arbitrary_minimum(T, dims, rng),
        "walk_start_s105": linear.random_walk_start(T, dims, rng),
        "theorem4": linear.theorem4_minimum(T, dims, rng),
    }


def lemma3_case(rng: np.random.Generator, case: int) -> Errors:
    """Lemma 3 (15)-(16) and eq. (20) vs autograd at four kinds of exact minima of T from (3)."""
    white = (case // 3) % 2 == 0
    dims = random_dims(rng, case_depth(case), case_is_rectangular(case))
    problem = random_problem(rng, dims, white)
    hessian_error = eigen_error = 0.0
    for weights in _sample_minima(problem, rng).values():
        H_auto = ref.autograd_hessian(weights, problem.X, problem.Y)
        H_phi = linear.hessian_at_minimum(weights, problem.sigma_x)
        top_small = linear.top_hessian_eigenvalue_at_minimum(weights, problem.sigma_x)
        top_auto = float(np.linalg.eigvalsh(H_auto)[-1])
        hessian_error = max(
            hessian_error, float(np.linalg.norm(H_phi - H_auto) / np.linalg.norm(H_auto))
        )
        eigen_error = max(eigen_error, _rel(top_small, top_auto))
    return {
        "lemma3_hessian_phi_vs_autograd": {
            "hessian_frobenius": hessian_error,
            "top_eigenvalue_eq20": eigen_error,
        }
    }


def _top_eigenspace_residual(H: np.ndarray, b: np.ndarray, rtol: float = 1e-9) -> float:
    """Norm of the part of unit b outside the eigenspace of H's largest eigenvalue."""
    evals, evecs = np.linalg.eigh(H)
    basis = evecs[:, evals >= evals[-1] * (1 - rtol)]
    return float(np.linalg.norm(b - basis @ (basis.T @ b)))


def theorem1_case(rng: np.random.Generator, case: int) -> Errors:
    """Theorem 1 with white data: canonical sharpness, top eigenvector, and the lower bound."""
    dims = random_dims(rng, case_depth(case), case_is_rectangular(case))
    problem = random_problem(rng, dims, white=True)
    T, m = problem.T, len(dims) - 1
    bound = linear.flattest_sharpness(T, m)
    canonical = linear.canonical_flattest_minimum(T, dims)
    H = linear.hessian_at_minimum(canonical)
    vector_error = signed_error = 0.0
    for weights in (canonical, linear.theorem4_minimum(T, dims, rng)):
        H_w = linear.hessian_at_minimum(weights)
        b = linear.hessian_top_eigenvector_theorem1(weights, T)
        vector_error = max(vector_error, _top_eigenspace_residual(H_w, b))
        evals, evecs = np.linalg.eigh(H_w)
        if evals[-1] - evals[-2] > 1e-6 * evals[-1]:  # simple top eigenvalue: compare vectors
            e = evecs[:, -1]
            signed_error = max(signed_error, min(np.linalg.norm(e - b), np.linalg.norm(e + b)))
    # Minima of many kinds, including tiny gauge moves away from a flattest minimum.
    minima = [linear.arbitrary_minimum(T, dims, rng) for _ in range(3)]
    minima += [linear.random_walk_start(T, dims, rng) for _ in range(3)]
    minima += [linear.theorem4_minimum(T, dims, rng) for _ in range(2)]
    for eps in (1e-6, 1e-3, 1e-1):
        gauges = [np.eye(d) + eps * rng.standard_normal((d, d)) for d in dims[1:-1]]
        minima.append(linear.apply_gauge(canonical, gauges))
        minima.append(linear.add_null_space_components(canonical, rng, eps))
    below = max(
        max(0.0, (bound - linear.top_hessian_eigenvalue_at_minimum(w)) / bound) for w in minima
    )
    return {
        "theorem1_canonical_sharpness": {
            "eq20_small_matrix": _rel(linear.top_hessian_eigenvalue_at_minimum(canonical), bound),
            "dense_hessian": _rel(float(np.linalg.eigvalsh(H)[-1]), bound),
        },
        "theorem1_top_eigenvector": {
            "outside_top_eigenspace": vector_error,
            "distance_up_to_sign": signed_error,
        },
        "theorem1_no_minimum_flatter_than_bound": {"relative_shortfall": below},
    }


def random_walk_case(rng: np.random.Generator, case: int) -> Errors:
    """Greedy walk (S105)-(S106) from a random minimum; Thm 2 and 3 at the point it reaches."""
    dims = random_dims(rng, case_depth(case), case_is_rectangular(case))
    problem = random_problem(rng, dims, white=True)
    T, m = problem.T, len(dims) - 1
    bound = linear.flattest_sharpness(T, m)
    start = linear.random_walk_start(T, dims, rng)
    walk, result = linear.find_flattest_minimum(start, rng, T=T, target=bound)
    thm2 = linear.theorem2_deviations(result.weights, T)
    thm3 = linear.theorem3_deviations(result.weights, T)
    return {
        "random_walk_reaches_bound": {
            "relative_excess": abs(result.sharpness - bound) / bound,
            "product_error": float(
                np.linalg.norm(linear.end_to_end(result.weights) - T) / np.linalg.norm(T)
            ),
            "info_random_walk_phase_relative_excess": (walk.sharpness - bound) / bound,
            "info_start_relative_excess": (walk.history[0] - bound) / bound,
        },
        "random_walk_theorem2": thm2,
        "random_walk_theorem3": thm3,
    }


def theorem4_case(rng: np.random.Generator, case: int) -> Errors:
    """Theorem 4 minima (random orthogonal factors) are flattest; Thm 2-3 hold exactly on Omega_0."""
    dims = random_dims(rng, case_depth(case), case_is_rectangular(case))
    problem = random_problem(rng, dims, white=True)
    T, m = problem.T, len(dims) - 1
    s_max = float(np.linalg.norm(T, 2))
    bound = linear.flattest_sharpness(T, m)
    weights = linear.theorem4_minimum(T, dims, rng)
    construction = max(
        max(_rel(float(np.linalg.norm(W, 2)), s_max ** (1 / m)) for W in weights),
        float(np.linalg.norm(linear.end_to_end(weights) - T) / np.linalg.norm(T)),
    )
    exact: dict[str, float] = {}
    for w in (linear.canonical_flattest_minimum(T, dims), weights):
        for part, value in {
            **linear.theorem2_deviations(w, T),
            **linear.theorem3_deviations(w, T),
        }.items():
            exact[part] = max(exact.get(part, 0.0), float(value))
    return {
        "theorem4_sufficient_condition": {
            "sharpness": _rel(linear.top_hessian_eigenvalue_at_minimum(weights), bound),
            "construction": construction,
        },
        "theorem2_theorem3_exact_flattest": exact,
    }


def _symmetric_positive_definite(rng: np.random.Generator, d: int) -> np.ndarray:
    Q = linear.random_orthogonal(d, rng)
    return (Q * np.exp(rng.uniform(math.log(0.3), math.log(3.0), d))) @ Q.T


def _lemma1_errors(T_design, depth, lr_factor, rng, prefix) -> Errors:
    d = T_design.shape[0]
    X, Y = linear.data_with_target(T_design, max(12, 3 * d), rng, white=True)
    T = linear.least_squares_target(X, Y)  # eq. (3); equals T_design up to rounding
    lr = lr_factor * lemma1.lemma1_step_size(T, depth)
    result = lemma1.gradient_descent_from_identity(T, depth, lr, excess_tol=1e-14)
    bound = linear.flattest_sharpness(T, depth)
    # Sharpness of the point where GD stopped, from autograd (no assumption that it is a minimum).
    sharpness = float(np.linalg.eigvalsh(ref.autograd_hessian(result.weights, X, Y))[-1])
    minimum = linear.squared_loss(linear.canonical_flattest_minimum(T, (d,) * (depth + 1)), X, Y)
    loss_gap = linear.squared_loss(result.weights, X, Y) - minimum
    return {
        f"{prefix}_sharpness": {"relative_gap_to_bound": _rel(sharpness, bound)},
        f"{prefix}_loss": {
            "excess_loss": result.excess_loss if result.converged else math.inf,
            "sample_loss_difference": abs(loss_gap),
        },
    }


def lemma1_gd_case(rng: np.random.Generator, case: int) -> Errors:
    """Lemma 1(ii): symmetric positive definite T, eta = (1/2m) min{1, s^{-2(1-1/m)}}."""
    d = 1 + case % 5
    return _lemma1_errors(
        _symmetric_positive_definite(rng, d), case_depth(case), 1.0, rng, "lemma1_gd"
    )


def lemma1_flow_case(rng: np.random.Generator, case: int) -> Errors:
    """Lemma 1(i): non-symmetric T (det > 0), gradient flow approximated by GD with eta / 20."""
    d = 1 + case % 5
    while True:
        T = np.eye(d) + 0.6 * rng.standard_normal((d, d)) / math.sqrt(d)
        if np.linalg.det(T) > 0.05:
            break
    return _lemma1_errors(T, case_depth(case), 0.05, rng, "lemma1_gradient_flow")


def bounds_case(rng: np.random.Generator, case: int) -> Errors:
    """Lemma 4 (22), eq. (21), the lower bound nu(B) <= lambda_max (25), and max nu (26)."""
    depth = case_depth(case)
    dims = random_dims(rng, depth, case_is_rectangular(case))
    # Lemma 4 for an arbitrary chain of matrices.
    psis = [rng.standard_normal((dims[k], dims[k - 1])) for k in range(1, depth + 1)]
    lhs = sum(float(np.sum(P**2)) for P in psis)
    lemma4 = max(0.0, -linear.lemma4_gap(psis) / lhs)
    # Eq. (26), white data.
    white = random_problem(rng, dims, white=True)
    bound = linear.flattest_sharpness(white.T, depth)
    _, u, v = linear.top_singular_triplet(white.T)
    nu_best, _ = linear.maximize_nu(white.T, depth, rng, restarts=2)
    # Eq. (21) and (25), non-white data.
    problem = random_problem(rng, dims, white=False)
    sigma_x = problem.sigma_x
    eq21 = eq25 = 0.0
    nu_star, B_star = linear.maximize_nu(problem.T, depth, rng, sigma_x, restarts=2)
    for weights in (
        linear.arbitrary_minimum(problem.T, dims, rng),
        linear.random_walk_start(problem.T, dims, rng),
        linear.canonical_flattest_minimum(problem.T, dims),
    ):
        evals, evecs = np.linalg.eigh(linear.reduced_hessian(weights, sigma_x))
        top = float(evals[-1])
        B_top = linear.unvec(evecs[:, -1], (dims[-1], dims[0]))
        eq21 = max(eq21, _rel(linear.sharpness_objective_21(weights, B_top, sigma_x), top))
        for B in [B_star, B_top] + [rng.standard_normal(B_top.shape) for _ in range(5)]:
            eq21 = max(eq21, (linear.sharpness_objective_21(weights, B, sigma_x) - top) / top)
            eq25 = max(eq25, (linear.nu(B, problem.T, depth, sigma_x) - top) / top)
    return {
        "lemma4_inequality": {"relative_violation": lemma4},
        "eq21_variational_form": {"relative_error": max(0.0, eq21)},
        "eq25_lower_bound": {"relative_violation": max(0.0, eq25)},
        "eq26_max_nu_white": {
            "nu_at_uv": _rel(linear.nu(np.outer(u, v), white.T, depth), bound),
            "maximizer_vs_bound": _rel(nu_best, bound),
        },
    }


# --------------------------------------------------------------------------------------------
# Claim table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    tolerance: float
    measure: str


CLAIMS: dict[str, Claim] = {
    "scalar_hessian_eq9_eq10": Claim(
        1e-10,
        "relative Frobenius error of H = 2 s_x^2 tau^2 z z^T (9) vs autograd Hessian of the "
        "scalar sample loss, and relative error of lambda_max (10)",
    ),
    "scalar_flattest_eq12_eq13": Claim(
        1e-10,
        "relative error of (13) at all points of (12); relative amount by which any of 60 random "
        "minima is flatter than (13)",
    ),
    "claim_s1_line_curvature": Claim(
        1e-10,
        "relative error of alpha^T H alpha (S25) vs autograd d^2/dt^2 l(w + t alpha); 1 if the "
        "(S23) criterion disagrees with the curvature comparison",
    ),
    "lemma2_interpolation_deceives": Claim(
        1e-10,
        "given a flattest w1 and w2 shown sharper (Claim S1), w3 = w1^2/w2 (S29): relative error "
        "of prod w3 = tau; 1 if w3 is not shown flatter than w1, or not truly sharper",
    ),
    "s32_two_layer_equal_line_sharpness": Claim(
        1e-10, "m = 2: |c1 - c2| / max(c1, c2) for the two line curvatures (formula and autograd)"
    ),
    "lemma3_hessian_phi_vs_autograd": Claim(
        1e-10,
        "relative Frobenius error of 2 Phi Phi^T (15)-(16) vs torch.autograd.functional.hessian "
        "of the loss (2) at exact minima (white and non-white Sigma_x), and relative error of "
        "lambda_max from the small matrix 2 Phi^T Phi (20)",
    ),
    "theorem1_canonical_sharpness": Claim(
        1e-10, "|lambda_max - 2m s^(2(1-1/m))| / bound at the canonical solution (27)"
    ),
    "theorem1_top_eigenvector": Claim(
        1e-8,
        "norm of the part of the unit vector Phi(v kron u) outside the top eigenspace of the "
        "dense Hessian 2 Phi Phi^T, at canonical and Theorem 4 minima; where the top eigenvalue "
        "is simple also min(||e - b||, ||e + b||) with e the top eigenvector from eigh",
    ),
    "theorem1_no_minimum_flatter_than_bound": Claim(
        1e-10, "max(0, bound - lambda_max) / bound over (S104), (S105), Thm 4 and near-flat minima"
    ),
    "random_walk_reaches_bound": Claim(
        1e-3, "(lambda_max - bound) / bound at the end of the walk; product error ||W - T|| / ||T||"
    ),
    "random_walk_theorem2": Claim(
        1e-2,
        "at the walk's end, max over k: 1 - |cos| between v and M^T M v (M = W_k...W_1), relative "
        "error of ||M v|| vs s^(k/m), relative excess of s_max(M) over sqrt(m) s^(k/m); same for u",
    ),
    "random_walk_theorem3": Claim(
        1e-2,
        "at the walk's end, max over k: relative error of W_k r = c q and W_k^T q = c r "
        "(unit r_k, q_k, c = s^(1/m)), 1 - cos(r_{k+1}, q_k), relative error of ||r_k||, ||q_k||",
    ),
    "theorem4_sufficient_condition": Claim(
        1e-10,
        "|lambda_max - bound| / bound for minima with s_max(W_k) = s^(1/m) built from random "
        "orthogonal factors; relative construction error",
    ),
    "theorem2_theorem3_exact_flattest": Claim(
        1e-9, "Theorem 2 and 3 deviations (as for the walk) at canonical and Theorem 4 minima"
    ),
    "lemma1_gd_sharpness": Claim(
        1e-4, "Lemma 1(ii): |lambda_max(autograd Hessian at the end) - bound| / bound"
    ),
    "lemma1_gd_loss": Claim(1e-10, "Lemma 1(ii): l(w_end) - min l"),
    "lemma1_gradient_flow_sharpness": Claim(
        1e-4, "Lemma 1(i), GD with eta/20 as gradient flow: |lambda_max - bound| / bound"
    ),
    "lemma1_gradient_flow_loss": Claim(1e-10, "Lemma 1(i): l(w_end) - min l"),
    "lemma4_inequality": Claim(1e-10, "relative violation of (22)"),
    "eq21_variational_form": Claim(
        1e-10, "objective (21) at the top eigenvector vs lambda_max, and its excess for other B"
    ),
    "eq25_lower_bound": Claim(
        1e-10, "max(0, nu(B) - lambda_max) / lambda_max, non-white data, B random or maximized"
    ),
    "eq26_max_nu_white": Claim(
        1e-10, "relative error of nu(u v^T) and of the numerical max of nu vs 2m s^(2(1-1/m))"
    ),
}


@dataclass(frozen=True)
class Experiment:
    run: Callable[[np.random.Generator, int], Errors]
    weight: float  # cases = round(weight * base number of cases)


EXPERIMENTS: dict[str, Experiment] = {
    "scalar_hessian": Experiment(scalar_hessian_case, 5.0),
    "scalar_flattest": Experiment(scalar_flattest_case, 5.0),
    "line_curvature": Experiment(line_curvature_case, 5.0),
    "lemma2": Experiment(lemma2_case, 25.0),
    "s32": Experiment(s32_case, 5.0),
    "lemma3": Experiment(lemma3_case, 1.5),
    "theorem1": Experiment(theorem1_case, 1.5),
    "random_walk": Experiment(random_walk_case, 1.0),
    "theorem4": Experiment(theorem4_case, 2.0),
    "lemma1_gd": Experiment(lemma1_gd_case, 0.75),
    "lemma1_flow": Experiment(lemma1_flow_case, 0.5),
    "bounds": Experiment(bounds_case, 1.0),
}


def _case_rng(base_seed: int, name: str, case: int) -> np.random.Generator:
    return np.random.default_rng([base_seed, zlib.crc32(name.encode()), case])


def run_experiment(name: str, cases: int, base_seed: int = 0) -> dict[str, dict]:
    """Run ``cases`` cases of one experiment; worst error per claim and per part."""
    out: dict[str, dict] = {}
    for case in range(cases):
        errors = EXPERIMENTS[name].run(_case_rng(base_seed, name, case), case)
        for claim, parts in errors.items():
            entry = out.setdefault(claim, {"cases": 0, "parts": {}})
            entry["cases"] += 1
            for part, value in parts.items():
                value = float(value) if np.isfinite(value) else math.inf
                entry["parts"][part] = max(entry["parts"].get(part, -math.inf), value)
    return out


# --------------------------------------------------------------------------------------------
# Beyond the paper: the minimax conjecture for non-white Sigma_x (after eq. (29))
# --------------------------------------------------------------------------------------------

FINDING_DIMS = [
    (2, 2, 2),
    (2, 3, 2),
    (3, 3, 3),
    (2, 2, 2, 2),
    (2, 3, 4),
    (2, 2, 2, 2, 2),
    (3, 3, 3, 3),
]


def nonwhite_minimax_case(
    rng: np.random.Generator, dims: tuple[int, ...], white: bool, walks: int = 3
) -> dict:
    """min over minima of lambda_max (best of ``walks`` greedy walks) vs max_B nu(B) (eq. 25)."""
    problem = random_problem(rng, dims, white=white)
    m = len(dims) - 1
    best = None
    for _ in range(walks):
        start = linear.random_walk_start(problem.T, dims, rng)
        _, result = linear.find_flattest_minimum(start, rng, T=problem.T, sigma_x=problem.sigma_x)
        if best is None or result.sharpness < best.sharpness:
            best = result
    evecs = np.linalg.eigh(linear.reduced_hessian(best.weights, problem.sigma_x))[1]
    B_top = linear.unvec(evecs[:, -1], (dims[-1], dims[0]))
    # The maximizer does not see the walk's result: the two sides are estimated independently.
    nu_max, _ = linear.maximize_nu(problem.T, m, rng, problem.sigma_x, restarts=6)
    sigma = np.eye(dims[0]) if problem.sigma_x is None else problem.sigma_x
    canonical = linear.canonical_flattest_minimum(problem.T, dims)
    return {
        "dims": list(dims),
        "white": white,
        "sigma_x_condition_number": float(np.linalg.cond(sigma)),
        "min_lambda_max_walk": best.sharpness,
        "max_nu": nu_max,
        "nu_at_top_eigenvector_of_walk_minimum": linear.nu(B_top, problem.T, m, problem.sigma_x),
        "lambda_max_at_canonical_eq27": linear.top_hessian_eigenvalue_at_minimum(
            canonical, problem.sigma_x
        ),
        "white_formula_2m_s^(2(1-1/m))": linear.flattest_sharpness(problem.T, m),
        "gap": best.sharpness - nu_max,
        "relative_gap": (best.sharpness - nu_max) / best.sharpness,
    }


def paper_walk_case(rng: np.random.Generator, case: int) -> dict:
    """The paper's walk (purely random N(0, 1) directions, greedy on lambda_max), small nets.

    Records where it stops and, if it stalls before the bound, whether the quasi-Newton
    continuation (`linear.refine_flattest_minimum`) gets from the stalled point to the bound,
    i.e. whether the stall is a local minimum of lambda_max on the manifold or only a ridge.
    """
    dims = random_dims(rng, case_depth(case, 2, 5), case_is_rectangular(case), max_width=3)
    problem = random_problem(rng, dims, white=True)
    bound = linear.flattest_sharpness(problem.T, len(dims) - 1)
    start = linear.random_walk_start(problem.T, dims, rng)
    walk = linear.greedy_random_walk(
        start, rng, proposals="random", target=bound, rtol=1e-4, max_iterations=6000
    )
    top = np.linalg.eigvalsh(linear.reduced_hessian(walk.weights))[::-1]
    row = {
        "dims": list(dims),
        "iterations": walk.iterations,
        "relative_excess": (walk.sharpness - bound) / bound,
        "reached_1e-3": bool(walk.sharpness <= bound * (1 + 1e-3)),
        "top_two_eigenvalues_over_bound": [float(x / bound) for x in top[:2]],
    }
    if not row["reached_1e-3"]:
        refined = linear.refine_flattest_minimum(walk.weights, target=bound)
        row["relative_excess_after_refine_from_stall"] = (refined.sharpness - bound) / bound
    return row


def run_findings(cases_per_dims: int, base_seed: int = 0, dims_list=FINDING_DIMS) -> dict:
    rows, controls = [], []
    for index, dims in enumerate(dims_list):
        for case in range(cases_per_dims):
            rng = _case_rng(base_seed, f"findings-{index}", case)
            rows.append(nonwhite_minimax_case(rng, dims, white=False))
        controls.append(
            nonwhite_minimax_case(_case_rng(base_seed, f"control-{index}", 0), dims, True)
        )
    gaps = np.array([row["relative_gap"] for row in rows])
    walks = [
        paper_walk_case(_case_rng(base_seed, "paper-walk", case), case)
        for case in range(6 * cases_per_dims)
    ]
    stalled = [w for w in walks if not w["reached_1e-3"]]
    return {
        "paper_random_walk": {
            "question": "Does the walk of App. IX.1 with purely random directions (greedy on "
            "lambda_max, adaptive eps, 6000 iterations) reach the bound (17) within 1e-3? Where "
            "it stalls, is that a local minimum (refinement fails) or a ridge of repeated top "
            "eigenvalues (refinement reaches the bound)?",
            "cases": walks,
            "fraction_reached_1e-3": 1 - len(stalled) / len(walks),
            "stalled_then_refined_max_relative_excess": max(
                (w["relative_excess_after_refine_from_stall"] for w in stalled), default=None
            ),
        },
        "nonwhite_minimax_conjecture": {
            "question": "Sec. 5 conjectures min_{w in Omega} lambda_max(H_w) = max_{||B||_F=1} "
            "nu(B) (eq. 25) for any Sigma_x. 'min_lambda_max_walk' is an upper estimate of the "
            "left side (best greedy walk), 'max_nu' a lower estimate of the right side (L-BFGS "
            "with restarts); theory guarantees max_nu <= min lambda_max, so gap >= 0 always, and "
            "a gap clearly above 0 (with the white controls at ~0) is evidence against equality.",
            "cases": rows,
            "white_controls": controls,
            "relative_gap_max": float(gaps.max()),
            "relative_gap_median": float(np.median(gaps)),
            "relative_gap_min": float(gaps.min()),
            "white_control_relative_gap_max": float(max(c["relative_gap"] for c in controls)),
        },
    }


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _json_number(value: float):
    return float(value) if math.isfinite(value) else str(value)


def verify(
    cases: int = DEFAULT_CASES,
    base_seed: int = 0,
    findings_cases: int = 2,
    findings_dims=FINDING_DIMS,
    experiments: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run all (or the named) experiments and the findings; returns the report dict."""
    _limit_threads()
    start = time.time()
    claims: dict[str, dict] = {}
    timings = {}
    for name in experiments or list(EXPERIMENTS):
        t0 = time.time()
        count = max(1, round(EXPERIMENTS[name].weight * cases))
        for claim, entry in run_experiment(name, count, base_seed).items():
            spec = CLAIMS[claim]
            # "info_" parts are reported (worst case) but not checked.
            worst = max(v for k, v in entry["parts"].items() if not k.startswith("info_"))
            claims[claim] = {
                "cases": entry["cases"],
                "worst_error": _json_number(worst),
                "tolerance": spec.tolerance,
                "passed": bool(worst <= spec.tolerance),
                "measure": spec.measure,
                "parts": {k: _json_number(v) for k, v in entry["parts"].items()},
            }
        timings[name] = round(time.time() - t0, 2)
        if log:
            log(f"{name}: {count} cases in {timings[name]:.1f}s")
    findings = {}
    if findings_cases > 0:
        t0 = time.time()
        findings = run_findings(findings_cases, base_seed, findings_dims)
        timings["findings"] = round(time.time() - t0, 2)
        if log:
            log(f"findings in {timings['findings']:.1f}s")
    return {
        "claims": claims,
        "findings": findings,
        "all_passed": all(c["passed"] for c in claims.values()),
        "settings": {"cases": cases, "base_seed": base_seed, "findings_cases": findings_cases},
        "timings_s": {**timings, "total": round(time.time() - start, 2)},
    }


def _limit_threads() -> None:
    """One BLAS / torch thread: the matrices are tiny and threads only add contention."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # optional; only a speed matter
        pass


def flat_metrics(report: dict) -> dict[str, float]:
    """One number per claim (its worst error; inf when it is not a number), all_passed, and
    the non-white finding's relative gaps: the report as flat metrics (DVC, MLflow)."""
    metrics = {}
    for name, claim in report["claims"].items():
        value = claim["worst_error"]
        metrics[f"{name}.worst_error"] = float(value) if not isinstance(value, str) else math.inf
    metrics["all_passed"] = float(report["all_passed"])
    finding = report.get("findings", {}).get("nonwhite_minimax_conjecture")
    if finding:
        for key in ("relative_gap_max", "relative_gap_median", "white_control_relative_gap_max"):
            metrics[f"nonwhite_minimax.{key}"] = finding[key]
    return metrics


STAGE_DEFAULTS = {
    "seeds": DEFAULT_CASES,
    "base_seed": 0,
    "findings_cases": 2,
    "findings_dims": None,  # None: FINDING_DIMS
    "figures": {"seed": 0, "fig3_dim": 4, "fig3_depth": 6, "fig3_networks": 4},
}


def stage_settings(section: dict | None) -> dict:
    """The `theory` stage's settings (a profile's section of params.yaml), with defaults for
    the keys it leaves out: cases, seeds and findings of the verification, the figures' sizes."""
    section = dict(section or {})
    return {
        **STAGE_DEFAULTS,
        **section,
        "figures": {**STAGE_DEFAULTS["figures"], **(section.get("figures") or {})},
    }


def write_report(report: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="path of the JSON report")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"randomized cases per network claim (default {DEFAULT_CASES}; scalar claims x5)",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} cases, 1 finding each")
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--findings-cases", type=int, default=None, help="non-white cases per size")
    args = parser.parse_args(argv)
    cases = args.seeds or (QUICK_CASES if args.quick else DEFAULT_CASES)
    findings = args.findings_cases if args.findings_cases is not None else (1 if args.quick else 2)
    report = verify(cases, args.base_seed, findings, log=lambda s: print(s, file=sys.stderr))
    write_report(report, args.out)
    for name, claim in report["claims"].items():
        status = "PASS" if claim["passed"] else "FAIL"
        print(f"{status} {name}: {claim['cases']} cases, worst {claim['worst_error']}")
    if report["findings"]:
        walk = report["findings"]["paper_random_walk"]
        print(f"finding paper_random_walk: reached 1e-3 in {walk['fraction_reached_1e-3']:.0%}")
        f = report["findings"]["nonwhite_minimax_conjecture"]
        print(
            f"finding nonwhite_minimax_conjecture: relative gap median {f['relative_gap_median']:.3g}"
            f", max {f['relative_gap_max']:.3g} (white controls max {f['white_control_relative_gap_max']:.2g})"
        )
    return 0 if report["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
