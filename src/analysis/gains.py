"""Intermediate gains of a network, the quantities of Theorem 2 and Figs 3 and 6.

Linear networks (exact): the gain of input x up to layer k is ||W_k ... W_1 x|| / ||x||, so the
maximal gain is sigma_max(W_k ... W_1), and the "red circle" of Fig. 3 is the gain of v, the
top right singular vector of T = W_m ... W_1. Theorem 2: at a flattest minimum v is a right
singular vector of every partial product with singular value sigma_max(T)^(k/m) (i), and
sigma_max(W_k ... W_1) <= sqrt(m) sigma_max(T)^(k/m) (ii).

ReLU networks (estimated, Sec. 6 / Fig. 6): the maximal gain max_x ||h_k(x)|| / ||x|| is found by
optimizing the input from R random starts, all layers and restarts in one batch, keeping the
best; the red circles are the per-layer gains of the input that reached the largest end-to-end
gain.

Choice of the input sphere: with non-zero biases ||h_k(x)|| / ||x|| is unbounded as x -> 0, so
the search is over the sphere ||x|| = input_norm (pass the mean norm of the training inputs; it
is ~36 for MNIST with noise std 1.25). For bias-free ReLU or linear nets h_k is positively
homogeneous and the gain does not depend on input_norm; then it may be left out.

Optimizer: Riemannian gradient ascent on the sphere for J(u) = log ||h_k(input_norm * u)||,
u <- normalize(u + lr_t * (grad J - <grad J, u> u)), with lr_t decayed from lr (default 1) to
0.02 lr on a cosine schedule. For a linear map h = P x a step of 1 is exactly
u <- normalize(P^T P u), the power method on P^T P, so on linear nets the estimate converges to
sigma_max at (nearly) the power method's rate; on a ReLU net it is the power step of the current
linear region. Each restart keeps the best value it visited. On a 6-layer biased ReLU net this
found larger maxima than constant steps, a monotone (step-rejecting) ascent, or Adam.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from src.analysis.landscape import eval_mode, resolve_device

LayerOutputs = Callable[[torch.Tensor], list[torch.Tensor]]


def linear_gain_profile(weights: list[torch.Tensor]) -> dict:
    """Exact gains of the linear network x -> W_m ... W_1 x (biases ignored), float64.

    Returns (lists indexed by layer k = 1..m):
        singular_values: all singular values of W_k ... W_1, descending (blue dots of Fig. 3).
        max_gain: sigma_max(W_k ... W_1).
        top_input_gains: ||W_k ... W_1 v||, v the top right singular vector of T (red circles).
        theorem2_top_input: sigma_max(T)^(k/m), Thm 2(i) at a flattest minimum.
        theorem2_bound: sqrt(m) sigma_max(T)^(k/m), the bound of Thm 2(ii).
    """
    if not weights:
        raise ValueError("need at least one weight matrix")
    mats = [torch.as_tensor(w).detach().to("cpu", torch.float64) for w in weights]
    depth = len(mats)
    partials = []
    product = mats[0]
    partials.append(product)
    for w in mats[1:]:
        product = w @ product
        partials.append(product)
    singular_values = [torch.linalg.svdvals(p) for p in partials]
    _, _, vh = torch.linalg.svd(partials[-1], full_matrices=False)
    top_input = vh[0]
    sigma_t = float(singular_values[-1][0])
    ks = np.arange(1, depth + 1)
    return {
        "depth": depth,
        "singular_values": [s.tolist() for s in singular_values],
        "max_gain": [float(s[0]) for s in singular_values],
        "top_input_gains": [float((p @ top_input).norm()) for p in partials],
        "theorem2_top_input": (sigma_t ** (ks / depth)).tolist(),
        "theorem2_bound": (np.sqrt(depth) * sigma_t ** (ks / depth)).tolist(),
    }


@dataclass
class GainProfile:
    """Estimated gains of a (nonlinear) network; lists are indexed by layer k = 1..m."""

    max_gain: list[float]  # best ||h_k(x)|| / ||x|| over every input evaluated (blue dots, Fig. 6)
    maximal_input_gains: list[float]  # gains of the input with maximal end-to-end gain (red)
    restart_gains: np.ndarray  # (m, R): each restart's best gain, sorted descending per layer
    history_steps: list[int]  # steps at which the running best was recorded
    history: np.ndarray  # (m, len(history_steps)): best gain over restarts so far
    input_norm: float
    restarts: int
    steps: int
    lr: float
    maximal_input: torch.Tensor = field(repr=False)  # the input behind maximal_input_gains

    def spread(self, rtol: float = 1e-3) -> dict:
        """How well the restarts agree, per layer: a converged search has several restarts at
        the maximum and a flat history over the last steps."""
        best = self.restart_gains[:, :1]
        halfway = self.history[:, len(self.history_steps) // 2]
        final = self.history[:, -1]
        return {
            "top5": self.restart_gains[:, :5].tolist(),
            "median": np.median(self.restart_gains, axis=1).tolist(),
            "std": self.restart_gains.std(axis=1).tolist(),
            "fraction_within_rtol": (self.restart_gains >= best * (1 - rtol)).mean(1).tolist(),
            "rtol": rtol,
            # relative improvement of the best over the second half of the steps
            "late_improvement": ((final - halfway) / final).tolist(),
        }

    def to_dict(self) -> dict:
        return {
            "max_gain": list(self.max_gain),
            "maximal_input_gains": list(self.maximal_input_gains),
            "spread": self.spread(),
            "history_steps": list(self.history_steps),
            "history": self.history.tolist(),
            "input_norm": self.input_norm,
            "restarts": self.restarts,
            "steps": self.steps,
            "lr": self.lr,
        }


def _is_positively_homogeneous(layer_outputs: LayerOutputs, input_dim: int, like) -> bool:
    """True when every h_k(0) = 0 (e.g. no biases), so gains do not depend on ||x||."""
    with torch.no_grad():
        outs = layer_outputs(torch.zeros(1, input_dim, dtype=like.dtype, device=like.device))
    return all(bool((h == 0).all()) for h in outs)


def gain_profile(
    model: nn.Module | LayerOutputs,
    *,
    input_dim: int,
    restarts: int = 100,
    steps: int = 300,
    input_norm: float | None = None,
    lr: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    history_points: int = 9,
) -> GainProfile:
    """Estimate max_x ||h_k(x)|| / ||x|| on the sphere ||x|| = input_norm for every layer k.

    Args:
        model: a module with `layer_outputs(x) -> [h_1, ..., h_m]` (like `src.domain.models.MLP`), or
            such a callable itself. Run in eval mode; its parameters are not changed (their
            requires_grad flags are left alone; only the input is differentiated).
        input_dim: d_0.
        restarts: random starts per layer (the paper used 100); all layers and restarts run
            as one batch of m * restarts inputs.
        steps: ascent steps. On 784-wide linear nets whose top two singular values are within
            1-2%, 300 steps matched sigma_max to 3e-7 relative; on ReLU nets the search is
            non-convex, so check `spread()` (late_improvement, agreement of the top restarts).
        input_norm: radius of the input sphere (see module docstring); required for networks
            with non-zero biases, default 1 for positively homogeneous ones.
        lr: initial Riemannian step size, cosine-decayed to 0.02 lr; a step of 1 is the power
            method on a linear region.
        seed: seeds the random starts (Gaussian directions).
        dtype, device: of the search (default: the model's); a module is copied and cast if
            they differ from its own. For a plain callable they must match what it expects.
        history_points: how many checkpoints of the running best to keep.
    """
    if isinstance(model, nn.Module):
        reference = next(model.parameters())
        dtype = reference.dtype if dtype is None else dtype
        device = resolve_device(device, reference.device)
        module = model
        if (dtype, device) != (reference.dtype, reference.device):
            module = copy.deepcopy(model).to(device=device, dtype=dtype)  # caller's untouched
        layer_outputs = module.layer_outputs
    else:
        module = None
        layer_outputs = model
        dtype = torch.get_default_dtype() if dtype is None else dtype
        device = torch.device("cpu") if device is None else torch.device(device)
    like = torch.empty(0, dtype=dtype, device=device)

    def run() -> GainProfile:
        if input_norm is None:
            if not _is_positively_homogeneous(layer_outputs, input_dim, like):
                raise ValueError(
                    "the network has non-zero outputs at x = 0 (biases), so its gain depends "
                    "on ||x||: pass input_norm (e.g. the mean norm of the training inputs)"
                )
            radius = 1.0
        else:
            radius = float(input_norm)
        return _ascend(layer_outputs, input_dim, restarts, steps, radius, lr, seed, like,
                       history_points)  # fmt: skip

    if module is None:
        return run()
    with eval_mode(module):
        return run()


def _ascend(layer_outputs, input_dim, restarts, steps, radius, lr, seed, like, history_points):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        depth = len(layer_outputs(torch.zeros(1, input_dim, dtype=like.dtype, device=like.device)))
    # Block k of the batch (rows k*R .. (k+1)*R - 1) searches the maximal gain up to layer k.
    directions = torch.randn(depth * restarts, input_dim, generator=generator, dtype=torch.float64)
    directions = directions.to(dtype=like.dtype, device=like.device)
    directions = directions / directions.norm(dim=1, keepdim=True)
    rows = torch.arange(depth * restarts, device=like.device)
    block_of_row = rows // restarts
    tiny = torch.finfo(like.dtype).tiny

    def log_gain_and_tangent(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = u.detach().requires_grad_(True)
        outs = layer_outputs(radius * u)
        all_norms = torch.stack([h.flatten(1).norm(dim=1) for h in outs])  # (depth, rows)
        all_log_gains = torch.log(all_norms.clamp_min(tiny)) - np.log(radius)
        # block k's objective: the gain up to layer k of its own rows
        log_gain = all_log_gains[block_of_row, rows]
        (gradient,) = torch.autograd.grad(log_gain.sum(), u)
        tangent = gradient - (gradient * u).sum(dim=1, keepdim=True) * u.detach()
        return log_gain.detach(), tangent, all_log_gains.detach()

    best = torch.full((depth * restarts,), -float("inf"), dtype=like.dtype, device=like.device)
    # Every input evaluated is a candidate for every layer (on ReLU nets the search for layer k
    # can stall below the gain another block's input reaches at layer k).
    best_any_input = torch.full((depth,), -float("inf"), dtype=like.dtype, device=like.device)
    best_end_to_end_inputs = directions[(depth - 1) * restarts :]
    checkpoints = sorted({int(round(s)) for s in np.linspace(0, steps, history_points)})
    history = []
    for step in range(steps + 1):
        log_gain, tangent, all_log_gains = log_gain_and_tangent(directions)
        improved = log_gain > best  # each restart keeps its best point; no host sync
        best = torch.where(improved, log_gain, best)
        best_any_input = torch.maximum(best_any_input, all_log_gains.amax(dim=1))
        best_end_to_end_inputs = torch.where(
            improved[(depth - 1) * restarts :, None],
            directions[(depth - 1) * restarts :],
            best_end_to_end_inputs,
        )
        if step in checkpoints:
            history.append(
                torch.maximum(best.view(depth, restarts).amax(dim=1), best_any_input).exp()
            )
        if step == steps:
            break
        # Cosine-decayed step from lr to 0.02 lr: early steps of ~1 (the power step on a linear
        # region) hop between ReLU regions and find better maxima than a monotone ascent, which
        # stalls at region boundaries; the late small steps settle on the ridge (a subgradient
        # method needs diminishing steps to converge on such kinks).
        scale = lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * step / steps)))
        stepped = directions + scale * tangent
        directions = stepped / stepped.norm(dim=1, keepdim=True)

    best = best.exp()
    restart_gains = best.view(depth, restarts)
    winner = int(restart_gains[-1].argmax())
    maximal_input = radius * best_end_to_end_inputs[winner : winner + 1]
    with torch.no_grad():
        maximal_input_gains = [
            float(h.flatten(1).norm(dim=1)[0] / radius) for h in layer_outputs(maximal_input)
        ]
    restart_gains = np.sort(restart_gains.double().cpu().numpy(), axis=1)[:, ::-1].copy()
    max_gain = np.maximum(restart_gains[:, 0], best_any_input.exp().double().cpu().numpy())
    return GainProfile(
        max_gain=max_gain.tolist(),
        maximal_input_gains=maximal_input_gains,
        restart_gains=restart_gains,
        history_steps=checkpoints,
        history=torch.stack(history, dim=1).double().cpu().numpy(),
        input_norm=radius,
        restarts=restarts,
        steps=steps,
        lr=lr,
        maximal_input=maximal_input[0].detach().cpu(),
    )


def gains_at_input_norms(
    model: nn.Module,
    *,
    input_dim: int,
    input_norms: Sequence[float],
    restarts: int,
    steps: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The gain search (`gain_profile`) repeated on several input spheres: with biases the
    gain depends on the radius the search is run at, so a comparison of nets that holds at one
    radius should be checked at others. One {input_norm, max_gain, maximal_input_gains} each."""
    out = []
    for norm in input_norms:
        profile = gain_profile(
            model, input_dim=input_dim, restarts=restarts, steps=steps, input_norm=norm, seed=seed
        )
        out.append(
            {
                "input_norm": float(norm),
                "max_gain": list(profile.max_gain),
                "maximal_input_gains": list(profile.maximal_input_gains),
            }
        )
    return out


def training_input_gains(model: nn.Module, inputs: torch.Tensor, chunk: int = 4096) -> dict:
    """Radius-free gains: per layer k, the largest and the median ||h_k(x)|| / ||x|| over the
    given inputs (e.g. the training inputs themselves). The gain search maximizes over a sphere
    whose radius must be chosen (biased nets have no scale-free gain); this one needs no
    radius, and shows how a net amplifies the signals it was trained on."""
    ratios = []
    with torch.no_grad():
        for start in range(0, len(inputs), chunk):
            x = inputs[start : start + chunk]
            norms = x.norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
            outs = model.layer_outputs(x)
            ratios.append(torch.stack([h.flatten(1).norm(dim=1) / norms for h in outs]))
    per_layer = torch.cat(ratios, dim=1).double()
    return {
        "max_gain": per_layer.amax(dim=1).tolist(),
        "median_gain": per_layer.median(dim=1).values.tolist(),
    }
