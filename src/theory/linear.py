"""Deep linear networks f(x) = W_m ... W_1 x (eq. 1) at their global minima (Secs. 2, 4, 5).

Conventions
-----------
- A network is a list ``weights = [W_1, ..., W_m]`` of float64 arrays, ``W_k`` of shape
  ``(d_k, d_{k-1})``; ``dims = (d_0, ..., d_m)`` with ``d_0 = d_x`` and ``d_m = d_y``.
- ``vec`` is the column-major vectorization used by the paper's Kronecker identities (P1)-(P3);
  the parameter vector is ``w = [vec(W_1); ...; vec(W_m)]`` (eq. 1).
- Loss (eq. 2): ``l(w) = mean_i ||y_i - W_m...W_1 x_i||^2`` (sum over outputs, mean over samples).
- Data matrices hold one sample per row: ``X`` is ``(n, d_x)``, ``Y`` is ``(n, d_y)``.
- ``sigma_x`` is the empirical second moment of x; ``None`` means white data (A2, ``I``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

Weights = list[np.ndarray]


# --------------------------------------------------------------------------------------------
# Basic helpers
# --------------------------------------------------------------------------------------------


def vec(matrix: np.ndarray) -> np.ndarray:
    """Column-major vectorization, so that vec(M1 M2 M3) = (M3^T kron M1) vec(M2) (P1)."""
    return np.asarray(matrix).reshape(-1, order="F")


def unvec(vector: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `vec`."""
    return np.asarray(vector).reshape(shape, order="F")


def flatten_weights(weights: Sequence[np.ndarray]) -> np.ndarray:
    """w = [vec(W_1); ...; vec(W_m)] (Sec. 2)."""
    return np.concatenate([vec(W) for W in weights])


def unflatten_weights(w: np.ndarray, dims: Sequence[int]) -> Weights:
    """Inverse of `flatten_weights` for layer sizes ``dims = (d_0, ..., d_m)``."""
    out, start = [], 0
    for k in range(1, len(dims)):
        size = dims[k] * dims[k - 1]
        out.append(unvec(w[start : start + size], (dims[k], dims[k - 1])))
        start += size
    return out


def layer_dims(weights: Sequence[np.ndarray]) -> tuple[int, ...]:
    """(d_0, ..., d_m) of a network."""
    return (weights[0].shape[1],) + tuple(W.shape[0] for W in weights)


def satisfies_capacity_assumption(dims: Sequence[int]) -> bool:
    """Assumption A1: min_j d_j >= min(d_x, d_y)."""
    return min(dims) >= min(dims[0], dims[-1])


def end_to_end(weights: Sequence[np.ndarray]) -> np.ndarray:
    """W_m ... W_1 (eq. 1)."""
    product = weights[0]
    for W in weights[1:]:
        product = W @ product
    return product


def partial_products(weights: Sequence[np.ndarray]) -> tuple[Weights, Weights]:
    """Left and right partial products around every layer (notation (14)).

    Returns ``(lefts, rights)`` with ``lefts[k-1] = W_{k-1}...W_1`` (``I_{d_x}`` for k = 1) and
    ``rights[k-1] = W_m...W_{k+1}`` (``I_{d_y}`` for k = m), k = 1..m.
    """
    m = len(weights)
    d_x, d_y = weights[0].shape[1], weights[-1].shape[0]
    lefts = [np.eye(d_x)]
    for k in range(1, m):
        lefts.append(weights[k - 1] @ lefts[-1])
    rights = [np.eye(d_y)]
    for k in range(m - 1, 0, -1):
        rights.append(rights[-1] @ weights[k])
    rights.reverse()
    return lefts, rights


def symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root (the Sigma_x^{1/2} of eq. (16))."""
    evals, evecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T


def _sigma_half(sigma_x: np.ndarray | None, d_x: int) -> np.ndarray:
    return np.eye(d_x) if sigma_x is None else symmetric_sqrt(np.asarray(sigma_x, float))


def top_singular_triplet(T: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(sigma_max(T), u, v) with T v = sigma_max u and T^T u = sigma_max v (Sec. 4)."""
    U, s, Vt = np.linalg.svd(T)
    return float(s[0]), U[:, 0].copy(), Vt[0].copy()


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def rectangular_diagonal(values: Sequence[float], rows: int, cols: int) -> np.ndarray:
    """``rows x cols`` matrix with ``values`` on its main diagonal (the S_j^{1/m} of eq. (27))."""
    D = np.zeros((rows, cols))
    n = min(rows, cols, len(values))
    D[np.arange(n), np.arange(n)] = np.asarray(values, float)[:n]
    return D


# --------------------------------------------------------------------------------------------
# Data, eq. (2)-(3)
# --------------------------------------------------------------------------------------------


