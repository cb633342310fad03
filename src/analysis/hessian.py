"""Sharpness: the top eigenvalue of the Hessian of the full training loss (Sec. 2, eq. (20)).

A minimum w* is linearly stable for GD with step size eta only if lambda_max(H_w*) <= 2 / eta
(App. I, eq. (S4)); this is the paper's notion of sharpness.

Three solvers work on Hessian-vector products of the full-data loss (`LossLandscape.hvp`).
For all of them, `tol` is the requested relative accuracy of lambda_max:

* "lanczos": implicitly restarted Lanczos, ARPACK through `scipy.sparse.linalg.eigsh` on a
  `LinearOperator`, which="LA" (largest algebraic). ARPACK stops when every wanted Ritz pair
  (theta, v) has ||H v - theta v|| <= solver_tol * |theta|. For a symmetric matrix the Ritz
  value's error is then at most ||r||^2 / gap (gap: distance to the rest of the spectrum), so we
  pass solver_tol = sqrt(tol * ASSUMED_RELATIVE_GAP): the eigenvalue is within tol whenever the
  relative gap (lambda_1 - lambda_2) / lambda_1 is at least ASSUMED_RELATIVE_GAP = 1e-2, and
  within tol * 1e-2 / gap otherwise. Measured: lambda_2 / lambda_1 was 0.98-0.993 on 784-wide
  denoisers, and the errors were 10-1000x below tol (e.g. 8e-8 at tol 1e-6 with gap 0.019;
  <= 1e-5 at tol 1e-4 with gap 0.007). Pass `solver_tol` to set ARPACK's tolerance directly.
  Each HVP crosses the host once (eigsh works on float64 NumPy vectors); ARPACK's own work on
  the float64 Krylov basis costs about 27 ns per parameter and iteration on the host, which on
  a GPU is comparable to the HVP itself (depth 12, n = 60k on an H100: 0.2 s each).
* "lanczos_torch": Lanczos without restarts on the landscape's device and dtype. The Krylov
  basis stays there (one parameter-sized vector per HVP), each new vector is re-orthogonalized
  against all of it twice (classical Gram-Schmidt, inner products accumulated in float64), and
  only the tridiagonal T (two scalars per HVP) goes to the host, where its eigenpairs
  (theta_i, s_i) are recomputed after every HVP. Same stopping rule and solver_tol as ARPACK:
  the residual of a Ritz pair is ||H v_i - theta_i v_i|| = |beta_j s_i[j]|, checked for each
  of the k wanted pairs after each HVP (ARPACK checks only at restarts), so it usually stops a
  few HVPs earlier (784-wide nets, tol 1e-4: 40/23/28 vs ARPACK's 47/27/32 at depth 2/6/12).
  If the Krylov space becomes invariant (beta ~ 0) before k pairs have converged, it continues
  from a fresh seeded vector orthogonal to the basis. Like ARPACK, it finds one copy of a
  repeated eigenvalue unless such a restart uncovers another.
* "power": the power method the paper used, stopped when the Rayleigh quotient changes by less
  than tol (relative) between two iterations. Its actual error is about that change times
  r^2 / (1 - r^2), r = lambda_2 / lambda_1, i.e. 25-70x the tolerance for r = 0.98-0.993:
  measured 1.7% error at PyHessian's 1e-3 and 0.25-1.2% at 1e-4. It converges to the
  eigenvalue of largest magnitude, which is lambda_max at a minimum but not necessarily at an
  arbitrary point (negative curvature).

"auto" (the default) is "lanczos_torch" when the landscape is on a CUDA device and "lanczos"
on the CPU, where the two took the same wall time (re-orthogonalization against the growing
basis costs about what ARPACK's host work does, and there is no transfer to save).

All are deterministic on CPU: the start vector comes from a seeded torch generator (or the
caller's `v0`, e.g. the previous eigenvector when sharpness is tracked during training), and
ARPACK's generator and the restart vectors of "lanczos_torch" are seeded as well.

Cost of an HVP: an exact HVP of an MLP (forward-over-reverse, or the equivalent double
backward) needs per hidden layer about 8 matmuls (forward, R-forward x2, backward-input,
R-backward x2, R-weight-grad x2) where a gradient needs 3 (the first layer has fewer in both),
so where matmuls dominate an HVP costs at least ~2.5-2.7x a gradient for depth 6-12 (2.2x for
depth 2): the issue's target of 1.5x is not reachable by an exact HVP. Measured on one CPU core
(784-wide ReLU MLP, depth 2-12, n = 1024-4096): "autograd" 2.3-3.3x a gradient, "func"
3.0-3.2x; neither is consistently faster, and "autograd" needs less memory (see
`HVP_MEMORY_FACTOR`), so it stays the default. torch.compile of the func HVP was exact (8e-16
relative in float64) and 8-20% faster, after 8-27 s of compilation per model and chunk shape,
which a measurement of ~40 HVPs does not repay, so it is not used. On an H100 (before this
change) the ratio was 2.9-3.0x (depth 6: 0.098 vs 0.034 s; depth 12: 0.203 vs 0.068 s).
"""

