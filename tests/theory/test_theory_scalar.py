"""Scalar networks (Sec. 3, App. III): eq. (9)-(13), Claim S1, Lemma 2, (S32), Fig. 1 dynamics."""

import numpy as np
import pytest
from theory_helpers import assert_claims_hold, run_claims

from src.theory import scalar


@pytest.mark.parametrize(
    "experiment, cases",
    [
        ("scalar_hessian", 20),
        ("scalar_flattest", 20),
        ("line_curvature", 20),
        ("lemma2", 60),
        ("s32", 20),
    ],
)
def test_scalar_claims(experiment, cases):
    results = run_claims(experiment, cases)
    assert sum(entry["cases"] for entry in results.values()) >= cases
    assert_claims_hold(results)


def test_flattest_minima_eq12_eq13():
    tau, sigma_x2 = -2.5, 0.7
    for depth in range(1, 7):
        points = scalar.flattest_scalar_minima(tau, depth)
        assert len(points) == 2 ** (depth - 1)
        np.testing.assert_allclose(np.prod(points, axis=1), tau, rtol=1e-12)
        bound = scalar.flattest_scalar_sharpness(tau, depth, sigma_x2)
        assert bound == pytest.approx(2 * depth * sigma_x2 * 2.5 ** (2 - 2 / depth), rel=1e-14)
        np.testing.assert_allclose(
            scalar.scalar_sharpness(points, tau, sigma_x2), bound, rtol=1e-12
        )
    # An unbalanced minimum is strictly sharper, eq. (S20)-(S21).
    bound3 = scalar.flattest_scalar_sharpness(tau, 3, sigma_x2)
    assert scalar.scalar_sharpness(np.array([0.5, 2.0, -2.5]), tau, sigma_x2) > 1.5 * bound3


def test_lemma2_worked_example():
    """tau = 1, m = 3: w2 = (2, 2, 1/4) looks sharper than w1 = (1, 1, 1); w3 = (1/2, 1/2, 4)."""
    tau = 1.0
    w1, w2 = np.ones(3), np.array([2.0, 2.0, 0.25])
    assert scalar.appears_sharper_on_line(w2, w1)  # (S30): 5 > 4.25
    w3 = scalar.lemma2_partner(w1, w2)
    np.testing.assert_allclose(w3, [0.5, 0.5, 4.0])
    assert np.prod(w3) == pytest.approx(tau)
    # The picture says w3 is flatter than w1 ...
    assert scalar.line_curvature(w3, w1, tau) < scalar.line_curvature(w1, w3, tau)
    # ... while it is truly sharper: 2 (4 + 4 + 1/16) = 16.125 vs 2 * 3 = 6.
    assert scalar.scalar_sharpness(w3, tau) == pytest.approx(16.125)
    assert scalar.scalar_sharpness(w1, tau) == pytest.approx(6.0)


def test_s32_two_layer_pair_looks_equally_sharp_although_it_is_not():
    flat, sharp = np.array([1.0, 1.0]), np.array([0.4, 2.5])
    c_flat, c_sharp = (
        scalar.line_curvature(flat, sharp, 1.0),
        scalar.line_curvature(sharp, flat, 1.0),
    )
    assert c_flat == pytest.approx(c_sharp, rel=1e-12)
    assert scalar.scalar_sharpness(sharp, 1.0) > 3 * scalar.scalar_sharpness(flat, 1.0)


@pytest.mark.parametrize("momentum, lr", [(0.0, 0.25), (0.3, 0.3)])
def test_descent_near_a_sharp_minimum_travels_to_a_flat_enough_one(momentum, lr):
    """Fig. 1: the start is unstable (sharpness > 2(1+beta)/eta), GD moves along the valley."""
    tau, sharp_w1 = 1.0, 0.45
    start_sharpness = scalar.scalar_sharpness(np.array([sharp_w1, tau / sharp_w1]), tau)
    threshold = 2 * (1 + momentum) / lr
    assert start_sharpness > threshold
    path = scalar.two_layer_descent((sharp_w1 + 0.01, tau / sharp_w1), tau, lr, 400, momentum)
    end = path[-1]
    assert scalar.scalar_excess_loss(end, tau) < 1e-20
    assert scalar.scalar_sharpness(end, tau) <= threshold
    assert end[0] > sharp_w1 + 0.1  # moved along the valley towards (1, 1)
