"""Deep linear networks: Lemma 3, eq. (20), Theorems 1-4, the walk, nu(B), and helpers."""

import numpy as np
import pytest
from theory_helpers import assert_claims_hold, run_claims

from src.theory import linear, verify


@pytest.mark.parametrize(
    "experiment, cases",
    [("lemma3", 12), ("theorem1", 12), ("theorem4", 20), ("bounds", 10), ("random_walk", 8)],
)
def test_linear_claims(experiment, cases):
    assert_claims_hold(run_claims(experiment, cases))


def test_lemma3_cases_cover_white_nonwhite_square_rectangular():
    kinds = set()
    for case in range(12):
        rng = np.random.default_rng(case)
        dims = verify.random_dims(rng, verify.case_depth(case), verify.case_is_rectangular(case))
        kinds.add(((case // 3) % 2 == 0, dims[0] != dims[-1] or len(set(dims)) > 1))
        assert linear.satisfies_capacity_assumption(dims)
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}


def test_vec_convention_p1():
    rng = np.random.default_rng(0)
    M1, M2, M3 = (
        rng.standard_normal((2, 3)),
        rng.standard_normal((3, 4)),
        rng.standard_normal((4, 5)),
    )
    np.testing.assert_allclose(
        linear.vec(M1 @ M2 @ M3), np.kron(M3.T, M1) @ linear.vec(M2), atol=1e-12
    )


def test_reduced_hessian_shares_nonzero_spectrum_with_full_hessian():
    rng = np.random.default_rng(1)
    X, Y = linear.synthetic_regression(30, 3, 2, rng, white=False)
    T, sigma_x = linear.least_squares_target(X, Y), linear.second_moments(X, Y)[0]
    weights = linear.arbitrary_minimum(T, (3, 4, 2, 2), rng)
    full = np.linalg.eigvalsh(linear.hessian_at_minimum(weights, sigma_x))[::-1][:6]
    small = np.linalg.eigvalsh(linear.reduced_hessian(weights, sigma_x))[::-1]
    np.testing.assert_allclose(full, small, rtol=1e-10, atol=1e-10 * full[0])


def test_theorem1_bound_is_not_met_by_arbitrary_minima():
    """Sanity of the measures: S104 minima are much sharper and break Theorem 2 / 3."""
    rng = np.random.default_rng(2)
    X, Y = linear.synthetic_regression(40, 4, 4, rng)
    T = linear.least_squares_target(X, Y)
    weights = linear.arbitrary_minimum(T, (4,) * 7, rng)
    assert linear.top_hessian_eigenvalue_at_minimum(weights) > 2 * linear.flattest_sharpness(T, 6)
    assert max(linear.theorem2_deviations(weights, T).values()) > 0.1
    assert max(linear.theorem3_deviations(weights, T).values()) > 0.1


def test_gauge_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    X, Y = linear.synthetic_regression(30, 3, 2, rng)
    T = linear.least_squares_target(X, Y)
    dims = (3, 4, 3, 2)
    weights = linear.arbitrary_minimum(T, dims, rng)
    directions = [rng.standard_normal((d, d)) for d in dims[1:-1]]
    for beta in (np.inf, 5.0):
        _, grads = linear.sharpness_gauge_gradient(weights, None, beta)
        predicted = sum(float(np.sum(g * a)) for g, a in zip(grads, directions))
        eps = 1e-6

        def value(t, beta=beta):
            moved = linear.apply_gauge(weights, [np.eye(len(a)) + t * a for a in directions])
            evals = np.linalg.eigvalsh(linear.reduced_hessian(moved))
            return float(linear.smoothed_sharpness(evals, beta))

        numeric = (value(eps) - value(-eps)) / (2 * eps)
        assert numeric == pytest.approx(predicted, rel=1e-5)


def test_paper_random_walk_reaches_bound_on_a_shallow_net():
    rng = np.random.default_rng(4)
    X, Y = linear.synthetic_regression(30, 2, 2, rng)
    T = linear.least_squares_target(X, Y)
    bound = linear.flattest_sharpness(T, 2)
    start = linear.random_walk_start(T, (2, 2, 2), rng)
    result = linear.greedy_random_walk(start, rng, proposals="random", target=bound, rtol=1e-4)
    assert result.history[0] > 1.05 * bound
    assert abs(result.sharpness - bound) / bound <= 1e-3
    assert np.all(np.diff(result.history) <= 0)  # greedy: never worse
    np.testing.assert_allclose(linear.end_to_end(result.weights), T, atol=1e-10)


def test_restore_end_to_end_removes_drift():
    rng = np.random.default_rng(5)
    T = rng.standard_normal((3, 2))
    weights = linear.arbitrary_minimum(T, (2, 4, 3, 3), rng)
    drifted = [W * (1 + 1e-6) for W in weights]
    fixed = linear.restore_end_to_end(drifted, T)
    assert np.linalg.norm(linear.end_to_end(drifted) - T) > 1e-7
    assert np.linalg.norm(linear.end_to_end(fixed) - T) < 1e-13


def test_gain_profile_of_canonical_solution():
    rng = np.random.default_rng(6)
    T = rng.standard_normal((4, 4))
    profile = linear.gain_profile(linear.canonical_flattest_minimum(T, (4,) * 7), T)
    s_max = np.linalg.norm(T, 2)
    np.testing.assert_allclose(profile.gain_of_v, s_max ** (np.arange(1, 7) / 6), rtol=1e-12)
    np.testing.assert_allclose(profile.bound, np.sqrt(6) * s_max ** (np.arange(1, 7) / 6))
    assert all(sv.max() <= b for sv, b in zip(profile.singular_values, profile.bound))


def test_nonwhite_minimax_gap_is_never_negative():
    """Theory: max_B nu(B) <= min_w lambda_max (eq. 23-25), so the estimated gap is >= 0."""
    row = verify.nonwhite_minimax_case(np.random.default_rng(7), (2, 2, 2), white=False, walks=1)
    assert row["sigma_x_condition_number"] > 1.5
    assert row["relative_gap"] >= -1e-10
    assert row["lambda_max_at_canonical_eq27"] >= row["min_lambda_max_walk"] * (1 - 1e-12)
    assert row["max_nu"] <= row["min_lambda_max_walk"] * (1 + 1e-10)
