"""Device-resident Lanczos ("lanczos_torch"), method="auto", and chunk sizes from free memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from analysis_problems import small_problem

from src.analysis import (
    LossLandscape,
    SharpnessNotConverged,
    exact_hessian,
    hessian_eigenpairs,
    top_hessian_eigenvalue,
)
from src.analysis import landscape as landscape_module
from src.analysis.landscape import HVP_MEMORY_FACTOR, activations_per_sample, auto_chunk_size
from src.domain.models import MLP


@pytest.mark.parametrize("activation,depth,width", [("relu", 3, 16), ("linear", 4, 32)])
def test_matches_exact_hessian_float64(activation, depth, width):
    model, inputs, targets = small_problem(activation, depth, width, seed=depth * width)
    hessian = exact_hessian(model, F.mse_loss, inputs, targets)
    exact = torch.linalg.eigvalsh(hessian).flip(0)[:2].tolist()
    result = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="lanczos_torch",
                                    dtype=torch.float64, k=2, tol=1e-12)  # fmt: skip
    assert result.method == "lanczos_torch" and result.dtype == "float64"
    assert result.eigenvalues == pytest.approx(exact, rel=1e-8)
    assert result.eigenvalue == result.eigenvalues[0]
    assert result.eigenvectors.shape == (2, hessian.shape[0])
    vectors = result.eigenvectors.double()
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(2, dtype=torch.float64),
                               atol=1e-10, rtol=0)  # fmt: skip
    for value, vector in zip(exact, vectors):
        assert ((hessian @ vector - value * vector).norm() / value).item() < 1e-5
    v = result.eigenvector.double()
    exact_residual = ((hessian @ v - exact[0] * v).norm() / exact[0]).item()
    assert result.residual == pytest.approx(exact_residual, rel=1e-2, abs=1e-12)
    assert len(result.history) == result.hvps - 1  # one Ritz value per HVP, + the residual


def test_agrees_with_arpack_float32_and_uses_no_more_hvps():
    model, inputs, targets = small_problem("relu", 4, 32, seed=4)
    arpack = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="lanczos", k=2)
    torch_ = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="lanczos_torch",
                                    k=2)  # fmt: skip
    assert torch_.dtype == "float32" and torch_.eigenvector.dtype == torch.float32
    assert torch_.eigenvalues == pytest.approx(arpack.eigenvalues, rel=1e-5)
    assert torch.dot(torch_.eigenvector, arpack.eigenvector).abs().item() > 1 - 1e-4
    assert torch_.hvps <= arpack.hvps
    assert torch_.residual < 1e-3


def test_deterministic_and_sign_fixed():
    model, inputs, targets = small_problem("relu", 3, 16, seed=5)
    kwargs = dict(method="lanczos_torch", seed=7)
    first = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, **kwargs)
    second = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, **kwargs)
    assert first.eigenvalue == second.eigenvalue and first.hvps == second.hvps
    assert torch.equal(first.eigenvector, second.eigenvector)
    largest = first.eigenvector[first.eigenvector.abs().argmax()]
    assert largest > 0


def test_budget_exceeded_raises_with_estimate():
    model, inputs, targets = small_problem("relu", 3, 16, seed=8)
    with pytest.raises(SharpnessNotConverged) as stopped:
        top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="lanczos_torch",
                               max_hvps=5)  # fmt: skip
    assert len(stopped.value.history) == 5
    assert stopped.value.estimate == stopped.value.history[-1]


def test_invariant_subspace_continues_from_a_fresh_vector():
    """A 3 -> 2 linear map on one sample: H = c (x x^T kron I_2) has lambda_max twice and zeros.
    The Krylov space of any start vector is 2-dimensional (beta = 0 after 2 HVPs), so the second
    copy of lambda_max needs a restart."""
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 2, bias=False).double()
    inputs = torch.randn(1, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(1, 2, generator=generator, dtype=torch.float64)
    lam = 2 * inputs.square().sum().item() / 2  # F.mse_loss: 2 / (n d_y) x x^T
    result = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="lanczos_torch",
                                    k=3)  # fmt: skip
    assert result.eigenvalues == pytest.approx([lam, lam, 0.0], rel=1e-12, abs=1e-12)
    assert result.hvps == 5  # two blocks of two HVPs + the residual check
    assert abs(torch.dot(result.eigenvectors[0], result.eigenvectors[1]).item()) < 1e-12


def test_warm_start_saves_hvps():
    model, inputs, targets = small_problem("relu", 4, 32, seed=9)
    cold = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="lanczos_torch")
    moved = LossLandscape(model, F.mse_loss, inputs, targets)
    theta = moved.theta0 + 1e-3 * torch.randn(moved.num_parameters,
                                              generator=torch.Generator().manual_seed(1))  # fmt: skip
    cold_moved = hessian_eigenpairs(moved, theta=theta, method="lanczos_torch")
    warm = hessian_eigenpairs(moved, theta=theta, method="lanczos_torch", v0=cold.eigenvector)
    assert warm.eigenvalue != pytest.approx(cold.eigenvalue, rel=1e-6)  # the point moved
    assert warm.eigenvalue == pytest.approx(cold_moved.eigenvalue, rel=1e-5)
    assert warm.hvps < cold_moved.hvps


def test_auto_picks_arpack_on_cpu():
    model, inputs, targets = small_problem("relu", 2, 8, seed=10)
    result = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="auto")
    assert result.method == "lanczos"
    default = top_hessian_eigenvalue(model, F.mse_loss, inputs, targets)
    assert default.method == "lanczos" and default.eigenvalue == result.eigenvalue
    with pytest.raises(ValueError, match="method"):
        top_hessian_eigenvalue(model, F.mse_loss, inputs, targets, method="arnoldi")


@pytest.mark.slow  # trains a 784-wide net (session fixture)
def test_wide_trained_net_within_40_hvps(trained_wide_net, wide_net_lanczos):
    """784-wide ReLU denoiser with lambda_2 / lambda_1 ~ 0.98: the same accuracy as ARPACK
    (1e-6 against the float64 reference) within 40 HVPs, and no more HVPs than ARPACK."""
    net, ref = trained_wide_net, trained_wide_net.reference
    result = top_hessian_eigenvalue(net.model, F.mse_loss, net.inputs, net.targets,
                                    method="lanczos_torch")  # fmt: skip
    assert abs(result.eigenvalue - ref.eigenvalue) / ref.eigenvalue < 1e-6
    assert result.eigenvalue == pytest.approx(wide_net_lanczos.eigenvalue, rel=1e-5)
    assert result.hvps <= 40
    assert result.hvps <= wide_net_lanczos.hvps
    assert result.residual < 1e-3
    assert torch.dot(result.eigenvector.double(), ref.eigenvector).abs().item() > 0.999


# -- chunk size from free memory --------------------------------------------------------------


def test_activations_per_sample_counts_input_and_layer_outputs():
    model = MLP(6, 5, depth=3, width=16)
    assert activations_per_sample(model, torch.randn(4, 6)) == 6 + 16 + 16 + 5


def test_auto_chunk_size_arithmetic(monkeypatch):
    model = MLP(6, 5, depth=3, width=16)
    sample = torch.randn(1, 6)
    per_sample = HVP_MEMORY_FACTOR * (6 + 16 + 16 + 5) * 4  # float32
    assert auto_chunk_size(model, sample, 10**6, free_bytes=2 * 1000 * per_sample) == 1000
    assert auto_chunk_size(model, sample, 10**6, free_bytes=2 * 1000 * per_sample - 1) == 999
    assert auto_chunk_size(model, sample, 500, free_bytes=2 * 1000 * per_sample) == 500  # cap n
    assert auto_chunk_size(model, sample, 500, free_bytes=0) == 1  # at least one sample
    per_sample64 = 2 * per_sample
    model64 = MLP(6, 5, depth=3, width=16).double()
    assert auto_chunk_size(model64, sample.double(), 10**6,
                           free_bytes=2 * 1000 * per_sample64) == 1000  # fmt: skip

    # the free-memory query: CPU RAM on Linux, mem_get_info on CUDA (no GPU needed here)
    monkeypatch.setattr(landscape_module.os, "sysconf",
                        {"SC_AVPHYS_PAGES": 300, "SC_PAGE_SIZE": 4096}.__getitem__)  # fmt: skip
    assert landscape_module.free_memory(torch.device("cpu")) == 300 * 4096
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (7 * 2**30, 80 * 2**30))
    assert landscape_module.free_memory(torch.device("cuda", 0)) == 7 * 2**30
    monkeypatch.setattr(landscape_module, "free_memory", lambda device: 2 * 37 * per_sample64)
    assert auto_chunk_size(model64, sample.double(), 10**6) == 37
    monkeypatch.setattr(landscape_module, "free_memory", lambda device: None)
    assert auto_chunk_size(model, sample, 123) == 123  # unknown: one chunk


def test_landscape_auto_chunks_and_chunked_hvp_equals_unchunked(monkeypatch):
    model, inputs, targets = small_problem("relu", 3, 16, seed=2)
    per_sample64 = HVP_MEMORY_FACTOR * activations_per_sample(model, inputs[:1]) * 8
    monkeypatch.setattr(landscape_module, "free_memory", lambda device: 2 * 11 * per_sample64)
    auto = LossLandscape(model, F.mse_loss, inputs, targets, chunk_size="auto",
                         dtype=torch.float64)  # fmt: skip
    assert auto.chunk_size == 11
    assert [len(x) for x, _, _ in auto.chunks] == [11, 11, 11, 7]
    whole = LossLandscape(model, F.mse_loss, inputs, targets, dtype=torch.float64)
    assert whole.chunk_size == len(inputs) and len(whole.chunks) == 1
    vector = torch.randn(whole.num_parameters, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(auto.hvp(vector), whole.hvp(vector), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="chunk_size"):
        LossLandscape(model, F.mse_loss, inputs, targets, chunk_size="big")


def test_config_accepts_new_methods_and_auto_chunk_size(compose_cfg):
    from src.domain.config import ConfigValueError, validate

    sharpness = validate(compose_cfg("analysis=default"))["analysis"]["sharpness"]
    assert sharpness["method"] == "auto" and sharpness["chunk_size"] == "auto"
    for method in ("auto", "lanczos", "lanczos_torch", "power"):
        validate(compose_cfg("analysis=default", f"analysis.sharpness.method={method}"))
    for chunk_size in ("null", "64"):
        validate(compose_cfg("analysis=default", f"analysis.sharpness.chunk_size={chunk_size}"))
    for key, value in [("method", "arnoldi"), ("chunk_size", "big"), ("chunk_size", "0")]:
        with pytest.raises(ConfigValueError, match=f"analysis.sharpness.{key}"):
            validate(compose_cfg("analysis=default", f"analysis.sharpness.{key}={value}"))
