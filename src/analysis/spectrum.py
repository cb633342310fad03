"""Beyond lambda_max: Hessian trace, spectral density and the top-k eigenpairs of the full
training loss, all from Hessian-vector products (`LossLandscape.hvp`).

* Trace, Hutchinson's estimator (Hutchinson 1990; Avron & Toledo 2011): tr(H) = E[z^T H z]
  for any probe with E[z z^T] = I. Rademacher probes (z_i = +-1) have the smallest variance,
  Var[z^T H z] = 2 sum_{i != j} H_ij^2. Probes are drawn until the relative standard error of
  the mean, std(z_p^T H z_p) / sqrt(P) / |mean|, is at most `tol` (at least `min_probes`, at
  most `max_probes`); one HVP per probe. `probes="basis"` sums e_i^T H e_i over all N basis
  vectors instead: exact up to rounding, N HVPs (small networks only). Measured: on 256-wide
  denoisers (depth 2 and 4, briefly trained, benchmarks/hessian_benchmark.py) the minimum of 10
  probes already gave a relative standard error of 6e-3-9e-3; on a random He-initialized ReLU
  net (indefinite Hessian, tests/test_spectrum.py) one probe's relative std was 0.48, so 1e-2
  would need ~2300 probes and stops at `max_probes` with converged=False.
* Spectral density, stochastic Lanczos quadrature (SLQ; Lin, Saad & Yang 2016; Ghorbani,
  Krishnan & Xiao 2019, "An investigation into neural net optimization via Hessian eigenvalue
  density", Sec. 3; PyHessian's `density`): for a unit probe v, m Lanczos steps (full
  re-orthogonalization, m HVPs) give the tridiagonal T_m = S diag(theta) S^T, and
  v^T f(H) v ~= sum_j tau_j f(theta_j) with nodes theta_j (Ritz values) and weights
  tau_j = S[0, j]^2 (sum_j tau_j = 1). This Gauss quadrature is exact for polynomials f of
  degree < 2m, and E[v v^T] = I / N for normalized Rademacher or Gaussian probes, so averaged
  over probes sum_j tau_j theta_j^k estimates tr(H^k) / N without bias (k < 2m): the spectral
  moments. The density is phi(t) = mean_probes sum_j tau_j N(t; theta_j, sigma^2), the
  eigenvalue density (1/N) sum_i delta(t - lambda_i) smoothed by a Gaussian of std sigma. Here
  sigma is RELATIVE: sigma = broadening * (largest - smallest Ritz value) (pass `sigma` for an
  absolute width). PyHessian instead uses a variance of 1e-5 * max(1, range), a std of
  3e-3 sqrt(range) in the spectrum's own units; for range ~ 1 that is broadening ~ 3e-3.
  The default 1e-2 is about the resolution of 30 Lanczos steps (nodes are spaced at roughly
  range / m in the bulk), so the bulk looks smooth while isolated outliers stay separate.
  If the Krylov space becomes invariant (beta_j ~ 0: H has few distinct eigenvalues seen from
  v) a probe stops early; its quadrature is then exact for every degree.
  The largest Ritz value over all probes (`top_edge`) is a lower bound of lambda_max, exact
  once m reaches the number of distinct eigenvalues; with the default 4 probes x 30 steps it
  was within 2.5e-7-7e-7 of lambda_max on 256-wide denoisers with lambda_2 / lambda_1 = 0.99
  (benchmarks/hessian_benchmark.py), like the 30-37 HVPs Lanczos needs for tol 1e-4 there.
* Top-k eigenpairs: `top_hessian_eigenvalue(..., k=k)` (src/analysis/hessian.py) with the
  gap ratio lambda_1 / lambda_2, which sets how fast power iteration converges and how
  accurate a Lanczos Ritz value is for a given residual (error <= residual^2 / gap).

All results report their cost in HVPs and seconds. Probes come from a seeded CPU torch
generator (then moved to the landscape's device and dtype), so results are deterministic on
the CPU; inner products are accumulated in float64 (`dot64`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import nn

from src.analysis.hessian import (
    SharpnessResult,
    _orthogonalize,
    top_hessian_eigenvalue,
)
from src.analysis.landscape import CHUNK_MEMORY_SHARE, LossFn, LossLandscape, dot64, norm64

TRACE_PROBES = ("rademacher", "basis")
DENSITY_PROBES = ("rademacher", "gaussian")
NUM_MOMENTS = 4  # moments[k - 1] estimates tr(H^k) / N, k = 1..4


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceResult:
    trace: float  # estimate of tr(H)
    stderr: float  # standard error of the estimate (0 for probes="basis")
    relative_stderr: float  # stderr / |trace| (inf if trace == 0 < stderr)
    probes: int  # probe vectors used (N for probes="basis")
    hvps: int  # Hessian-vector products (one per probe)
    seconds: float
    converged: bool  # relative_stderr <= tol was reached within max_probes (basis: True)
    method: str = "rademacher"  # "rademacher" (Hutchinson) or "basis" (exact)
    tol: float = 0.0
    dtype: str = "float32"
    values: tuple[float, ...] = ()  # z_p^T H z_p per probe (empty for "basis")

    def to_dict(self) -> dict:
        """JSON-friendly summary (without the per-probe values)."""
        return {
            "trace": self.trace,
            "stderr": self.stderr,
            "relative_stderr": self.relative_stderr,
            "probes": self.probes,
            "hvps": self.hvps,
            "seconds": self.seconds,
            "converged": self.converged,
            "method": self.method,
            "tol": self.tol,
            "dtype": self.dtype,
        }


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    grid: np.ndarray  # eigenvalue axis t
    density: np.ndarray  # phi(t), integrates to ~1 over the grid
    nodes: tuple[np.ndarray, ...]  # Ritz values theta_j of each probe (ascending)
    weights: tuple[np.ndarray, ...]  # quadrature weights tau_j of each probe (sum 1)
    moments: tuple[float, ...]  # moments[k - 1] ~ tr(H^k) / N, k = 1..NUM_MOMENTS
    top_edge: float  # largest Ritz value over all probes (<= lambda_max)
    probes: int
    lanczos_steps: int  # requested steps per probe (capped at N); a probe may stop earlier
    hvps: int
    seconds: float
    moment_stderr: tuple[float, ...] = ()  # standard error of each moment over the probes
    bottom_edge: float = 0.0  # smallest Ritz value over all probes (>= lambda_min)
    sigma: float = 0.0  # absolute std of the Gaussian broadening used for `density`
    num_parameters: int = 0  # N

    @property
    def trace(self) -> float:
        """tr(H) estimated from the quadrature: N * moments[0]."""
        return self.num_parameters * self.moments[0]

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-friendly summary; with `arrays`, also the grid, density, nodes and weights (the
        whole result, as saved in hessian_density.json)."""
        summary = {
            "moments": list(self.moments),
            "moment_stderr": list(self.moment_stderr),
            "top_edge": self.top_edge,
            "bottom_edge": self.bottom_edge,
            "probes": self.probes,
            "lanczos_steps": self.lanczos_steps,
            "hvps": self.hvps,
            "seconds": self.seconds,
            "sigma": self.sigma,
            "num_parameters": self.num_parameters,
        }
        if not arrays:
            return summary
        return {
            **summary,
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "nodes": [n.tolist() for n in self.nodes],
            "weights": [w.tolist() for w in self.weights],
        }


