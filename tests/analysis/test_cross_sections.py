"""Loss cross-sections: interpolation line and the sharpest direction (Fig. 7)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from analysis_problems import small_problem

from src.analysis import (
    flat_parameters,
    full_gradient,
    full_loss,
    loss_along_direction,
    loss_along_line,
    second_difference_at_zero,
    top_hessian_eigenvalue,
)


def test_loss_along_line_matches_explicit_models():
    model_a, inputs, targets = small_problem("relu", 3, 16, seed=0)
    model_b, _, _ = small_problem("relu", 3, 16, seed=1)
    theta_a, theta_b = flat_parameters(model_a), flat_parameters(model_b)
    model_a.train()
    ts = np.array([-0.5, 0.0, 0.3, 1.0, 1.5])
    losses = loss_along_line(model_a, F.mse_loss, inputs, targets, theta_a, theta_b, ts,
                             chunk_size=16)  # fmt: skip
    assert losses.shape == (5,) and losses.dtype == np.float64
    for t, loss in zip(ts, losses):
        probe = copy.deepcopy(model_a)
        torch.nn.utils.vector_to_parameters(theta_a + t * (theta_b - theta_a), probe.parameters())
        assert loss == pytest.approx(full_loss(probe, F.mse_loss, inputs, targets).item(), rel=1e-5)
    assert losses[3] == pytest.approx(F.mse_loss(model_b(inputs), targets).item(), rel=1e-5)
    assert torch.equal(flat_parameters(model_a), theta_a) and model_a.training


def test_second_difference_is_exact_for_quadratics():
    ts = np.array([-0.3, 0.0, 0.1, 0.7])
    assert second_difference_at_zero(ts, 2.0 + 1.5 * ts + 0.5 * 3.0 * ts**2) == pytest.approx(3.0)
    assert second_difference_at_zero(np.array([0.0, 1.0]), np.array([1.0, 2.0])) is None


def test_curvature_along_top_eigenvector_is_lambda_max():
    model, inputs, targets = small_problem("relu", 3, 16, seed=4)
    sharp = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, dtype=torch.float64)
    h = 1e-4  # below the distance to the nearest ReLU kink (1e-3 is not, here)
    ts = np.array([-2 * h, -h, 0.0, h, 2 * h])
    section = loss_along_direction(model, F.mse_loss, inputs, targets, None, sharp.eigenvector,
                                   ts, eigenvalue=sharp.eigenvalue, dtype=torch.float64)  # fmt: skip
    assert section["curvature_at_0"] == pytest.approx(sharp.eigenvalue, rel=1e-6)
    np.testing.assert_allclose(section["quadratic"] - section["loss_at_0"],
                               0.5 * sharp.eigenvalue * ts**2, rtol=1e-8)  # fmt: skip
    assert section["direction_norm"] == pytest.approx(1.0, rel=1e-12)
    # a random direction is flatter than the sharpest one
    random = torch.randn(sharp.eigenvector.numel(), generator=torch.Generator().manual_seed(0))
    other = loss_along_direction(model, F.mse_loss, inputs, targets, None, random * 7.0, ts,
                                 dtype=torch.float64)  # fmt: skip
    assert other["direction_norm"] == pytest.approx(7.0 * random.norm().item(), rel=1e-6)
    assert other["curvature_at_0"] < 0.5 * sharp.eigenvalue


@pytest.mark.slow  # trains a 784-wide net (session fixture)
def test_wide_net_curvature_along_top_eigenvector(trained_wide_net):
    net = trained_wide_net
    ref = net.reference
    ts = np.array([-0.1, -1e-4, 0.0, 1e-4, 0.1])
    section = loss_along_direction(net.model, F.mse_loss, net.inputs, net.targets, None,
                                   ref.eigenvector, ts, eigenvalue=ref.eigenvalue,
                                   dtype=torch.float64)  # fmt: skip
    assert section["curvature_at_0"] == pytest.approx(ref.eigenvalue, rel=1e-6)
    # at t = +-0.1 the symmetric rise L(t) + L(-t) - 2 L(0) still follows lambda t^2 (kinks
    # crossed by then change it by ~0.3%), and the Taylor model includes the slope
    rise = section["loss"] + section["loss"][::-1] - 2 * section["loss_at_0"]
    np.testing.assert_allclose(rise[0], ref.eigenvalue * 0.1**2, rtol=1e-2)
    np.testing.assert_allclose(section["taylor"], section["loss"], rtol=1e-3)
    gradient = full_gradient(net.model, F.mse_loss, net.inputs, net.targets).double()
    slope = torch.dot(gradient, ref.eigenvector).item()
    assert section["slope_at_0"] == pytest.approx(slope, rel=1e-4, abs=1e-9)
