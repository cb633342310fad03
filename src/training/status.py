"""A run's status: the stopping rule applied during training, and the one function that decides
the final status after `fit`.

During training, `StoppingRule` reads each epoch's training loss and says when to stop: when the
loss has stopped decreasing (a window rule that does not fire on slow progress, confirmed by a
small full-batch gradient), or when it diverges. After training, `decide_status` combines what it
found with the measurements at the final weights (the loss against the affine denoiser of the
same training set, the Hessian solve, linear stability) into the final status and a
machine-readable reason. Nothing else sets a run's status.

A run is `converged` (it reached a minimum) only when all three hold:
  (a) stationary: the loss stopped decreasing and the gradient is small (`StoppingRule`);
  (b) below the affine denoiser: a net that cannot beat the best affine map of its own training
      set (closed-form least squares, src.domain.data.affine_baseline_loss) sits on a plateau between
      the trivial and the linear solution, not at a minimum worth comparing with the paper's;
  (c) linearly stable with a margin: r = lr x lambda_max / (2 (1 + beta)) <= 1 - STABILITY_BAND
      (App. I, eq. S4), for SGD with the analysis on.
A run that meets (a) and (b) with |r - 1| <= STABILITY_BAND is `edge_of_stability`; with
r > 1 + STABILITY_BAND (stationary or not) it is `unstable`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from src.core.status import (
    BUDGET_EXHAUSTED,
    CONVERGED,
    DIVERGED,
    EDGE_OF_STABILITY,
    PLATEAU,
    UNSTABLE,
    UNVERIFIED,
)

# The band around the stability limit (issue 23), fixed before any run was judged by it: SGD
# at a fixed step ends at the edge of stability (r = lr x lambda_max / limit near 1), and the
# same seeds' lambda_max moved by 6-7% between two builds that differed only in float rounding
# (SGD 3.45 -> 3.67, Adam 3.81 -> 4.07). A band of 10% covers that spread with a margin, so a
# run's status does not flip between converged and unstable when only rounding changes.
STABILITY_BAND = 0.10


@dataclass
class StoppingRule:
    """Decides from the epoch training losses when a run stops.

    stationary: the best epoch loss of the last `window` epochs is lower than the best loss
        before them by less than `tol` (relative), after at least `min_epochs` epochs, and the
        full-batch gradient norm is at most `grad_tol` x its norm at the initial weights. The
        best-of-window comparison ignores SGD's epoch-to-epoch noise, and a window of epochs
        (not one epoch's change) keeps slow but steady progress from stopping a run. The
        gradient is computed only when the loss has stalled (it costs a full pass).
        A stationary point whose loss is not below the affine denoiser's stops training only
        with `stop_above_affine`; otherwise training goes on (a plateau, not a minimum).
    diverged: non-finite loss, or loss above `divergence_factor` x the initial loss.
    `outcome` is "stationary", "diverged", or None (still running / budget spent).
    """

    window: int = 10
    tol: float = 1e-2
    grad_tol: float = 0.05
    min_epochs: int = 1
    stop_above_affine: bool = False
    affine_margin: float = 0.0
    divergence_factor: float = 100.0
    initial_loss: float | None = None
    initial_grad_norm: float | None = None
    baseline_loss: float | None = None  # predicting the mean target
    affine_loss: float | None = None  # the best affine map (None: no affine reference)
    outcome: str | None = None
    reason: str = "still_improving"
    epochs: int = 0
    grad_norm: float | None = None  # at the last check
    losses: list[float] = field(default_factory=list, repr=False)

    def is_divergent(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        return self.initial_loss is not None and loss > self.divergence_factor * self.initial_loss

    def start(
        self,
        initial_loss: float,
        baseline_loss: float,
        initial_grad_norm: float | None = None,
        affine_loss: float | None = None,
    ) -> str | None:
        """Record the loss (and gradient norm) at the initial weights and the reference losses of
        the data; a non-finite initial loss diverges at once."""
        self.initial_loss, self.baseline_loss = initial_loss, baseline_loss
        self.initial_grad_norm, self.affine_loss = initial_grad_norm, affine_loss
        if self.is_divergent(initial_loss):
            self.outcome, self.reason = "diverged", "non_finite_initial_loss"
        return self.outcome

    def loss_stalled(self) -> bool:
        """Has the loss stopped decreasing over the last `window` epochs?"""
        if len(self.losses) <= self.window or self.epochs < self.min_epochs:
            return False
        before = min(self.losses[: -self.window])
        recent = min(self.losses[-self.window :])
        return (before - recent) < self.tol * abs(before)

    def gradient_small(self, grad_norm: float) -> bool:
        if self.initial_grad_norm is None or not math.isfinite(self.initial_grad_norm):
            return True  # no reference: the loss rule alone decides
        return grad_norm <= self.grad_tol * self.initial_grad_norm

    def update(self, loss: float, grad_norm: Callable[[], float] | None = None) -> str | None:
        """Feed one epoch's loss; `grad_norm()` computes the full-batch gradient norm at the
        current weights, called only when the loss has stalled. Returns the outcome once
        decided, else None."""
        self.epochs += 1
        self.losses.append(float(loss))
        if self.is_divergent(loss):
            self.outcome = "diverged"
            self.reason = (
                "non_finite_loss" if not math.isfinite(loss) else "loss_above_divergence_factor"
            )
            return self.outcome
        if not self.loss_stalled():
            self.reason = "still_improving"
            return None
        if not self.stop_above_affine and above_affine(loss, self.affine_loss, self.affine_margin):
            # Not a minimum worth stopping at: nets on such plateaus can leave them late
            # (Fig. 5b). Training goes on, whatever the gradient, so it is not computed (a
            # full pass each epoch a He-init net sits there); `finish` judges the last epoch,
            # and the budget ends a run that stays as a plateau (or gradient_not_small).
            self.reason = "stationary_above_affine"
            return None
        if grad_norm is not None:
            self.grad_norm = float(grad_norm())
            if not self.gradient_small(self.grad_norm):
                self.reason = "gradient_not_small"
                return None
        self.outcome, self.reason = "stationary", "stationary"
        return self.outcome

    def finish(self, grad_norm: float | None) -> None:
        """At the end of training: a run the budget stopped whose loss had stalled and whose
        final gradient is small is stationary too (it stalled on its last epoch)."""
        if grad_norm is not None:
            self.grad_norm = grad_norm
        if self.outcome is None and self.loss_stalled():
            if grad_norm is None or self.gradient_small(grad_norm):
                self.outcome, self.reason = "stationary", "stationary"
            else:
                self.reason = "gradient_not_small"


def stability_limit(resolved: Mapping[str, Any]) -> float | None:
    """The bound on lr x lambda_max above which a minimum is linearly unstable for the
    optimizer (App. I, eq. S4: 2 for plain GD/SGD; 2 (1 + beta) with heavy-ball momentum beta).
    None when the run should not be judged by it (Adam, SAM, or the check switched off).

    SAM has no limit of this kind, whatever its base: eq. (S4) linearises the update map around
    a minimum, where the gradient vanishes, but SAM's ascent step rho g / ||g|| keeps length rho
    as g -> 0 (it is not even continuous there), so there is no linear map to bound. Known
    stability analyses of SAM (e.g. Bartlett et al. 2023; Long & Bartlett 2023) give an edge
    that depends on rho and the gradient norm along the trajectory, not a fixed bound on
    lr x lambda_max that this check could apply at the final weights."""
    if not resolved["callbacks"]["convergence"].get("require_linear_stability", False):
        return None
    if resolved["optimizer"]["name"] != "sgd":  # Adam, SAM: see above
        return None
    return 2.0 * (1.0 + float(resolved["optimizer"].get("momentum", 0.0)))


def stability_band(resolved: Mapping[str, Any]) -> float:
    """callbacks.convergence.stability_band (STABILITY_BAND when the key is absent)."""
    band = resolved["callbacks"]["convergence"].get("stability_band")
    return STABILITY_BAND if band is None else float(band)


# A linear net's best fit is the least-squares map itself: its loss reaches that reference from
# above, so "below" means within this relative margin (a rounding-level allowance).
LINEAR_NET_AFFINE_MARGIN = 1e-3


def affine_margin(resolved: Mapping[str, Any]) -> float:
    """The relative margin of criterion (b) for this run (callbacks.convergence.affine_margin;
    null: 0 for nets with ReLUs, LINEAR_NET_AFFINE_MARGIN for linear nets)."""
    margin = resolved["callbacks"]["convergence"].get("affine_margin")
    if margin is not None:
        return float(margin)
    return LINEAR_NET_AFFINE_MARGIN if resolved["model"]["activation"] == "linear" else 0.0


def above_affine(train_loss: float | None, affine_loss: float | None, margin: float = 0.0) -> bool:
    """Is the final training loss not below the affine denoiser's (criterion (b))? `margin`
    (relative) admits a loss that equals the reference up to rounding, for models whose best
    fit is that reference (deep linear nets: their global minimum is the least-squares fit)."""
    if affine_loss is None or train_loss is None:
        return False
    return not train_loss < affine_loss * (1.0 + margin)


def stability_ratio(lr: float, lambda_max: float | None, limit: float | None) -> float | None:
    """r = lr x lambda_max / limit: 1 at the stability limit of eq. (S4) (None: not judged)."""
    if limit is None or lambda_max is None:
        return None
    return lr * lambda_max / limit


def decide_status(
    stopping: StoppingRule,
    analysis: Mapping[str, Any] | None,
    lr: float,
    limit: float | None,
    band: float = STABILITY_BAND,
    train_loss: float | None = None,
    affine_margin: float = 0.0,
) -> tuple[str, str]:
    """The final (status, reason) of a run, from everything known after `fit`.

    stopping: the stopping rule's outcome and reason (and its affine reference loss).
    analysis: the measurements at the final weights (None: analysis switched off, so
        stationarity and the affine comparison decide). A failed Hessian solve leaves a
        stationary point unverified. Its `lambda_max` is the robust value the status is judged
        by (src.training.callbacks: after a short polish of the final weights).
    limit: the stability bound on lr x lambda_max (`stability_limit`), None for no check.
        r = lr x lambda_max / limit above 1 + band is unstable, whether or not the run became
        stationary: an oscillation around (or a drift along) a point SGD cannot stay at, which
        bounds the step size from above. A stationary point below the affine denoiser with
        |r - 1| <= band is at the edge of stability: float rounding alone can move it across
        the limit (STABILITY_BAND).
    train_loss: the full training loss at the final weights, compared with the affine one.
    """
    if stopping.outcome == "diverged":
        return DIVERGED, stopping.reason
    lam = None if analysis is None else analysis.get("lambda_max")
    ratio = stability_ratio(lr, lam, limit)
    if ratio is not None and ratio > 1.0 + band:
        return UNSTABLE, "lr_lambda_above_limit"
    if stopping.outcome != "stationary":
        return BUDGET_EXHAUSTED, stopping.reason
    if above_affine(train_loss, stopping.affine_loss, affine_margin):
        return PLATEAU, "stationary_above_affine"
    if analysis is not None and (analysis.get("hessian_status") != "converged" or lam is None):
        return UNVERIFIED, "hessian_solve_failed"
    if ratio is not None and ratio >= 1.0 - band:
        return EDGE_OF_STABILITY, "lr_lambda_within_band"
    reason = "stationary" if stopping.affine_loss is None else "stationary_below_affine"
    return CONVERGED, reason
