"""Hessian trace (Hutchinson), spectral density (stochastic Lanczos quadrature) and top-k
eigenpairs (src/analysis/spectrum.py) against exact float64 Hessians and the closed forms of
deep linear networks at a global minimum (Lemma 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.analysis import (
    LossLandscape,
    broadened_density,
    exact_hessian,
    exact_trace_by_basis,
    gap_ratio,
    hessian_spectral_density,
    hessian_trace,
    spectral_density_of_landscape,
    top_hessian_eigenpairs,
    trace_of_landscape,
)
from src.analysis.spectrum import _probe
from src.domain.models import MLP, initialize
from src.theory import linear as theory


def small_relu_net(seed: int = 0, n: int = 40):
    """Float64 He-initialized ReLU MLP 6 -> 16 -> 16 -> 5 with non-zero biases (N = 469) and
    random data: an indefinite Hessian with a well separated top eigenvalue."""
    generator = torch.Generator().manual_seed(seed)
    model = MLP(6, 5, depth=3, width=16, activation="relu")
    initialize(model, "he", generator)
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.normal_(0.0, 0.1, generator=generator)
    model = model.double()
    inputs = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    targets = torch.randn(n, 5, generator=generator, dtype=torch.float64)
    return model, inputs, targets


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The nets here have a few hundred parameters: an HVP takes ~2 ms on one thread, but
    ~60 ms with two threads on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def relu_net():
    model, inputs, targets = small_relu_net()
    hessian = exact_hessian(model, F.mse_loss, inputs, targets)
    eigenvalues = np.linalg.eigvalsh(hessian.numpy())  # ascending
    return model, inputs, targets, hessian, eigenvalues


def linear_net(weights) -> MLP:
    """Bias-free linear MLP (eq. 1) holding the theory code's W_1..W_m (float64)."""
    dims = theory.layer_dims(weights)
    model = MLP(dims[0], dims[-1], len(weights), dims[1], activation="linear", bias=False)
    model = model.double()
    with torch.no_grad():
        for layer, W in zip(model.layers, weights):
            layer.weight.copy_(torch.from_numpy(W))
    return model


def linear_minimum(d: int, width: int, depth: int, seed: int = 0):
    """White data (A2) whose least-squares map is T, and the canonical flattest (balanced)
    minimum of eq. (27) for it; dims (d, width, ..., width, d)."""
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((d, d))
    dims = (d,) + (width,) * (depth - 1) + (d,)
    X, Y = theory.data_with_target(T, 64, rng)
    weights = theory.canonical_flattest_minimum(T, dims)
    return T, dims, weights, torch.from_numpy(X), torch.from_numpy(Y), rng


def balanced_minimum_trace(T: np.ndarray, depth: int) -> float:
    """tr(H) at the balanced minimum W_k ~ S^{1/m} (eq. 27) with white data.

    Lemma 3: H = 2 Phi Phi^T for the paper's loss (2), mean_i ||y_i - f(x_i)||^2. The project's
    loss is F.mse_loss, which also averages over the d_y outputs, so H = (2 / d_y) Phi Phi^T.
    tr(Phi Phi^T) = sum_k tr(Phi_k^T Phi_k) and Phi_k^T Phi_k = (L_k^T L_k) kron (P_k P_k^T)
    (L_k = W_{k-1}..W_1, P_k = W_m..W_{k+1}), so tr H = (2 / d_y) sum_k ||L_k||_F^2 ||P_k||_F^2.
    At the balanced minimum ||L_k||_F^2 = sum_j s_j^{2(k-1)/m} and ||P_k||_F^2 =
    sum_j s_j^{2(m-k)/m} (s_j: singular values of T); for a scalar net, 2 m |T|^{2(m-1)/m}
    (eq. (8) summed over k)."""
    s = np.linalg.svd(T, compute_uv=False)
    d_y = T.shape[0]
    return (2 / d_y) * sum(
        np.sum(s ** (2 * (k - 1) / depth)) * np.sum(s ** (2 * (depth - k) / depth))
        for k in range(1, depth + 1)
    )


def minimum_trace(weights) -> float:
    """tr(H) = (2 / d_y) sum_k ||L_k||_F^2 ||P_k||_F^2 at any global minimum, white data."""
    lefts, rights = theory.partial_products(weights)
    d_y = weights[-1].shape[0]
    return (2 / d_y) * sum(np.sum(L**2) * np.sum(P**2) for L, P in zip(lefts, rights))


# --------------------------------------------------------------------------------------------
# Trace
# --------------------------------------------------------------------------------------------