@dataclass(frozen=True, eq=False)
class TopEigenpairs:
    eigenvalues: tuple[float, ...]  # top k, descending
    eigenvectors: torch.Tensor  # (k, N), unit rows, CPU
    gap_ratio: float  # lambda_1 / lambda_2
    hvps: int
    seconds: float
    result: SharpnessResult  # the solver's full result (method, residual, tol, ...)

    @classmethod
    def from_result(cls, result: SharpnessResult) -> TopEigenpairs:
        if len(result.eigenvalues) < 2:
            raise ValueError("the gap ratio needs k >= 2 eigenvalues")
        return cls(
            eigenvalues=tuple(result.eigenvalues),
            eigenvectors=result.eigenvectors,
            gap_ratio=gap_ratio(result.eigenvalues),
            hvps=result.hvps,
            seconds=result.seconds,
            result=result,
        )


def gap_ratio(eigenvalues) -> float:
    """lambda_1 / lambda_2 of eigenvalues sorted descending (inf if lambda_2 == 0)."""
    values = [float(v) for v in eigenvalues]
    if len(values) < 2:
        raise ValueError("need at least two eigenvalues")
    if values[1] == 0:
        return math.inf
    return values[0] / values[1]


# --------------------------------------------------------------------------------------------
# Model-level entry points (like `top_hessian_eigenvalue`)
# --------------------------------------------------------------------------------------------


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    probes: str = "rademacher",
    tol: float = 1e-2,
    min_probes: int = 10,
    max_probes: int = 100,
    seed: int = 0,
    chunk_size: int | str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    backend: str = "autograd",
    memory_share: float = CHUNK_MEMORY_SHARE,
) -> TraceResult:
    """tr(H) of the full training loss: Hutchinson's estimator with Rademacher probes, or the
    exact sum over basis vectors (probes="basis"). See `trace_of_landscape`."""
    landscape = LossLandscape(
        model, loss_fn, inputs, targets,
        chunk_size=chunk_size, dtype=dtype, device=device, backend=backend,
        memory_share=memory_share,
    )  # fmt: skip
    return trace_of_landscape(
        landscape, probes=probes, tol=tol, min_probes=min_probes, max_probes=max_probes,
        seed=seed,
    )  # fmt: skip