def second_moments(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical (Sigma_x, Sigma_yx) = (mean x x^T, mean y x^T)."""
    n = X.shape[0]
    return X.T @ X / n, Y.T @ X / n


def least_squares_target(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """T = Sigma_yx Sigma_x^{-1}, eq. (3): the unique end-to-end map of every global minimum."""
    sigma_x, sigma_yx = second_moments(X, Y)
    # T Sigma_x = Sigma_yx  <=>  Sigma_x T^T = Sigma_yx^T (Sigma_x symmetric).
    return np.linalg.solve(sigma_x, sigma_yx.T).T


def whitened_inputs(n: int, d_x: int, rng: np.random.Generator) -> np.ndarray:
    """n x d_x inputs whose empirical second moment is exactly I (assumption A2)."""
    if n < d_x:
        raise ValueError("need n >= d_x for a full-rank second moment")
    Q, _ = np.linalg.qr(rng.standard_normal((n, d_x)))
    return np.sqrt(n) * Q


def synthetic_regression(
    n: int,
    d_x: int,
    d_y: int,
    rng: np.random.Generator,
    *,
    white: bool = True,
    noise_std: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic linear-regression data (App. IX.1): y = T0 x + noise.

    With ``white=True`` the inputs satisfy A2 exactly; otherwise x has a random, non-white second
    moment (eigenvalues spread over about a decade).
    """
    if white:
        X = whitened_inputs(n, d_x, rng)
    else:
        mixing = rng.standard_normal((d_x, d_x)) * np.exp(rng.uniform(-1.0, 1.0, d_x))
        X = rng.standard_normal((n, d_x)) @ mixing.T
    T0 = rng.standard_normal((d_y, d_x)) / np.sqrt(d_x)
    Y = X @ T0.T + noise_std * rng.standard_normal((n, d_y))
    return X, Y


def data_with_target(
    T: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    white: bool = True,
    noise_std: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples (X, Y) whose least-squares solution (3) is exactly ``T`` (up to rounding).

    Y = X T^T + E with E orthogonal to the columns of X (E^T X = 0), so Sigma_yx = T Sigma_x while
    the minimum loss is still positive.
    """
    d_y, d_x = T.shape
    if white:
        X = whitened_inputs(n, d_x, rng)
    else:
        mixing = rng.standard_normal((d_x, d_x)) * np.exp(rng.uniform(-1.0, 1.0, d_x))
        X = rng.standard_normal((n, d_x)) @ mixing.T
    Q, _ = np.linalg.qr(X)
    E = noise_std * rng.standard_normal((n, d_y))
    E -= Q @ (Q.T @ E)
    return X, X @ T.T + E


def squared_loss(weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
    """Eq. (2): mean over samples of ||y - W_m...W_1 x||^2."""
    residual = Y - X @ end_to_end(weights).T
    return float(np.mean(np.sum(residual**2, axis=1)))


def excess_loss(
    weights: Sequence[np.ndarray], T: np.ndarray, sigma_x: np.ndarray | None = None
) -> float:
    """l(w) - min l = ||(W_m...W_1 - T) Sigma_x^{1/2}||_F^2 (exact for the quadratic loss (2)).

    Computed this way it has no cancellation error, unlike subtracting two losses.
    """
    difference = end_to_end(weights) - T
    if sigma_x is None:
        return float(np.sum(difference**2))
    return float(np.trace(difference @ sigma_x @ difference.T))


# --------------------------------------------------------------------------------------------
# Hessian at a global minimum, Lemma 3 (15)-(16) and eq. (20)-(21)
# --------------------------------------------------------------------------------------------


def phi_blocks(weights: Sequence[np.ndarray], sigma_x: np.ndarray | None = None) -> Weights:
    """Phi_k = (W_{k-1}...W_1 Sigma_x^{1/2}) kron (W_m...W_{k+1})^T, eq. (16)/(S47)."""
    lefts, rights = partial_products(weights)
    half = _sigma_half(sigma_x, weights[0].shape[1])
    return [np.kron(L @ half, P.T) for L, P in zip(lefts, rights)]


def phi_matrix(weights: Sequence[np.ndarray], sigma_x: np.ndarray | None = None) -> np.ndarray:
    """Phi = [Phi_1; ...; Phi_m], an N x (d_x d_y) matrix (Lemma 3)."""
    return np.vstack(phi_blocks(weights, sigma_x))


def hessian_at_minimum(
    weights: Sequence[np.ndarray], sigma_x: np.ndarray | None = None
) -> np.ndarray:
    """H_w = 2 Phi Phi^T, eq. (15); valid only at a global minimum (W_m...W_1 = T)."""
    phi = phi_matrix(weights, sigma_x)
    return 2.0 * phi @ phi.T


def reduced_hessian(weights: Sequence[np.ndarray], sigma_x: np.ndarray | None = None) -> np.ndarray:
    """H_hat = 2 Phi^T Phi, the (d_x d_y) x (d_x d_y) matrix of eq. (20).

    Uses Phi_k^T Phi_k = (Sigma^{1/2} L_k^T L_k Sigma^{1/2}) kron (P_k P_k^T) (P2)-(P3), so Phi
    itself (N rows) is never formed.
    """
    lefts, rights = partial_products(weights)
    half = _sigma_half(sigma_x, weights[0].shape[1])
    total = 0.0
    for L, P in zip(lefts, rights):
        Lh = L @ half
        total = total + np.kron(Lh.T @ Lh, P @ P.T)
    return 2.0 * total


def top_hessian_eigenvalue_at_minimum(
    weights: Sequence[np.ndarray], sigma_x: np.ndarray | None = None
) -> float:
    """Sharpness lambda_max(H_w) at a global minimum, from the small matrix of eq. (20)."""
    return float(np.linalg.eigvalsh(reduced_hessian(weights, sigma_x))[-1])


def top_hessian_eigenpair_at_minimum(
    weights: Sequence[np.ndarray], sigma_x: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """(lambda_max(H_w), unit top eigenvector of H_w in R^N), both from eq. (20).

    If b is the top eigenvector of Phi^T Phi then Phi b is the top eigenvector of Phi Phi^T.
    """
    evals, evecs = np.linalg.eigh(reduced_hessian(weights, sigma_x))
    direction = phi_matrix(weights, sigma_x) @ evecs[:, -1]
    return float(evals[-1]), direction / np.linalg.norm(direction)


def flattest_sharpness(T: np.ndarray, depth: int) -> float:
    """2 m sigma_max(T)^{2(1-1/m)}: sharpness of the flattest minima, eq. (17)/(29) (white data)."""
    sigma_max = np.linalg.norm(T, 2)
    return float(2 * depth * sigma_max ** (2 * (1 - 1 / depth)))


def hessian_top_eigenvector_theorem1(weights: Sequence[np.ndarray], T: np.ndarray) -> np.ndarray:
    """Unit vector along b = Phi (v kron u), the top eigenvector claimed by Theorem 1."""
    _, u, v = top_singular_triplet(T)
    direction = phi_matrix(weights) @ np.kron(v, u)
    return direction / np.linalg.norm(direction)


# --------------------------------------------------------------------------------------------
# Constructing global minima
# --------------------------------------------------------------------------------------------


def _full_svd(T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    U, s, Vt = np.linalg.svd(T)  # full_matrices=True: U is d_y x d_y, V is d_x x d_x
    return U, s, Vt.T


def minimum_from_factors(
    T: np.ndarray,
    orthogonal: Sequence[np.ndarray],
    diagonals: Sequence[Sequence[float]],
) -> Weights:
    """W_k = O_k D_k O_{k-1}^T with O_0 = V, O_m = U (SVD of T) and rectangular-diagonal D_k.

    ``orthogonal`` holds the hidden factors O_1..O_{m-1}; ``diagonals[k-1]`` the diagonal of D_k.
    The result is a global minimum iff prod_k D_k equals the diagonal of singular values of T.
    """
    U, _, V = _full_svd(T)
    factors = [V, *orthogonal, U]
    weights = []
    for k in range(1, len(diagonals) + 1):
        rows, cols = factors[k].shape[0], factors[k - 1].shape[0]
        D = rectangular_diagonal(diagonals[k - 1], rows, cols)
        weights.append(factors[k] @ D @ factors[k - 1].T)
    return weights


def canonical_flattest_minimum(T: np.ndarray, dims: Sequence[int]) -> Weights:
    """The canonical solution of eq. (27): W_m = U S^{1/m}, W_j = S^{1/m}, W_1 = S^{1/m} V^T."""
    _check_dims(T, dims)
    m = len(dims) - 1
    s = np.linalg.svd(T, compute_uv=False)
    roots = s ** (1.0 / m)
    hidden = [np.eye(d) for d in dims[1:-1]]
    return minimum_from_factors(T, hidden, [roots] * m)


def _check_dims(T: np.ndarray, dims: Sequence[int]) -> None:
    if T.shape != (dims[-1], dims[0]):
        raise ValueError(f"T has shape {T.shape}, expected {(dims[-1], dims[0])}")
    if not satisfies_capacity_assumption(dims):
        raise ValueError(f"layer sizes {tuple(dims)} violate assumption A1")


def apply_gauge(weights: Sequence[np.ndarray], gauges: Sequence[np.ndarray]) -> Weights:
    """W_k -> G_k^{-1} W_k G_{k-1} with G_0 = G_m = I; leaves W_m...W_1 unchanged.

    ``gauges`` holds invertible G_1..G_{m-1} (G_k is d_k x d_k). This is the move of (S104) and
    (S106).
    """
    m = len(weights)
    out = []
    for k in range(1, m + 1):
        W = weights[k - 1]
        if k >= 2:
            W = W @ gauges[k - 2]
        if k <= m - 1:
            W = np.linalg.solve(gauges[k - 1], W)
        out.append(W)
    return out


def add_null_space_components(
    weights: Sequence[np.ndarray], rng: np.random.Generator, scale: float = 1.0
) -> Weights:
    """W_k += X_k (I - Pi_k), Pi_k the projector on range(W_{k-1}...W_1): product unchanged.

    Only changes anything when a hidden layer is wider than the rank of the map feeding it, so
    that minima outside the gauge orbit of (S104) are sampled too (rectangular layers).
    """
    out = [weights[0].copy()]
    left = weights[0]
    for W in weights[1:]:
        basis, svals, _ = np.linalg.svd(left, full_matrices=False)
        basis = basis[:, svals > svals[0] * 1e-12]
        projector = np.eye(W.shape[1]) - basis @ basis.T
        noise = scale * rng.standard_normal(W.shape) / np.sqrt(W.shape[1])
        W = W + noise @ projector
        out.append(W)
        left = W @ left
    return out


def arbitrary_minimum(
    T: np.ndarray, dims: Sequence[int], rng: np.random.Generator, null_space_scale: float = 1.0
) -> Weights:
    """A random global minimum as in (S104): W_i = A_i^{-1} S^{1/m} A_{i-1}, A_i i.i.d. N(0, 1).

    For layers wider than rank(T), random null-space components are added
    (`add_null_space_components`), which keeps the product equal to T.
    """
    canonical = canonical_flattest_minimum(T, dims)
    gauges = [rng.standard_normal((d, d)) for d in dims[1:-1]]
    weights = apply_gauge(canonical, gauges)
    if null_space_scale > 0:
        weights = add_null_space_components(weights, rng, null_space_scale)
    return weights


def random_walk_start(T: np.ndarray, dims: Sequence[int], rng: np.random.Generator) -> Weights:
    """Initial minimum of the greedy walk, (S105).

    W_i = A_i (random) for i != j and W_j = (A_m...A_{j+1})^+ T (A_{j-1}...A_1)^+. The paper uses
    plain inverses (square layers); for rectangular layers we use pseudo-inverses and draw j among
    the layers for which they are exact inverses (A_m...A_{j+1} of full row rank d_y and
    A_{j-1}...A_1 of full column rank d_x); by A1 either j = 1 or j = m always qualifies.
    Entries are N(0, 1/d_{i-1}) rather than N(0, 1) so that products of ten layers stay O(1).
    """
    _check_dims(T, dims)
    m = len(dims) - 1
    d_x, d_y = dims[0], dims[-1]
    feasible = [
        j
        for j in range(1, m + 1)
        if all(dims[i] >= d_y for i in range(j, m)) and all(dims[i] >= d_x for i in range(1, j))
    ]
    j = int(rng.choice(feasible))
    weights = [
        rng.standard_normal((dims[i], dims[i - 1])) / np.sqrt(dims[i - 1]) for i in range(1, m + 1)
    ]
    left = end_to_end(weights[: j - 1]) if j > 1 else np.eye(d_x)
    right = end_to_end(weights[j:]) if j < m else np.eye(d_y)
    weights[j - 1] = np.linalg.pinv(right) @ T @ np.linalg.pinv(left)
    return restore_end_to_end(weights, T)  # pinv of ill-conditioned products leaves ~1e-10


def restore_end_to_end(weights: Sequence[np.ndarray], T: np.ndarray) -> Weights:
    """Undo rounding drift of W_m...W_1 away from T by a first-order fix of one layer.

    W_j <- W_j + P_j^+ (T - W_m...W_1) L_j^+ with P_j = W_m...W_{j+1}, L_j = W_{j-1}...W_1, for
    a layer j at which P_j has full row rank and L_j full column rank (then P_j P_j^+ = I and
    L_j^+ L_j = I, so the product becomes T up to rounding). Long walks multiply many gauge
    factors and their inverses, so the product drifts by ~1e-12 relative without this.
    """
    weights = [np.array(W, float) for W in weights]
    lefts, rights = partial_products(weights)
    d_x, d_y = T.shape[1], T.shape[0]
    candidates = [
        j
        for j in range(len(weights))
        if np.linalg.matrix_rank(rights[j]) == d_y and np.linalg.matrix_rank(lefts[j]) == d_x
    ]
    if not candidates:
        return weights
    # The best-conditioned choice keeps the fix small.
    j = min(candidates, key=lambda i: np.linalg.cond(rights[i]) * np.linalg.cond(lefts[i]))
    right_inverse, left_inverse = np.linalg.pinv(rights[j]), np.linalg.pinv(lefts[j])
    error = np.linalg.norm(T - end_to_end(weights))
    for _ in range(3):  # a few passes: one is exact only up to the conditioning of P_j, L_j
        fixed = list(weights)
        fixed[j] = weights[j] + right_inverse @ (T - end_to_end(weights)) @ left_inverse
        new_error = np.linalg.norm(T - end_to_end(fixed))
        if not new_error < error:
            break
        weights, error = fixed, new_error
    return weights


def theorem4_minimum(T: np.ndarray, dims: Sequence[int], rng: np.random.Generator) -> Weights:
    """A minimum with sigma_max(W_k) = sigma_max(T)^{1/m} for all k (hypothesis of Theorem 4).

    W_k = O_k D_k O_{k-1}^T with Haar-random hidden O_k (non-diagonal) and diagonals whose
    products are the singular values of T: the top entry is sigma_1^{1/m} in every layer, the
    others are split unevenly across layers but never exceed sigma_1^{1/m}; entries beyond
    rank(T) in wide hidden layers are random in [0, sigma_1^{1/m}].
    """
    _check_dims(T, dims)
    m = len(dims) - 1
    s = np.linalg.svd(T, compute_uv=False)
    rank = len(s)
    top_root = s[0] ** (1.0 / m)
    log_entries = np.zeros((m, rank))
    for q in range(rank):
        if s[q] <= 0:  # rank-deficient T: this direction is switched off in every layer
            log_entries[:, q] = -np.inf
            continue
        share = np.log(s[q]) / m
        slack = (np.log(s[0]) - np.log(s[q])) / m  # room below the cap log(sigma_1)/m
        z = rng.standard_normal(m)
        z -= z.mean()
        if m > 1 and slack > 0 and z.max() > 0:
            z *= slack * rng.uniform(0.2, 1.0) / z.max()
        else:
            z[:] = 0.0
        log_entries[:, q] = share + z
    diagonals = []
    for k in range(1, m + 1):
        size = min(dims[k], dims[k - 1])
        entries = np.empty(size)
        entries[:rank] = np.exp(log_entries[k - 1, : min(rank, size)])
        entries[rank:] = rng.uniform(0.0, top_root, size - rank)
        diagonals.append(entries)
    hidden = [random_orthogonal(d, rng) for d in dims[1:-1]]
    return minimum_from_factors(T, hidden, diagonals)


# --------------------------------------------------------------------------------------------
# Greedy random walk on the manifold of minima, App. IX.1 (S105)-(S106)
# --------------------------------------------------------------------------------------------


def _batched_reduced_hessian(batch: Sequence[np.ndarray], sigma_half: np.ndarray) -> np.ndarray:
    """2 Phi^T Phi (eq. 20) for a batch of networks, ``batch[k-1]`` of shape (K, d_k, d_{k-1})."""
    m = len(batch)
    count = batch[0].shape[0]
    d_x, d_y = batch[0].shape[2], batch[-1].shape[1]
    lefts = [np.broadcast_to(sigma_half, (count, d_x, d_x))]
    for k in range(1, m):
        lefts.append(batch[k - 1] @ lefts[-1])
    total = np.zeros((count, d_x, d_y, d_x, d_y))
    right = np.broadcast_to(np.eye(d_y), (count, d_y, d_y))
    for k in range(m, 0, -1):  # P_k = W_m...W_{k+1}, built from the output side
        gram_left = np.swapaxes(lefts[k - 1], 1, 2) @ lefts[k - 1]
        gram_right = right @ np.swapaxes(right, 1, 2)
        total += gram_left[:, :, None, :, None] * gram_right[:, None, :, None, :]
        if k > 1:
            right = right @ batch[k - 1]
    return 2.0 * total.reshape(count, d_x * d_y, d_x * d_y)


@dataclass
class RandomWalkResult:
    """Outcome of `greedy_random_walk`."""

    weights: Weights
    sharpness: float
    iterations: int
    accepted: int
    history: list[float] = field(default_factory=list)


def smoothed_sharpness(eigenvalues: np.ndarray, beta: float) -> np.ndarray:
    """(1/beta) log sum_i exp(beta lambda_i) over the last axis; beta = inf gives lambda_max.

    A smooth upper bound on lambda_max (exceeds it by at most log(n)/beta). Used by the walk
    because lambda_max itself is not differentiable where the top eigenvalue is repeated, and
    greedy moves then stall on such ridges.
    """
    top = eigenvalues[..., -1]
    if not np.isfinite(beta):
        return top
    return top + np.log(np.sum(np.exp(beta * (eigenvalues - top[..., None])), axis=-1)) / beta


def sharpness_gauge_gradient(
    weights: Sequence[np.ndarray], sigma_x: np.ndarray | None = None, beta: float = np.inf
) -> tuple[float, list[np.ndarray]]:
    """Smoothed sharpness and its gradient w.r.t. the gauge generators A_1..A_{m-1} of (S106).

    For the move W_k -> (I + eps A_k)^{-1} W_k (I + eps A_{k-1}) and a unit eigenvector b = vec(B)
    of Phi^T Phi, with M_k = P_k^T B Sigma^{1/2} L_k^T (the matrices of eq. (21)),
    d(b^T H_hat b)/dA_i = 4 (M_i M_i^T - M_{i+1}^T M_{i+1}). The gradient of the smoothed sharpness
    `smoothed_sharpness` is the softmax(beta lambda)-weighted sum of these over eigenvectors
    (beta = inf: the gradient of lambda_max where it is simple). It vanishes for lambda_max iff the
    terms of (21) are balanced: M_i M_i^T = M_{i+1}^T M_{i+1}.
    """
    dims = layer_dims(weights)
    evals, evecs = np.linalg.eigh(reduced_hessian(weights, sigma_x))
    if np.isfinite(beta):
        probs = np.exp(beta * (evals - evals[-1]))
        probs /= probs.sum()
    else:
        probs = np.zeros_like(evals)
        probs[-1] = 1.0
    lefts, rights = partial_products(weights)
    half = _sigma_half(sigma_x, dims[0])
    grads = [np.zeros((d, d)) for d in dims[1:-1]]
    for index in np.flatnonzero(probs > 1e-12):
        B = unvec(evecs[:, index], (dims[-1], dims[0]))
        M = [P.T @ B @ half @ L.T for L, P in zip(lefts, rights)]
        for i in range(len(weights) - 1):
            grads[i] += 4.0 * probs[index] * (M[i] @ M[i].T - M[i + 1].T @ M[i + 1])
    return float(smoothed_sharpness(evals, beta)), grads


def greedy_random_walk(
    weights: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    sigma_x: np.ndarray | None = None,
    proposals: str = "gradient",
    target: float | None = None,
    rtol: float = 1e-9,
    max_iterations: int = 20000,
    candidates: int = 8,
    step: float = 0.05,
    max_step: float = 0.5,
    min_step: float = 1e-9,
    grow: float = 1.5,
    shrink: float = 0.5,
    smoothing: Sequence[float] = (30.0, 300.0, 3e3, 3e4, 3e5, 3e6),
    stall_window: int = 20,
) -> RandomWalkResult:
    """Greedy random walk over the manifold of minima that lowers lambda_max(H_w), App. IX.1.

    Every iteration draws d_i x d_i direction matrices A_i and moves (S106)
    W_m <- W_m (I + eps A_{m-1}), W_i <- (I + eps A_i)^{-1} W_i (I + eps A_{i-1}),
    W_1 <- (I + eps A_1)^{-1} W_1, which keeps W_m...W_1 = T exactly. A move is kept only if the
    objective decreases, otherwise new directions are drawn (the paper's greedy rule).

    ``proposals="random"`` is the paper's walk: A_i with i.i.d. N(0, 1) entries (scaled by
    1/sqrt(d_i) so that eps is a relative step), objective lambda_max itself. It is slow for deep
    nets: lambda_max is not smooth where the top eigenvalue is repeated and greedy random moves
    stall on those ridges. ``proposals="gradient"`` (default) proposes the descent direction
    A_i = -grad (`sharpness_gauge_gradient`) plus random moves around it, and runs the greedy rule
    on the smoothed sharpness with beta = kappa / lambda for each kappa in ``smoothing`` (a
    continuation: the next kappa starts once a phase improves by less than 1% of its
    resolution lambda / kappa over ``stall_window`` iterations), then on lambda_max.

    ``candidates`` moves are evaluated at once (vectorized; the best is kept); eps grows by
    ``grow`` after a success and shrinks by ``shrink`` after a failure. Stops when lambda_max is
    within ``rtol`` of ``target`` (e.g. the bound (17)), when eps < ``min_step`` in the last
    phase, or after ``max_iterations``.
    """
    if proposals not in ("gradient", "random"):
        raise ValueError(f"unknown proposals {proposals!r}")
    weights = [np.array(W, float) for W in weights]
    m = len(weights)
    dims = layer_dims(weights)
    sigma_half = _sigma_half(sigma_x, dims[0])
    sharpness = top_hessian_eigenvalue_at_minimum(weights, sigma_x)
    history = [sharpness]
    iterations = accepted = 0
    half = max(1, candidates // 2)
    kappas = [*smoothing, np.inf] if proposals == "gradient" else [np.inf]
    initial_step = step

    def reached() -> bool:
        return target is not None and sharpness <= target * (1 + rtol)

    for phase, kappa in enumerate(kappas):
        last_phase = phase == len(kappas) - 1
        beta = kappa / sharpness
        objective = float(
            smoothed_sharpness(np.linalg.eigvalsh(reduced_hessian(weights, sigma_x)), beta)
        )
        step = max(step, initial_step)
        stop_step = min_step if last_phase else 1e-6
        checkpoint, phase_start = objective, iterations
        while m > 1 and iterations < max_iterations and step >= stop_step and not reached():
            iterations += 1
            if not last_phase and (iterations - phase_start) % stall_window == 0:
                # Leave a smoothed phase once it stalls at its own resolution (~1/kappa).
                if checkpoint - objective < 0.01 * objective / kappa:
                    break
                checkpoint = objective
            gauges, inverses = [], []
            if proposals == "gradient":
                _, grads = sharpness_gauge_gradient(weights, sigma_x, beta)
                scale = np.sqrt(sum(np.sum(g**2) for g in grads) / (m - 1))
            for i, d in enumerate(dims[1:-1]):
                directions = rng.standard_normal((half, d, d)) / np.sqrt(d)
                directions = np.concatenate([directions, -directions])
                if proposals == "gradient" and scale > 0:
                    descent = -grads[i] / scale
                    # One pure descent move; the others are random moves around it.
                    directions = np.concatenate([descent[None], descent[None] + 0.3 * directions])
                g = np.eye(d) + step * directions
                gauges.append(g)
                inverses.append(np.linalg.inv(g))
            batch = []
            for k in range(1, m + 1):
                W = np.broadcast_to(weights[k - 1], (len(gauges[0]), *weights[k - 1].shape))
                if k >= 2:
                    W = W @ gauges[k - 2]
                if k <= m - 1:
                    W = inverses[k - 1] @ W
                batch.append(W)
            spectra = np.linalg.eigvalsh(_batched_reduced_hessian(batch, sigma_half))
            values = smoothed_sharpness(spectra, beta)
            best = int(np.argmin(values))
            if values[best] < objective:
                weights = [W[best].copy() for W in batch]
                objective = float(values[best])
                sharpness = float(spectra[best, -1])
                accepted += 1
                step = min(step * grow, max_step)
            else:
                step *= shrink
            history.append(sharpness)
        if reached() or iterations >= max_iterations:
            break
    # Recompute from scratch so the reported value is not a batched-arithmetic artefact.
    sharpness = top_hessian_eigenvalue_at_minimum(weights, sigma_x)
    return RandomWalkResult(weights, sharpness, iterations, accepted, history)


def refine_flattest_minimum(
    weights: Sequence[np.ndarray],
    *,
    sigma_x: np.ndarray | None = None,
    target: float | None = None,
    rtol: float = 1e-12,
    smoothing: Sequence[float] = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8),
    charts_per_stage: int = 4,
    max_iterations: int = 400,
) -> RandomWalkResult:
    """Quasi-Newton continuation of the walk: minimize lambda_max over the same gauge moves.

    In a chart around the current minimum, W_k(A) = (I + A_k)^{-1} W_k (I + A_{k-1}) (the move of
    (S106) with a free step A_k), and L-BFGS-B (|entries of A_k| <= 0.3, so I + A_k stays
    invertible) minimizes the smoothed sharpness with beta = kappa / lambda for each kappa in
    ``smoothing``, then lambda_max itself. The chart is re-centred after every solve. Every
    point visited is a minimum with W_m...W_1 = T, and a solve never returns a worse point (its
    line search only accepts decreases), so this is the greedy walk with quasi-Newton steps. It
    removes the slow tail of the random walk on the ridges where the top eigenvalue is repeated.
    """
    weights = [np.array(W, float) for W in weights]
    dims = layer_dims(weights)
    hidden = dims[1:-1]
    sharpness = top_hessian_eigenvalue_at_minimum(weights, sigma_x)
    history, iterations, accepted = [sharpness], 0, 0
    if not hidden:
        return RandomWalkResult(weights, sharpness, 0, 0, history)

    def gauges(a: np.ndarray) -> list[np.ndarray]:
        out, start = [], 0
        for d in hidden:
            out.append(np.eye(d) + a[start : start + d * d].reshape(d, d))
            start += d * d
        return out

    for kappa in [*smoothing, np.inf]:
        for _ in range(charts_per_stage):
            if target is not None and sharpness <= target * (1 + rtol):
                break
            base, beta = weights, kappa / sharpness

            def objective(a: np.ndarray, base=base, beta=beta) -> tuple[float, np.ndarray]:
                G = gauges(a)
                try:
                    moved = apply_gauge(base, G)
                except np.linalg.LinAlgError:
                    return 1e300, np.zeros_like(a)
                value, grads = sharpness_gauge_gradient(moved, sigma_x, beta)
                # d/dG_i = G_i^{-T} (d/dA_i at the moved point): the move G_i (I + dA) = G_i + dG.
                grad = np.concatenate([np.linalg.solve(g.T, h).ravel() for g, h in zip(G, grads)])
                return (value, grad) if np.isfinite(value) else (1e300, np.zeros_like(a))

            size = sum(d * d for d in hidden)
            start_value = objective(np.zeros(size))[0]
            result = scipy.optimize.minimize(
                objective,
                np.zeros(size),
                jac=True,
                method="L-BFGS-B",
                bounds=[(-0.3, 0.3)] * size,
                options={"maxiter": max_iterations, "ftol": 1e-16, "gtol": 1e-15, "maxcor": 30},
            )
            iterations += int(result.nit)
            if not result.fun < start_value:
                break
            weights = apply_gauge(base, gauges(result.x))
            sharpness = top_hessian_eigenvalue_at_minimum(weights, sigma_x)
            accepted += 1
            history.append(sharpness)
            if start_value - result.fun < 1e-3 * start_value / kappa:
                break  # converged at this stage's resolution
    return RandomWalkResult(weights, sharpness, iterations, accepted, history)


def find_flattest_minimum(
    weights: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    T: np.ndarray | None = None,
    sigma_x: np.ndarray | None = None,
    target: float | None = None,
    walk_iterations: int = 600,
    rtol: float = 1e-10,
) -> tuple[RandomWalkResult, RandomWalkResult]:
    """Greedy random walk (S106) from ``weights``, then `refine_flattest_minimum`.

    Returns (walk result, refined result); for white data pass ``target`` = the bound (17) to
    stop as soon as it is reached. The refined point's product is reset to ``T`` (default: the
    product of ``weights``) by `restore_end_to_end`.
    """
    T = end_to_end(weights) if T is None else T
    walk = greedy_random_walk(
        weights, rng, sigma_x=sigma_x, target=target, rtol=rtol, max_iterations=walk_iterations
    )
    refined = refine_flattest_minimum(walk.weights, sigma_x=sigma_x, target=target, rtol=rtol)
    refined.weights = restore_end_to_end(refined.weights, T)
    refined.sharpness = top_hessian_eigenvalue_at_minimum(refined.weights, sigma_x)
    return walk, refined


# --------------------------------------------------------------------------------------------
# Gains (Theorem 2) and layer coupling (Theorem 3)
# --------------------------------------------------------------------------------------------


@dataclass
class GainProfile:
    """Intermediate gains of a network implementing T (Theorem 2, Fig. 3), k = 1..m."""

    singular_values: list[np.ndarray]  # singular values of W_k...W_1
    gain_of_v: np.ndarray  # ||W_k...W_1 v||
    predicted_gain_of_v: np.ndarray  # sigma_max(T)^{k/m}, Thm 2(i)
    bound: np.ndarray  # sqrt(m) sigma_max(T)^{k/m}, Thm 2(ii)


def gain_profile(weights: Sequence[np.ndarray], T: np.ndarray) -> GainProfile:
    """Singular values of every partial product W_k...W_1, the gain of v, and Thm 2's bound."""
    sigma_max, _, v = top_singular_triplet(T)
    m = len(weights)
    product = np.eye(weights[0].shape[1])
    singular_values, gains = [], []
    for W in weights:
        product = W @ product
        singular_values.append(np.linalg.svd(product, compute_uv=False))
        gains.append(np.linalg.norm(product @ v))
    k = np.arange(1, m + 1)
    predicted = sigma_max ** (k / m)
    return GainProfile(singular_values, np.array(gains), predicted, np.sqrt(m) * predicted)


def _misalignment(a: np.ndarray, b: np.ndarray) -> float:
    """1 - |cos angle(a, b)|: 0 iff the vectors are parallel (up to sign)."""
    return float(1.0 - abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def theorem2_deviations(weights: Sequence[np.ndarray], T: np.ndarray) -> dict[str, float]:
    """Worst deviation (over k) from each part of Theorem 2; all are 0 at a flattest minimum.

    - ``i_alignment``: 1 - |cos(v, M_k^T M_k v)|, M_k = W_k...W_1 (v is a right singular vector).
    - ``i_singular_value``: | ||M_k v|| - s^{k/m} | / s^{k/m}, s = sigma_max(T).
    - ``ii_excess``: max(0, sigma_max(M_k) / (sqrt(m) s^{k/m}) - 1).
    - ``iii_alignment``: 1 - |cos(u, R_k R_k^T u)|, R_k = W_m...W_{k+1}.
    - ``iii_singular_value``: | ||R_k^T u|| - s^{1-k/m} | / s^{1-k/m}.
    - ``iv_excess``: max(0, sigma_max(R_k) / (sqrt(m) s^{1-k/m}) - 1).
    """
    s, u, v = top_singular_triplet(T)
    m = len(weights)
    lefts, rights = partial_products(weights)
    out = dict.fromkeys(
        [
            "i_alignment",
            "i_singular_value",
            "ii_excess",
            "iii_alignment",
            "iii_singular_value",
            "iv_excess",
        ],
        0.0,
    )
    for k in range(1, m + 1):
        M = weights[k - 1] @ lefts[k - 1]  # W_k...W_1
        R = rights[k - 1]  # W_m...W_{k+1}
        gain, gain_right = s ** (k / m), s ** (1 - k / m)
        Mv, Ru = M @ v, R.T @ u
        out["i_alignment"] = max(out["i_alignment"], _misalignment(v, M.T @ Mv))
        out["i_singular_value"] = max(
            out["i_singular_value"], abs(np.linalg.norm(Mv) - gain) / gain
        )
        out["ii_excess"] = max(out["ii_excess"], np.linalg.norm(M, 2) / (np.sqrt(m) * gain) - 1)
        out["iii_alignment"] = max(out["iii_alignment"], _misalignment(u, R @ Ru))
        out["iii_singular_value"] = max(
            out["iii_singular_value"], abs(np.linalg.norm(Ru) - gain_right) / gain_right
        )
        out["iv_excess"] = max(
            out["iv_excess"], np.linalg.norm(R, 2) / (np.sqrt(m) * gain_right) - 1
        )
    return out


def coupling_vectors(
    weights: Sequence[np.ndarray], T: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """r_k = W_{k-1}...W_1 v and q_k = (W_m...W_{k+1})^T u, k = 1..m (Theorem 3)."""
    _, u, v = top_singular_triplet(T)
    lefts, rights = partial_products(weights)
    return [L @ v for L in lefts], [P.T @ u for P in rights]


def theorem3_deviations(weights: Sequence[np.ndarray], T: np.ndarray) -> dict[str, float]:
    """Worst deviation (over k) from Theorem 3; all are 0 at a flattest minimum.

    - ``i_singular_pair``: max(||W_k r_k - c q_k||, ||W_k^T q_k - c r_k||) / c with unit r_k, q_k
      and c = sigma_max(T)^{1/m} (relative error of the singular-pair equations).
    - ``ii_coupling``: 1 - cos(r_{k+1}, q_k) (signed: the vectors must be equal, not opposite).
    - ``norms``: relative error of ||r_k|| = s^{(k-1)/m} and ||q_k|| = s^{1-k/m} (Remark).
    """
    s, _, _ = top_singular_triplet(T)
    m = len(weights)
    r, q = coupling_vectors(weights, T)
    c = s ** (1.0 / m)
    out = {"i_singular_pair": 0.0, "ii_coupling": 0.0, "norms": 0.0}
    for k in range(1, m + 1):
        W = weights[k - 1]
        r_norm, q_norm = np.linalg.norm(r[k - 1]), np.linalg.norm(q[k - 1])
        rb, qb = r[k - 1] / r_norm, q[k - 1] / q_norm
        pair = max(np.linalg.norm(W @ rb - c * qb), np.linalg.norm(W.T @ qb - c * rb)) / c
        out["i_singular_pair"] = max(out["i_singular_pair"], float(pair))
        norms = max(
            abs(r_norm - s ** ((k - 1) / m)) / s ** ((k - 1) / m),
            abs(q_norm - s ** (1 - k / m)) / s ** (1 - k / m),
        )
        out["norms"] = max(out["norms"], float(norms))
        if k < m:
            nxt = r[k] / np.linalg.norm(r[k])
            out["ii_coupling"] = max(out["ii_coupling"], float(1.0 - nxt @ qb))
    return out


# --------------------------------------------------------------------------------------------
# Lower bound nu(B), eq. (21)-(26), and Lemma 4
# --------------------------------------------------------------------------------------------


def nu(B: np.ndarray, T: np.ndarray, depth: int, sigma_x: np.ndarray | None = None) -> float:
    """nu(B) = 2m ||(B Sigma^{1/2} T^T)^{m-1} B Sigma^{1/2}||_2^{2/m}, eq. (25), for ||B||_F = 1.

    ``B`` is normalized here, so any nonzero d_y x d_x matrix may be passed.
    """
    B = B / np.linalg.norm(B)
    Bh = B @ _sigma_half(sigma_x, T.shape[1])
    M = np.linalg.matrix_power(Bh @ T.T, depth - 1) @ Bh
    return float(2 * depth * np.linalg.norm(M, 2) ** (2.0 / depth))


def sharpness_objective_21(
    weights: Sequence[np.ndarray], B: np.ndarray, sigma_x: np.ndarray | None = None
) -> float:
    """2 sum_k ||P_k^T B Sigma^{1/2} L_k^T||_F^2 for ||B||_F = 1, eq. (21) (its max is lambda_max)."""
    B = B / np.linalg.norm(B)
    lefts, rights = partial_products(weights)
    half = _sigma_half(sigma_x, weights[0].shape[1])
    return float(2 * sum(np.sum((P.T @ B @ half @ L.T) ** 2) for L, P in zip(lefts, rights)))


def maximize_nu(
    T: np.ndarray,
    depth: int,
    rng: np.random.Generator,
    sigma_x: np.ndarray | None = None,
    restarts: int = 6,
    initial: Sequence[np.ndarray] = (),
) -> tuple[float, np.ndarray]:
    """Numerically maximize nu(B) over ||B||_F = 1 (eq. 25): L-BFGS on log nu with restarts.

    Starting points: ``initial`` (e.g. the top eigvector of Phi^T Phi at a flat minimum), u v^T
    of T and of T Sigma^{1/2}, and ``restarts`` random Gaussian matrices. The gradient of the
    spectral norm is taken from its top singular pair (torch autograd is not needed). Returns
    the best value found, a lower bound on the true maximum.
    """
    d_y, d_x = T.shape
    half = _sigma_half(sigma_x, d_x)

    def negative_log_nu(b: np.ndarray) -> tuple[float, np.ndarray]:
        norm_b = np.linalg.norm(b)
        B = unvec(b, (d_y, d_x)) / norm_b
        Bh = B @ half
        C = Bh @ T.T
        powers = [np.eye(d_y)]
        for _ in range(depth - 1):
            powers.append(powers[-1] @ C)
        M = powers[-1] @ Bh
        U, s, Vt = np.linalg.svd(M)
        top, a, c = s[0], U[:, 0], Vt[0]
        # d||M||_2 = a^T dM c ; M = C^{m-1} B Sigma^{1/2}, C = B Sigma^{1/2} T^T.
        G = np.outer(a, c)  # d top / d M
        grad_Bh = powers[-1].T @ G  # through the last factor
        for j in range(depth - 1):  # M = C^j C C^{m-2-j} Bh
            left, right = powers[j], powers[depth - 2 - j] @ Bh
            grad_C = left.T @ G @ right.T
            grad_Bh += grad_C @ T
        grad_B = grad_Bh @ half.T
        # Objective -(2/m) log top(B/||B||); project the gradient for the normalization.
        grad_unit = -(2.0 / depth) * grad_B / top
        grad_b = vec(grad_unit)
        unit = vec(B)
        grad_b = (grad_b - (grad_b @ unit) * unit) / norm_b
        return float(-(2.0 / depth) * np.log(top)), grad_b

    starts = [np.asarray(B, float) for B in initial]
    for matrix in (T, T @ half):
        _, u, v = top_singular_triplet(matrix)
        starts.append(np.outer(u, v))
    starts += [rng.standard_normal((d_y, d_x)) for _ in range(restarts)]
    best_value, best_B = -np.inf, starts[0]
    for start in starts:
        result = scipy.optimize.minimize(
            negative_log_nu,
            vec(start) / np.linalg.norm(start),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12},
        )
        B = unvec(result.x, (d_y, d_x))
        value = nu(B, T, depth, sigma_x)
        if value > best_value:
            best_value, best_B = value, B / np.linalg.norm(B)
    return best_value, best_B


def lemma4_gap(matrices: Sequence[np.ndarray]) -> float:
    """sum_k ||Psi_k||_F^2 - m ||Psi_m...Psi_1||_2^{2/m} >= 0, Lemma 4 eq. (22)."""
    m = len(matrices)
    lhs = sum(np.sum(P**2) for P in matrices)
    return float(lhs - m * np.linalg.norm(end_to_end(matrices), 2) ** (2.0 / m))