def test_basis_trace_equals_exact_trace(relu_net):
    model, inputs, targets, hessian, _ = relu_net
    exact = torch.trace(hessian).item()
    result = exact_trace_by_basis(model, F.mse_loss, inputs, targets)
    assert result.trace == pytest.approx(exact, rel=1e-10)  # measured 3e-15
    n = hessian.shape[0]
    assert (result.probes, result.hvps, result.stderr, result.converged) == (n, n, 0.0, True)
    assert result.method == "basis" and result.dtype == "float64"


def test_hutchinson_trace_within_three_standard_errors(relu_net):
    """Indefinite Hessian with large off-diagonal mass: one probe's z^T H z has a relative std
    of 0.48, so tol = 5e-2 needs ~90 probes. For seeds 0-4 the estimate must be within 3 of
    its reported standard errors of tr(H), and the z-scores' RMS at most 2 (a calibrated
    stderr gives RMS ~1; P(RMS > 2) = P(chi2_5 > 20) = 0.1%). Measured z: -2.74 (seed 0; over
    300 seeds the z-scores of this stopping rule had mean -0.03, std 1.06, 0.7% beyond 3),
    0.50, 0.63, -0.70, 1.91 (seeds 1-4); RMS 1.57. Relative errors 2.5-12%."""
    model, inputs, targets, hessian, _ = relu_net
    exact = torch.trace(hessian).item()
    scores = []
    for seed in range(5):
        result = hessian_trace(
            model, F.mse_loss, inputs, targets, tol=5e-2, max_probes=300, seed=seed
        )
        assert result.converged
        assert 10 <= result.probes < 300 and result.hvps == result.probes
        assert result.relative_stderr <= 5e-2
        assert result.relative_stderr == pytest.approx(result.stderr / abs(result.trace))
        assert result.trace == pytest.approx(np.mean(result.values), rel=1e-12)
        assert abs(result.trace - exact) <= 3 * result.stderr, seed
        scores.append((result.trace - exact) / result.stderr)
    assert math.sqrt(np.mean(np.square(scores))) <= 2


def test_hutchinson_stops_at_max_probes_when_tol_is_out_of_reach(relu_net):
    model, inputs, targets, _, _ = relu_net
    result = hessian_trace(model, F.mse_loss, inputs, targets, tol=1e-4, max_probes=25)
    assert not result.converged
    assert result.probes == result.hvps == len(result.values) == 25
    assert result.relative_stderr > 1e-4


