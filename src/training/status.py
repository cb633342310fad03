"""A run's status: the stopping rule applied during training, and the one function that decides
the final status after `fit`.

During training, `StoppingRule` reads each epoch's training loss and says when to stop
(a plateau, or divergence). After training, `decide_status` combines what it found with the
Hessian measurement (did the eigensolver converge, is the point linearly stable) into the final
status and a machine-readable reason. Nothing else sets a run's status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("converged", "not_converged", "diverged")

# Machine-readable reasons that come with a status.
REASONS = {
    "converged": ("plateau",),
    "not_converged": (
        "max_epochs",  # the epoch or step budget ran out before a plateau
        "plateau_at_baseline",  # stopped improving at the predict-the-mean loss (dead ReLUs)
        "linearly_unstable_plateau",  # lr x lambda_max above the stability limit (App. I)
        "hessian_solve_failed",  # the plateau could not be verified: no lambda_max
    ),
    "diverged": ("non_finite_loss", "loss_above_divergence_factor", "non_finite_initial_loss"),
}


@dataclass
class StoppingRule:
    """Decides from the epoch training losses when a run stops.

    plateau: relative change of the epoch loss below `tol` for `patience` consecutive epochs
        (and at least `min_epochs` epochs), at a loss below `max_loss_ratio` x the baseline loss
        (that of predicting the mean target). A net whose ReLUs all died plateaus at the
        baseline: that plateau does not stop training (He-init nets can leave it late, Fig. 5b);
    diverged: non-finite loss, or loss above `divergence_factor` x the initial loss.
    `outcome` is "converged" (a plateau), "diverged", or None (still running / budget spent).
    """

    tol: float = 1e-4
    patience: int = 5
    min_epochs: int = 1
    divergence_factor: float = 100.0
    max_loss_ratio: float | None = 0.9
    initial_loss: float | None = None
    baseline_loss: float | None = None
    outcome: str | None = None
    reason: str = "max_epochs"
    epochs: int = 0
    _previous: float | None = field(default=None, repr=False)
    _streak: int = field(default=0, repr=False)

    def is_divergent(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        return self.initial_loss is not None and loss > self.divergence_factor * self.initial_loss

    def start(self, initial_loss: float, baseline_loss: float) -> str | None:
        """Record the loss at the initial weights; a non-finite one diverges at once."""
        self.initial_loss, self.baseline_loss = initial_loss, baseline_loss
        if self.is_divergent(initial_loss):
            self.outcome, self.reason = "diverged", "non_finite_initial_loss"
        return self.outcome

    def update(self, loss: float) -> str | None:
        """Feed one epoch's loss; return the outcome once decided, else None."""
        self.epochs += 1
        if self.is_divergent(loss):
            self.outcome = "diverged"
            self.reason = (
                "non_finite_loss" if not math.isfinite(loss) else "loss_above_divergence_factor"
            )
            return self.outcome
        if self._previous is not None:
            change = abs(self._previous - loss) / max(abs(self._previous), 1e-30)
            self._streak = self._streak + 1 if change < self.tol else 0
            if self._streak >= self.patience and self.epochs >= self.min_epochs:
                if self.is_trivial(loss):
                    self._streak = 0  # a collapsed plateau: keep training
                    self.reason = "plateau_at_baseline"
                else:
                    self.outcome, self.reason = "converged", "plateau"
        self._previous = loss
        return self.outcome

    def is_trivial(self, loss: float) -> bool:
        if self.max_loss_ratio is None or self.baseline_loss is None:
            return False
        return loss >= self.max_loss_ratio * self.baseline_loss


def stability_limit(resolved: Mapping[str, Any]) -> float | None:
    """The bound on lr x lambda_max above which a minimum is linearly unstable for the
    optimizer (App. I, eq. S4: 2 for plain GD/SGD; 2 (1 + beta) with heavy-ball momentum beta).
    None when the run should not be judged by it (Adam, or the check switched off)."""
    if not resolved["callbacks"]["convergence"].get("require_linear_stability", False):
        return None
    if resolved["optimizer"]["name"] != "sgd":
        return None
    return 2.0 * (1.0 + float(resolved["optimizer"].get("momentum", 0.0)))


def decide_status(
    stopping: StoppingRule,
    analysis: Mapping[str, Any] | None,
    lr: float,
    limit: float | None,
    solver_tol: float = 0.0,
) -> tuple[str, str]:
    """The final (status, reason) of a run, from everything known after `fit`.

    stopping: the stopping rule's outcome and reason.
    analysis: the measurements at the final weights (None: analysis switched off, so a plateau
        is taken as it is). A failed Hessian solve leaves a plateau unverified: not_converged.
    limit: the stability bound on lr x lambda_max (`stability_limit`), None for no check. The
        check allows the eigensolver's relative accuracy `solver_tol` above the bound, so a
        point is called unstable only when it is, whatever the rounding of lambda_max.
    """
    if stopping.outcome == "diverged":
        return "diverged", stopping.reason
    if stopping.outcome != "converged":
        return "not_converged", stopping.reason
    if analysis is None:
        return "converged", stopping.reason
    lam = analysis.get("lambda_max")
    if analysis.get("hessian_status") != "converged" or lam is None:
        return "not_converged", "hessian_solve_failed"
    if limit is not None and lr * lam > limit * (1.0 + solver_tol):
        # A plateau where lr x lambda_max exceeds the limit is an oscillation around an
        # unstable point, not convergence to a minimum (App. I, eq. S4).
        return "not_converged", "linearly_unstable_plateau"
    return "converged", stopping.reason
