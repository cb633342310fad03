"""Full-data loss, gradient and Hessian-vector products: chunking, backends, side effects."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from analysis_problems import small_problem
from torch import nn

from src.analysis import (
    LossLandscape,
    exact_hessian,
    flat_parameters,
    full_gradient,
    full_loss,
    hessian_vector_product,
)


@pytest.mark.parametrize("chunk_size", [None, 7, 40, 1000])
def test_chunked_loss_equals_single_batch_mean(chunk_size):
    model, inputs, targets = small_problem("relu", 3, 16, seed=0)
    expected = F.mse_loss(model(inputs), targets).item()
    assert full_loss(model, F.mse_loss, inputs, targets, chunk_size).item() == pytest.approx(
        expected, rel=1e-6
    )
    model64 = LossLandscape(model, F.mse_loss, inputs, targets, chunk_size=chunk_size,
                            dtype=torch.float64)  # fmt: skip
    expected64 = F.mse_loss(model.double()(inputs.double()), targets.double()).item()
    model.float()
    assert model64.loss().item() == pytest.approx(expected64, rel=1e-13)


def test_gradient_matches_backward():
    model, inputs, targets = small_problem("relu", 3, 16, seed=1)
    F.mse_loss(model(inputs), targets).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    gradient = full_gradient(model, F.mse_loss, inputs, targets, chunk_size=13)
    torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("backend", ["autograd", "func"])
@pytest.mark.parametrize("chunk_size", [None, 9])
def test_hvp_matches_exact_hessian(backend, chunk_size):
    model, inputs, targets = small_problem("relu", 3, 16, seed=2)
    hessian = exact_hessian(model, F.mse_loss, inputs, targets)
    vector = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)  # fmt: skip
    landscape = LossLandscape(model, F.mse_loss, inputs, targets, chunk_size=chunk_size,
                              dtype=torch.float64, backend=backend)  # fmt: skip
    torch.testing.assert_close(landscape.hvp(vector), hessian @ vector, rtol=1e-10, atol=1e-12)
    hvp32 = hessian_vector_product(model, F.mse_loss, inputs, targets, vector.float())
    torch.testing.assert_close(hvp32.double(), hessian @ vector, rtol=1e-4, atol=1e-5)


def test_hvp_at_another_point_does_not_move_the_model():
    model, inputs, targets = small_problem("linear", 2, 8, seed=3)
    landscape = LossLandscape(model, F.mse_loss, inputs, targets, dtype=torch.float64)
    theta = landscape.theta0 + 0.1
    vector = torch.ones_like(theta)
    shifted = LossLandscape(_with_parameters(model, theta), F.mse_loss, inputs, targets,
                            dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(landscape.hvp(vector, theta), shifted.hvp(vector))
    torch.testing.assert_close(landscape.loss(theta), shifted.loss())
    torch.testing.assert_close(flat_parameters(model).double(), landscape.theta0)


def _with_parameters(model, theta):
    import copy

    clone = copy.deepcopy(model).double()
    torch.nn.utils.vector_to_parameters(theta, clone.parameters())
    return clone


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 5)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        return self.dropout(self.linear(x))


def test_eval_mode_used_and_flags_restored():
    torch.manual_seed(0)
    model = DropoutNet()
    inputs, targets = torch.randn(20, 6), torch.randn(20, 5)
    model.train()
    model.linear.eval()  # a mixed state must come back exactly
    values = {full_loss(model, F.mse_loss, inputs, targets).item() for _ in range(3)}
    assert len(values) == 1  # dropout off: deterministic
    model.eval()
    assert values.pop() == pytest.approx(F.mse_loss(model(inputs), targets).item(), rel=1e-6)
    model.train()
    model.linear.eval()
    LossLandscape(model, F.mse_loss, inputs, targets).hvp(torch.ones(35))
    assert model.training and model.dropout.training and not model.linear.training