def exact_trace_by_basis(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    **landscape_options,
) -> TraceResult:
    """sum_i e_i^T H e_i over all N basis vectors (N HVPs): exact, for small networks."""
    return hessian_trace(model, loss_fn, inputs, targets, probes="basis", **landscape_options)


def hessian_spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    probes: int = 4,
    lanczos_steps: int = 30,
    kind: str = "rademacher",
    broadening: float = 1e-2,
    sigma: float | None = None,
    grid: np.ndarray | int = 1000,
    seed: int = 0,
    chunk_size: int | str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    backend: str = "autograd",
    memory_share: float = CHUNK_MEMORY_SHARE,
) -> SpectralDensity:
    """Eigenvalue density of the Hessian of the full training loss by stochastic Lanczos
    quadrature; see `spectral_density_of_landscape`. With chunk_size="auto" the Lanczos basis
    (lanczos_steps + 1 parameter-sized vectors) is set aside before the chunks are sized."""
    reserve = 0
    if chunk_size == "auto":
        size = sum(p.numel() for p in model.parameters())
        element = (dtype or next(model.parameters()).dtype).itemsize
        reserve = (min(lanczos_steps, size) + 1) * size * element
    landscape = LossLandscape(
        model, loss_fn, inputs, targets,
        chunk_size=chunk_size, dtype=dtype, device=device, backend=backend,
        reserve_bytes=reserve, memory_share=memory_share,
    )  # fmt: skip
    return spectral_density_of_landscape(
        landscape, probes=probes, lanczos_steps=lanczos_steps, kind=kind,
        broadening=broadening, sigma=sigma, grid=grid, seed=seed,
    )  # fmt: skip


def top_hessian_eigenpairs(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    k: int = 3,
    **options,
) -> TopEigenpairs:
    """The top k >= 2 eigenpairs (descending) and the gap ratio lambda_1 / lambda_2, by
    `top_hessian_eigenvalue(..., k=k, **options)` (its `tol` applies to every wanted pair)."""
    if k < 2:
        raise ValueError(f"need k >= 2 for the gap ratio, got k={k}")
    result = top_hessian_eigenvalue(model, loss_fn, inputs, targets, k=k, **options)
    return TopEigenpairs.from_result(result)


# --------------------------------------------------------------------------------------------
# On an existing LossLandscape (like `hessian_eigenpairs`)
# --------------------------------------------------------------------------------------------


