"""Lemma 1: GD / gradient flow from identity initialization end at a flattest minimum."""

import numpy as np
import pytest
from theory_helpers import assert_claims_hold, run_claims

from src.theory import lemma1, linear


@pytest.mark.parametrize("experiment, cases", [("lemma1_gd", 10), ("lemma1_flow", 5)])
def test_lemma1_claims(experiment, cases):
    assert_claims_hold(run_claims(experiment, cases))


def test_step_size_bound_of_lemma1():
    T = np.diag([4.0, 0.5])
    assert lemma1.lemma1_step_size(T, 2) == pytest.approx(1 / 4 * 4.0**-1)
    assert lemma1.lemma1_step_size(np.diag([0.5, 0.2]), 3) == pytest.approx(1 / 6)


def test_gd_from_identity_reaches_t_to_the_one_over_m():
    """Symmetric positive definite T: every layer converges to T^{1/m} (App. II)."""
    rng = np.random.default_rng(0)
    Q = linear.random_orthogonal(3, rng)
    T = (Q * np.array([2.0, 1.0, 0.4])) @ Q.T
    depth = 4
    result = lemma1.gradient_descent_from_identity(T, depth, lemma1.lemma1_step_size(T, depth))
    assert result.converged and result.excess_loss <= 1e-14
    root = (Q * np.array([2.0, 1.0, 0.4]) ** (1 / depth)) @ Q.T
    for W in result.weights:
        np.testing.assert_allclose(W, root, atol=1e-6)
    assert result.balancedness < 1e-12
    bound = linear.flattest_sharpness(T, depth)
    assert linear.top_hessian_eigenvalue_at_minimum(result.weights) == pytest.approx(
        bound, rel=1e-6
    )