from __future__ import annotations

import inspect
import math
import time
from copy import deepcopy
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn
from torch.nn.utils import vector_to_parameters

from src.analysis.landscape import (
    CHUNK_MEMORY_SHARE,
    LossFn,
    LossLandscape,
    dot64,
    norm64,
    resolve_device,
)

METHODS = ("auto", "lanczos", "lanczos_torch", "power")
# ARPACK draws a random vector only if it must restart from scratch; scipy >= 1.15 lets us seed
# that generator (older versions use numpy's global one).
_EIGSH_TAKES_RNG = "rng" in inspect.signature(eigsh).parameters
ASSUMED_RELATIVE_GAP = 1e-2


class SharpnessNotConverged(RuntimeError):
    """The eigensolver used up `max_hvps` Hessian-vector products before reaching `tol`.

    `estimate` is the last Rayleigh quotient (power method) or top Ritz value (lanczos_torch;
    None for "lanczos", whose unconverged Ritz values ARPACK does not return) and `history`
    all of them."""

    def __init__(self, message: str, estimate: float | None = None, history=None) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.history = list(history or [])


@dataclass
class SharpnessResult:
    eigenvalue: float  # top eigenvalue (lambda_max)
    eigenvector: torch.Tensor  # flat, unit norm, CPU, parameters_to_vector order
    eigenvalues: list[float]  # top-k, descending (k=1 -> [eigenvalue])
    hvps: int  # Hessian-vector products used, including the one for the residual
    residual: float  # ||H v - lambda v|| / |lambda| for the top pair, recomputed
    seconds: float
    method: str  # the method used: "lanczos" | "lanczos_torch" | "power" ("auto" resolved)
    tol: float = 0.0  # requested relative accuracy of the eigenvalue
    solver_tol: float = 0.0  # Ritz residual tolerance (Lanczos) or relative change (power)
    dtype: str = "float32"
    eigenvectors: torch.Tensor | None = field(default=None, repr=False)  # (k, N), k > 1 only
    # power: Rayleigh quotient per HVP; lanczos_torch: top Ritz value per HVP
    history: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        """JSON-friendly summary (without the vectors)."""
        return {
            "eigenvalue": self.eigenvalue,
            "eigenvalues": list(self.eigenvalues),
            "hvps": self.hvps,
            "residual": self.residual,
            "seconds": self.seconds,
            "method": self.method,
            "tol": self.tol,
            "solver_tol": self.solver_tol,
            "dtype": self.dtype,
        }