def trace_of_landscape(
    landscape: LossLandscape,
    *,
    theta: torch.Tensor | None = None,
    probes: str = "rademacher",
    tol: float = 1e-2,
    min_probes: int = 10,
    max_probes: int = 100,
    seed: int = 0,
) -> TraceResult:
    """tr(H(theta)) by Hutchinson's estimator (probes="rademacher") or exactly ("basis").

    Hutchinson: probe p contributes z_p^T H z_p (z_p in {-1, +1}^N); the estimate is their
    mean and its standard error std(ddof=1) / sqrt(P). Stops after the first P >= min_probes
    with stderr <= tol * |mean|; converged=False if max_probes are used without reaching that.
    """
    if probes not in TRACE_PROBES:
        raise ValueError(f"probes must be one of {TRACE_PROBES}, got {probes!r}")
    theta = landscape.as_vector(theta)
    dtype = str(landscape.dtype).removeprefix("torch.")
    began = time.perf_counter()
    if probes == "basis":
        size = landscape.num_parameters
        total = torch.zeros((), dtype=torch.float64, device=landscape.device)
        unit = torch.zeros_like(theta)
        for i in range(size):
            unit[i] = 1
            total += landscape.hvp(unit, theta)[i].to(torch.float64)  # no host sync per HVP
            unit[i] = 0
        trace = float(total)
        return TraceResult(
            trace=trace, stderr=0.0, relative_stderr=0.0, probes=size, hvps=size,
            seconds=time.perf_counter() - began, converged=True, method="basis", tol=0.0,
            dtype=dtype,
        )  # fmt: skip
    if not 2 <= min_probes <= max_probes:
        raise ValueError(f"need 2 <= min_probes <= max_probes, got {min_probes}, {max_probes}")
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    generator = torch.Generator().manual_seed(seed)
    values: list[float] = []
    converged = False
    mean = stderr = relative = math.nan
    while len(values) < max_probes:
        z = _probe(generator, landscape.num_parameters, "rademacher")
        z = z.to(device=landscape.device, dtype=landscape.dtype)
        values.append(float(dot64(z, landscape.hvp(z, theta))))  # one host sync per probe
        if len(values) < min_probes:
            continue
        mean, stderr, relative = _mean_stderr(values)
        if relative <= tol:
            converged = True
            break
    return TraceResult(
        trace=mean, stderr=stderr, relative_stderr=relative, probes=len(values),
        hvps=len(values), seconds=time.perf_counter() - began, converged=converged,
        method="rademacher", tol=tol, dtype=dtype, values=tuple(values),
    )  # fmt: skip