def test_hutchinson_stops_at_min_probes_when_every_probe_is_exact():
    """A one-layer linear net whose inputs have orthogonal columns: H = (2/n) X^T X is
    diagonal, so z^T H z = tr(H) for every Rademacher z and the standard error is 0."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(32, 5, generator=generator, dtype=torch.float64))
    inputs = q * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    targets = torch.randn(32, 1, generator=generator, dtype=torch.float64)
    model = torch.nn.Linear(5, 1, bias=False).double()
    exact = 2 * (inputs**2).sum().item() / 32
    result = hessian_trace(model, F.mse_loss, inputs, targets, min_probes=7)
    assert result.converged and result.probes == 7
    assert result.trace == pytest.approx(exact, rel=1e-12)
    assert result.relative_stderr < 1e-12


def test_hutchinson_is_deterministic_and_float32_agrees(relu_net):
    model, inputs, targets, _, _ = relu_net
    options = dict(min_probes=20, max_probes=20)
    first = hessian_trace(model, F.mse_loss, inputs, targets, **options)
    again = hessian_trace(model, F.mse_loss, inputs, targets, **options)
    other = hessian_trace(model, F.mse_loss, inputs, targets, seed=1, **options)
    single = hessian_trace(model, F.mse_loss, inputs, targets, dtype=torch.float32, **options)
    assert again.values == first.values
    assert other.trace != first.trace
    assert single.dtype == "float32"
    # the same probes in float32: per-probe values agree to float32 rounding
    np.testing.assert_allclose(single.values, first.values, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "d,width,depth",
    [(1, 1, 2), (1, 1, 4), (4, 4, 2), (4, 6, 3)],
)
def test_trace_at_balanced_minimum_of_deep_linear_net(d, width, depth):
    T, dims, weights, inputs, targets, rng = linear_minimum(d, width, depth)
    model = linear_net(weights)
    closed = balanced_minimum_trace(T, depth)
    assert minimum_trace(weights) == pytest.approx(closed, rel=1e-12)
    exact = exact_trace_by_basis(model, F.mse_loss, inputs, targets)
    assert exact.trace == pytest.approx(closed, rel=1e-10)  # measured <= 1e-15
    # one probe's relative std: ~1 for the 2-parameter net, ~0.3 for the 84-parameter one
    estimate = hessian_trace(model, F.mse_loss, inputs, targets, tol=1e-1, max_probes=400)
    assert estimate.converged
    assert abs(estimate.trace - closed) <= 3 * estimate.stderr + 1e-12 * closed

    # a gauged minimum (S104) with the same end-to-end map: the general formula
    other = theory.arbitrary_minimum(T, dims, rng)
    assert theory.excess_loss(other, T) < 1e-18
    model = linear_net(other)
    exact = exact_trace_by_basis(model, F.mse_loss, inputs, targets)
    assert exact.trace == pytest.approx(minimum_trace(other), rel=1e-9)


# --------------------------------------------------------------------------------------------
# Spectral density
# --------------------------------------------------------------------------------------------


def test_slq_moments_match_exact_spectrum(relu_net):
    """With 40 probes the quadrature's tr(H^k)/N, k = 1..4, are within 3 of their reported
    standard errors of the exact ones (measured 0.9-1.3 stderr, 5-14% relative)."""
    model, inputs, targets, hessian, eigenvalues = relu_net
    density = hessian_spectral_density(
        model, F.mse_loss, inputs, targets, probes=40, lanczos_steps=40
    )
    n = len(eigenvalues)
    for k in range(1, 5):
        exact = np.mean(eigenvalues**k)
        assert abs(density.moments[k - 1] - exact) <= 3 * density.moment_stderr[k - 1], k
        assert density.moments[k - 1] == pytest.approx(exact, rel=0.25), k
    assert density.trace == pytest.approx(n * density.moments[0])
    assert density.hvps == 40 * 40 and density.lanczos_steps == 40 and density.probes == 40
    assert all(w.sum() == pytest.approx(1.0, abs=1e-12) for w in density.weights)


def test_slq_quadrature_is_exact_below_degree_2m(relu_net):
    """Gauss quadrature from m Lanczos steps: sum_j tau_j theta_j^k = v^T H^k v for k < 2m,
    and not beyond (measured errors <= 2e-15 for k <= 9 and 4e-4 at k = 10, m = 5)."""
    model, inputs, targets, hessian, _ = relu_net
    m = 5
    density = hessian_spectral_density(
        model, F.mse_loss, inputs, targets, probes=1, lanczos_steps=m, seed=3
    )
    v = _probe(torch.Generator().manual_seed(3), hessian.shape[0], "rademacher")
    v = v / v.norm()
    nodes, weights = density.nodes[0], density.weights[0]
    assert len(nodes) == m
    for k in range(1, 2 * m + 1):
        exact = (v @ torch.linalg.matrix_power(hessian, k) @ v).item()
        quadrature = float(np.sum(weights * nodes**k))
        if k < 2 * m:
            assert quadrature == pytest.approx(exact, rel=1e-10), k
        else:
            assert abs(quadrature - exact) > 1e-6 * abs(exact)


def test_slq_edges_and_density(relu_net):
    """top_edge: the largest Ritz value. Here lambda_1 / lambda_2 = 1.25, so already 10 Lanczos
    steps give it to 1e-6 (measured 4e-9); with m = N it is exact (measured 1e-15), as is the
    bottom edge. The density integrates to 1 (measured 1 - 4e-12) and is within L1 distance
    0.1 of the exact spectrum broadened by the same Gaussian (measured 0.026 with 20 probes x
    40 steps)."""
    model, inputs, targets, hessian, eigenvalues = relu_net
    lam_max, lam_min = eigenvalues[-1], eigenvalues[0]
    short = hessian_spectral_density(model, F.mse_loss, inputs, targets, probes=2, lanczos_steps=10)
    assert short.top_edge <= lam_max * (1 + 1e-12)
    assert short.top_edge == pytest.approx(lam_max, rel=1e-6)

    landscape = LossLandscape(model, F.mse_loss, inputs, targets)
    full = spectral_density_of_landscape(landscape, probes=1, lanczos_steps=10_000)
    assert full.lanczos_steps == len(eigenvalues)
    assert full.top_edge == pytest.approx(lam_max, rel=1e-10)
    assert full.bottom_edge == pytest.approx(lam_min, rel=1e-10)

    density = hessian_spectral_density(
        model, F.mse_loss, inputs, targets, probes=20, lanczos_steps=40
    )
    assert density.sigma == pytest.approx(1e-2 * (density.top_edge - density.bottom_edge))
    assert np.trapezoid(density.density, density.grid) == pytest.approx(1.0, abs=1e-6)
    exact = broadened_density(eigenvalues, 1 / len(eigenvalues), density.grid, density.sigma)
    assert np.trapezoid(exact, density.grid) == pytest.approx(1.0, abs=1e-3)
    assert np.trapezoid(np.abs(density.density - exact), density.grid) < 0.1


def test_slq_at_linear_minimum_finds_the_exact_spectrum():
    """At a global minimum H = (2/d_y) Phi Phi^T has the non-zero eigenvalues of the small
    matrix (2/d_y) Phi^T Phi (eq. 20) and a zero eigenvalue of multiplicity >= N - d_x d_y, so
    the Krylov space is exhausted after (distinct eigenvalues + 1) steps: each probe stops early
    and its quadrature is exact. top_edge is the flattest sharpness 2 m s_max^{2(1-1/m)} / d_y
    (eq. 17; /d_y for F.mse_loss)."""
    T, dims, weights, inputs, targets, _ = linear_minimum(4, 6, 3)
    model = linear_net(weights)
    n = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    reduced = np.linalg.eigvalsh(theory.reduced_hessian(weights)) / dims[-1]
    distinct = len(np.unique(np.round(reduced / reduced[-1], 8)))  # non-zero ones (10)
    density = hessian_spectral_density(
        model, F.mse_loss, inputs, targets, probes=20, lanczos_steps=30
    )
    assert density.top_edge == pytest.approx(theory.flattest_sharpness(T, 3) / dims[-1], rel=1e-10)
    assert all(len(nodes) <= distinct + 1 for nodes in density.nodes)  # measured 11 each
    assert density.hvps < 20 * 30
    for k in (1, 2):
        exact = np.sum(reduced**k) / n  # the other n - d_x d_y eigenvalues are 0
        assert abs(density.moments[k - 1] - exact) <= 3 * density.moment_stderr[k - 1], k


def test_slq_is_deterministic_and_validates(relu_net):
    model, inputs, targets, _, _ = relu_net
    first = hessian_spectral_density(model, F.mse_loss, inputs, targets, probes=2, lanczos_steps=8)
    again = hessian_spectral_density(model, F.mse_loss, inputs, targets, probes=2, lanczos_steps=8)
    np.testing.assert_array_equal(first.density, again.density)
    assert first.moments == again.moments
    gaussian = hessian_spectral_density(
        model, F.mse_loss, inputs, targets, probes=2, lanczos_steps=8, kind="gaussian"
    )
    assert gaussian.moments != first.moments
    with pytest.raises(ValueError):
        hessian_spectral_density(model, F.mse_loss, inputs, targets, kind="uniform")
    with pytest.raises(ValueError):
        hessian_trace(model, F.mse_loss, inputs, targets, probes="gaussian")


# --------------------------------------------------------------------------------------------
# Top-k eigenpairs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("method", ["lanczos", "lanczos_torch"])
def test_top_k_eigenpairs_match_exact(relu_net, k, method):
    model, inputs, targets, hessian, eigenvalues = relu_net
    exact = eigenvalues[::-1][:k]
    result = top_hessian_eigenpairs(model, F.mse_loss, inputs, targets, k=k, method=method)
    assert result.eigenvalues == pytest.approx(exact.tolist(), rel=1e-6)  # measured <= 1.2e-8
    assert list(result.eigenvalues) == sorted(result.eigenvalues, reverse=True)
    assert result.gap_ratio == pytest.approx(exact[0] / exact[1], rel=1e-6)  # 1.252; <= 4e-14
    assert result.eigenvectors.shape == (k, hessian.shape[0])
    for value, vector in zip(result.eigenvalues, result.eigenvectors.double()):
        residual = (hessian @ vector - value * vector).norm().item() / abs(value)
        assert residual < 1e-3
    assert result.hvps == result.result.hvps > k


def test_gap_ratio():
    assert gap_ratio([3.0, 2.0, 1.0]) == 1.5
    assert gap_ratio([1.0, 0.0]) == math.inf
    with pytest.raises(ValueError):
        gap_ratio([1.0])
    with pytest.raises(ValueError):
        top_hessian_eigenpairs(None, F.mse_loss, None, None, k=1)


def test_landscape_entry_point_matches_model_entry_point(relu_net):
    model, inputs, targets, _, _ = relu_net
    landscape = LossLandscape(model, F.mse_loss, inputs, targets, chunk_size=16)
    on_landscape = trace_of_landscape(landscape, min_probes=12, max_probes=12)
    direct = hessian_trace(model, F.mse_loss, inputs, targets, min_probes=12, max_probes=12)
    np.testing.assert_allclose(on_landscape.values, direct.values, rtol=1e-10)