def full_loss(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean training loss over all samples, chunk-weighted, in eval mode, without grad."""
    return LossLandscape(model, loss_fn, inputs, targets, chunk_size=chunk_size).loss()


def full_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Flat gradient of the full training loss (does not touch `param.grad`)."""
    return LossLandscape(model, loss_fn, inputs, targets, chunk_size=chunk_size).gradient()


@dataclass
class Polish:
    """`polished`'s outcome: the model after the steps, and the full loss before and after."""

    model: nn.Module
    steps: int
    step_size: float
    loss_before: float
    loss_after: float


def polished(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    step_size: float,
    chunk_size: int | None = None,
) -> Polish:
    """A copy of `model` after `steps` full-batch gradient-descent steps of `step_size` (the
    caller's model is not touched).

    Why: SGD at a fixed step ends at the edge of stability, oscillating across a valley along
    its sharpest direction, and lambda_max at the last iterate depends on where in that
    oscillation training stopped. A few full-batch steps of 1 / lambda_max (half GD's
    stability limit 2 / lambda_max, App. I eq. S4) remove the component along the top
    eigenvector in one step on a quadratic and damp the next directions, so the Hessian is
    measured at the valley floor the run sits above (issue 23: a robust lambda_max)."""
    copy = deepcopy(model)
    landscape = LossLandscape(copy, loss_fn, inputs, targets, chunk_size=chunk_size)
    theta = landscape.as_vector(None)
    before = float(landscape.loss(theta))
    for _ in range(steps):
        theta = theta - step_size * landscape.gradient(theta)
    vector_to_parameters(theta.to(next(copy.parameters()).dtype), copy.parameters())
    return Polish(copy, steps, step_size, before, float(landscape.loss(theta)))


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    vector: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """H v for the full training loss, v and the result flat."""
    landscape = LossLandscape(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    return landscape.hvp(vector)


def exact_hessian(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    dtype: torch.dtype | None = torch.float64,
) -> torch.Tensor:
    """Dense Hessian of the full training loss (small networks only; float64 by default)."""
    return LossLandscape(model, loss_fn, inputs, targets, dtype=dtype).hessian()


def top_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    method: str = "auto",
    k: int = 1,
    tol: float = 1e-6,
    max_hvps: int | None = None,
    chunk_size: int | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    v0: torch.Tensor | None = None,
    ncv: int | None = None,
    solver_tol: float | None = None,
    device: torch.device | str | None = None,
    backend: str = "autograd",
    memory_share: float = CHUNK_MEMORY_SHARE,
) -> SharpnessResult:
    """Top eigenvalue (and eigenvector) of the Hessian of the full training loss.

    Args:
        method: "lanczos" (ARPACK), "lanczos_torch" (Lanczos on the device), "power" (the
            paper's power method) or "auto" ("lanczos_torch" on CUDA, else "lanczos").
        tol: relative accuracy of lambda_max; see the module docstring for how each method
            turns it into a stopping rule and what that guarantees.
        k: number of top eigenvalues (the power method finds them one after the other, with
            deflation).
        max_hvps: budget of Hessian-vector products (default 400 for Lanczos, 2000 per
            eigenvalue for the power method), not counting the final residual check; exceeding
            it raises `SharpnessNotConverged`. lanczos_torch keeps one basis vector per HVP on
            the device, so it also bounds that memory.
        dtype: e.g. torch.float64 to run on a float64 copy of the model.
        seed: seeds the random start vector (used when v0 is None).
        v0: start vector (flat), e.g. the previous `SharpnessResult.eigenvector`.
        ncv: ARPACK's Lanczos basis size ("lanczos" only), default max(2k + 1, 10). ARPACK checks
            convergence only after each (re)start, so a small basis wastes fewer HVPs past
            convergence; on a 784-wide net 10 needed 37 HVPs where 20 (scipy's default) needed 42.
        solver_tol: overrides the stopping tolerance handed to the solver (the Lanczos Ritz
            residual tolerance, or the power method's relative change); default derived from tol.
        chunk_size, device, backend: see `LossLandscape` (chunk_size="auto": from the memory
            left free once the "lanczos_torch" basis is set aside, `memory_share` of it).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    reserve = 0
    if chunk_size == "auto" and resolve_method(method, device, model) == "lanczos_torch":
        reserve = lanczos_basis_bytes(model, dtype, 400 if max_hvps is None else max_hvps)
    landscape = LossLandscape(
        model, loss_fn, inputs, targets,
        chunk_size=chunk_size, dtype=dtype, device=device, backend=backend,
        reserve_bytes=reserve, memory_share=memory_share,
    )  # fmt: skip
    return hessian_eigenpairs(
        landscape, method=method, k=k, tol=tol, max_hvps=max_hvps, seed=seed, v0=v0, ncv=ncv,
        solver_tol=solver_tol,
    )  # fmt: skip


def resolve_method(
    method: str, device: torch.device | str | None, model: nn.Module | None = None
) -> str:
    """The solver "auto" stands for on a device: "lanczos_torch" on CUDA, else "lanczos"."""
    if method != "auto":
        return method
    device = resolve_device(device, next(model.parameters()).device if model else None)
    return "lanczos_torch" if device.type == "cuda" else "lanczos"


def lanczos_basis_bytes(model: nn.Module, dtype: torch.dtype | None, max_hvps: int) -> int:
    """Device memory the "lanczos_torch" basis can reach within `max_hvps` HVPs: one
    parameter-sized vector per HVP plus the next one (the basis grows by doubling up to that)."""
    size = sum(p.numel() for p in model.parameters())
    element = (dtype or next(model.parameters()).dtype).itemsize
    return min(size, max_hvps + 1) * size * element


def hessian_eigenpairs(
    landscape: LossLandscape,
    *,
    theta: torch.Tensor | None = None,
    method: str = "auto",
    k: int = 1,
    tol: float = 1e-6,
    max_hvps: int | None = None,
    seed: int = 0,
    v0: torch.Tensor | None = None,
    ncv: int | None = None,
    solver_tol: float | None = None,
) -> SharpnessResult:
    """`top_hessian_eigenvalue` on an existing `LossLandscape` (at `theta`, default theta0)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 1 <= k < landscape.num_parameters:
        raise ValueError(f"need 1 <= k < {landscape.num_parameters}, got k={k}")
    method = resolve_method(method, landscape.device)
    theta = landscape.as_vector(theta)
    start = _start_vector(landscape.num_parameters, seed, v0)
    began = time.perf_counter()
    if method in ("lanczos", "lanczos_torch"):
        if solver_tol is None:
            solver_tol = math.sqrt(tol * ASSUMED_RELATIVE_GAP)
        budget = 400 if max_hvps is None else max_hvps
        if method == "lanczos":
            values, vectors, hvps = _lanczos(
                landscape, theta, k, solver_tol, budget, seed, start, ncv
            )
            history = []
        else:
            values, vectors, hvps, history = _lanczos_torch(
                landscape, theta, k, solver_tol, budget, seed, start
            )
    else:
        solver_tol = tol if solver_tol is None else solver_tol
        budget = 2000 * k if max_hvps is None else max_hvps
        values, vectors, hvps, history = _power(landscape, theta, k, solver_tol, budget, start)
    top = vectors[0].to(device=landscape.device, dtype=landscape.dtype)
    residual_vector = landscape.hvp(top, theta) - values[0] * top
    residual = float(norm64(residual_vector)) / abs(values[0])
    hvps += 1
    seconds = time.perf_counter() - began
    return SharpnessResult(
        eigenvalue=values[0],
        eigenvector=vectors[0],
        eigenvalues=values,
        hvps=hvps,
        residual=residual,
        seconds=seconds,
        method=method,
        tol=tol,
        solver_tol=solver_tol,
        dtype=str(landscape.dtype).removeprefix("torch."),
        eigenvectors=vectors if k > 1 else None,
        history=history,
    )


def _start_vector(size: int, seed: int, v0: torch.Tensor | None) -> torch.Tensor:
    """Unit-norm float64 CPU start vector: v0 if given, else seeded Gaussian."""
    if v0 is not None:
        start = torch.as_tensor(v0).detach().reshape(-1).to("cpu", torch.float64)
        if start.numel() != size:
            raise ValueError(f"v0 has {start.numel()} entries, expected {size}")
    else:
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(size, generator=generator, dtype=torch.float64)
    norm = start.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("start vector must be finite and non-zero")
    return start / norm


def _fix_sign(vectors: torch.Tensor) -> torch.Tensor:
    """Make each row's largest-magnitude entry positive (eigenvectors are defined up to sign)."""
    rows = torch.arange(vectors.shape[0])
    signs = torch.sign(vectors[rows, vectors.abs().argmax(dim=1)])
    signs[signs == 0] = 1
    return vectors * signs[:, None]


def _lanczos(landscape, theta, k, tol, max_hvps, seed, start, ncv):
    n = landscape.num_parameters
    ncv = min(n, max(2 * k + 1, 10) if ncv is None else ncv)
    hvps = 0

    def matvec(x: np.ndarray) -> np.ndarray:
        nonlocal hvps
        if hvps >= max_hvps:
            raise SharpnessNotConverged(
                f"Lanczos: no convergence to tol={tol} within max_hvps={max_hvps}"
            )
        hvps += 1
        vector = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
        product = landscape.hvp(vector.to(device=landscape.device, dtype=landscape.dtype), theta)
        return product.to("cpu", torch.float64).numpy()  # the one host transfer per HVP

    operator = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    seeding = {"rng": seed} if _EIGSH_TAKES_RNG else {}
    try:
        values, vectors = eigsh(
            operator, k=k, which="LA", v0=start.numpy(), tol=tol, ncv=ncv, **seeding
        )
    except ArpackNoConvergence as error:  # only reached if ARPACK's own maxiter is hit
        raise SharpnessNotConverged(str(error)) from error
    order = np.argsort(values)[::-1]
    values = [float(v) for v in values[order]]
    vectors = torch.from_numpy(np.ascontiguousarray(vectors[:, order].T))
    vectors = vectors / vectors.norm(dim=1, keepdim=True)  # float64: see norm64
    return values, _fix_sign(vectors).to(landscape.dtype), hvps


def _power(landscape, theta, k, tol, max_hvps, start):
    """Power method with deflation against the eigenvectors already found."""
    found: list[torch.Tensor] = []
    values: list[float] = []
    history: list[float] = []
    hvps = 0
    for _ in range(k):
        vector = start.to(device=landscape.device, dtype=landscape.dtype)
        previous = None
        while True:
            for other in found:
                vector = vector - dot64(other, vector).to(vector.dtype) * other
            vector = vector / norm64(vector).to(vector.dtype)
            if hvps >= max_hvps:
                raise SharpnessNotConverged(
                    f"power method: no convergence to tol={tol} within max_hvps={max_hvps}",
                    estimate=history[-1] if history else None,
                    history=history,
                )
            product = landscape.hvp(vector, theta)
            hvps += 1
            for other in found:
                product = product - dot64(other, product).to(product.dtype) * other
            value = float(dot64(vector, product))  # Rayleigh quotient; one host sync per HVP
            history.append(value)
            if previous is not None and abs(value - previous) <= tol * abs(value):
                break
            previous = value
            vector = product
        found.append(vector)
        values.append(value)
    order = np.argsort(values)[::-1]
    vectors = torch.stack([found[i].to("cpu") for i in order])
    return [values[i] for i in order], _fix_sign(vectors), hvps, history


# Gram-Schmidt converts the basis to float64 in column blocks of at most this many entries, so
# that float64 accumulation never needs a float64 copy of the whole basis. On CPU a 2 MiB block
# stays in cache (7x faster than 128 MiB blocks for 35 x 1.2M entries); on a GPU large blocks
# keep the number of kernel launches small.
_PROJECTION_BLOCK_ENTRIES = {"cpu": 2**18, "cuda": 2**24}


def _project64(basis: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """basis @ vector accumulated in float64 (float64 result on the basis' device); see
    `norm64` for why float32 BLAS reductions are not good enough."""
    if basis.dtype == torch.float64:
        return basis @ vector
    rows, size = basis.shape
    block = max(1, _PROJECTION_BLOCK_ENTRIES.get(basis.device.type, 2**24) // rows)
    coefficients = torch.zeros(rows, dtype=torch.float64, device=basis.device)
    for begin in range(0, size, block):
        end = min(size, begin + block)
        coefficients += basis[:, begin:end].to(torch.float64) @ vector[begin:end].to(torch.float64)
    return coefficients


def _orthogonalize(basis: torch.Tensor, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the span of the (orthonormal) rows of `basis` from `vector`: classical
    Gram-Schmidt applied twice ("twice is enough"). Returns the vector and the float64
    coefficients of both passes summed."""
    total = torch.zeros(basis.shape[0], dtype=torch.float64, device=basis.device)
    for _ in range(2):
        coefficients = _project64(basis, vector)
        vector = vector - coefficients.to(vector.dtype) @ basis
        total += coefficients
    return vector, total


def _lanczos_torch(landscape, theta, k, tol, max_hvps, seed, start):
    """Lanczos with full re-orthogonalization, basis on the landscape's device and dtype.

    Returns the top-k Ritz values (descending), their unit Ritz vectors (CPU, landscape dtype,
    sign-fixed), the number of HVPs and the top Ritz value after each HVP."""
    size = landscape.num_parameters
    device, dtype = landscape.device, landscape.dtype
    # the basis grows by doubling, up to one vector per HVP plus the next one
    capacity_limit = min(size, max_hvps + 1)
    basis = torch.empty((min(capacity_limit, 16), size), device=device, dtype=dtype)
    current = start.to(device=device, dtype=dtype)
    basis[0] = current / norm64(current).to(dtype)
    alphas: list[float] = []
    betas: list[float] = []  # off-diagonal of T; 0 where a fresh vector was started
    history: list[float] = []
    restarts = torch.Generator().manual_seed(seed + 1)
    # below this beta, the Krylov space is numerically invariant (relative to ||T||)
    breakdown = 100 * torch.finfo(dtype).eps
    hvps = 0
    while True:
        j = len(alphas)  # basis[: j + 1] is filled
        if hvps >= max_hvps:
            raise SharpnessNotConverged(
                f"lanczos_torch: no convergence to tol={tol} within max_hvps={max_hvps}",
                estimate=history[-1] if history else None,
                history=history,
            )
        product = landscape.hvp(basis[j], theta)
        hvps += 1
        residual, coefficients = _orthogonalize(basis[: j + 1], product)
        # one host transfer per HVP: alpha_j and beta_j
        alpha, beta = torch.stack([coefficients[j], norm64(residual)]).tolist()
        alphas.append(alpha)
        values, ritz = eigh_tridiagonal(np.array(alphas), np.array(betas))
        top = np.arange(len(alphas) - 1, max(len(alphas) - 1 - k, -1), -1)  # descending
        history.append(float(values[top[0]]))
        scale = float(np.abs(values).max())
        ritz_residuals = np.abs(beta * ritz[-1, top])
        converged = len(top) == k and bool(np.all(ritz_residuals <= tol * np.abs(values[top])))
        if converged or j + 1 >= size:
            break
        if beta <= breakdown * scale:
            # invariant subspace before k pairs converged: continue from a fresh vector
            fresh = torch.randn(size, generator=restarts, dtype=torch.float64)
            residual, _ = _orthogonalize(basis[: j + 1], fresh.to(device=device, dtype=dtype))
            beta = 0.0
        if j + 1 == basis.shape[0]:
            grown = torch.empty(
                (min(capacity_limit, 2 * basis.shape[0]), size), device=device, dtype=dtype
            )
            grown[: j + 1] = basis
            basis = grown
        betas.append(beta)
        basis[j + 1] = residual / norm64(residual).to(dtype)
    ritz_top = torch.from_numpy(np.ascontiguousarray(ritz[:, top].T))
    vectors = ritz_top.to(device=device, dtype=dtype) @ basis[: len(alphas)]
    norms = torch.linalg.vector_norm(vectors, dim=1, keepdim=True, dtype=torch.float64)
    vectors = (vectors / norms.to(dtype)).to("cpu")
    return [float(values[i]) for i in top], _fix_sign(vectors), hvps, history