def spectral_density_of_landscape(
    landscape: LossLandscape,
    *,
    theta: torch.Tensor | None = None,
    probes: int = 4,
    lanczos_steps: int = 30,
    kind: str = "rademacher",
    broadening: float = 1e-2,
    sigma: float | None = None,
    grid: np.ndarray | int = 1000,
    seed: int = 0,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian at theta (default theta0).

    Args:
        probes: number of random unit start vectors (`kind`: "rademacher" or "gaussian").
        lanczos_steps: Lanczos steps (= HVPs) per probe, capped at N; the basis of one probe,
            lanczos_steps parameter-sized vectors, lives on the landscape's device.
        broadening: std of the Gaussian kernel relative to the range of all Ritz values
            (ignored if `sigma`, an absolute std, is given).
        grid: the eigenvalue axis, or the number of points of a uniform grid over
            [smallest Ritz value - 6 sigma, largest + 6 sigma] (the density integrates to 1
            within ~1e-8 on it as long as its spacing is below sigma).
    """
    if kind not in DENSITY_PROBES:
        raise ValueError(f"kind must be one of {DENSITY_PROBES}, got {kind!r}")
    if probes < 1 or lanczos_steps < 1:
        raise ValueError(f"need probes >= 1 and lanczos_steps >= 1, got {probes}, {lanczos_steps}")
    theta = landscape.as_vector(theta)
    size = landscape.num_parameters
    steps = min(lanczos_steps, size)
    generator = torch.Generator().manual_seed(seed)
    began = time.perf_counter()
    all_nodes, all_weights = [], []
    hvps = 0
    for _ in range(probes):
        start = _probe(generator, size, kind)
        nodes, weights, used = _lanczos_quadrature(landscape, theta, start, steps)
        all_nodes.append(nodes)
        all_weights.append(weights)
        hvps += used
    seconds = time.perf_counter() - began
    # per-probe quadrature moments sum_j tau_j theta_j^k (= v^T H^k v for k < 2 * steps)
    per_probe = np.array(
        [
            [np.sum(w * t**k) for k in range(1, NUM_MOMENTS + 1)]
            for t, w in zip(all_nodes, all_weights)
        ]
    )
    moments = per_probe.mean(axis=0)
    moment_stderr = (
        per_probe.std(axis=0, ddof=1) / math.sqrt(probes)
        if probes > 1
        else np.full(NUM_MOMENTS, math.nan)
    )
    stacked = np.concatenate(all_nodes)
    top, bottom = float(stacked.max()), float(stacked.min())
    if sigma is None:
        span = top - bottom
        if span <= 0:  # one distinct Ritz value (e.g. H = c I)
            span = max(abs(top), 1.0)
        sigma = broadening * span
    if sigma <= 0:
        raise ValueError(f"the broadening must be positive, got sigma={sigma}")
    if isinstance(grid, (int, np.integer)):
        grid = np.linspace(bottom - 6 * sigma, top + 6 * sigma, int(grid))
    grid = np.asarray(grid, dtype=np.float64)
    density = broadened_density(stacked, np.concatenate(all_weights) / probes, grid, sigma)
    return SpectralDensity(
        grid=grid,
        density=density,
        nodes=tuple(all_nodes),
        weights=tuple(all_weights),
        moments=tuple(float(m) for m in moments),
        top_edge=top,
        probes=probes,
        lanczos_steps=steps,
        hvps=hvps,
        seconds=seconds,
        moment_stderr=tuple(float(s) for s in moment_stderr),
        bottom_edge=bottom,
        sigma=float(sigma),
        num_parameters=size,
    )


def broadened_density(eigenvalues, weights, grid: np.ndarray, sigma: float) -> np.ndarray:
    """sum_j weights_j N(grid; eigenvalues_j, sigma^2). With weights 1/N and the exact
    eigenvalues this is the exact smoothed density SLQ estimates (for comparisons)."""
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), eigenvalues.shape)
    grid = np.asarray(grid, dtype=np.float64)
    density = np.zeros_like(grid)
    for begin in range(0, len(eigenvalues), 4096):  # bounded memory for exact spectra
        t = eigenvalues[begin : begin + 4096]
        z = (grid[:, None] - t[None, :]) / sigma
        density += np.exp(-0.5 * z**2) @ weights[begin : begin + 4096]
    return density / (sigma * math.sqrt(2 * math.pi))


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _probe(generator: torch.Generator, size: int, kind: str) -> torch.Tensor:
    """Float64 CPU probe: Rademacher z in {-1, +1}^N (norm sqrt(N)) or standard Gaussian."""
    if kind == "rademacher":
        return torch.randint(0, 2, (size,), generator=generator, dtype=torch.float64) * 2 - 1
    return torch.randn(size, generator=generator, dtype=torch.float64)


def _mean_stderr(values: list[float]) -> tuple[float, float, float]:
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    stderr = float(array.std(ddof=1) / math.sqrt(len(array)))
    if mean != 0:
        relative = stderr / abs(mean)
    else:
        relative = 0.0 if stderr == 0 else math.inf
    return mean, stderr, relative


def _lanczos_quadrature(landscape, theta, start, steps):
    """`steps` Lanczos steps from start / ||start|| with full re-orthogonalization (classical
    Gram-Schmidt twice, float64 accumulation; basis on the landscape's device and dtype).
    Returns the Ritz values (ascending), the weights S[0, j]^2 and the HVPs used; stops early
    when the Krylov space is invariant (beta_j <= sqrt(eps) ||T||)."""
    device, dtype = landscape.device, landscape.dtype
    basis = torch.empty((steps, landscape.num_parameters), device=device, dtype=dtype)
    current = start.to(device=device, dtype=dtype)
    basis[0] = current / norm64(current).to(dtype)
    # Stop once beta_j <= sqrt(eps) ||T||: continuing would change the quadrature's weights and
    # nodes by O(beta^2) = O(eps) relative. (In float64 the betas of an exhausted Krylov space
    # were ~1e-12 ||T||, the rounding of autograd HVPs, far above 100 eps.)
    breakdown = math.sqrt(torch.finfo(dtype).eps)
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        product = landscape.hvp(basis[j], theta)
        residual, coefficients = _orthogonalize(basis[: j + 1], product)
        alpha, beta = torch.stack([coefficients[j], norm64(residual)]).tolist()  # one sync
        alphas.append(alpha)
        scale = max(abs(a) for a in alphas + betas + [beta]) or 1.0
        if j + 1 == steps or beta <= breakdown * scale:
            break
        betas.append(beta)
        basis[j + 1] = residual / norm64(residual).to(dtype)
    if len(alphas) == 1:
        return np.array(alphas), np.ones(1), 1
    nodes, vectors = eigh_tridiagonal(np.array(alphas), np.array(betas))
    return nodes, vectors[0] ** 2, len(alphas)
