"""The vocabulary of a run's outcome: its status and the machine-readable reason beside it.

One place for the names, so training (which decides a status: src.training.status), the
experiments (which bracket and count runs) and the paper's tables, figures and report (which
read them from saved results) agree on them without importing one another. Nothing here
decides anything.
"""

CONVERGED = "converged"  # a minimum: stationary, below the affine denoiser, linearly stable
PLATEAU = "plateau"  # stationary above the affine denoiser
BUDGET_EXHAUSTED = "budget_exhausted"  # the epoch budget ended a run still moving
UNSTABLE = "unstable"  # lr x lambda_max above the stability limit at the final weights
DIVERGED = "diverged"  # a non-finite or exploding loss
UNVERIFIED = "unverified"  # stationary below the affine denoiser, lambda_max not measured
# A stationary point below the affine denoiser whose lr x lambda_max lies within the band of
# the stability limit (src.training.status.STABILITY_BAND): SGD at a fixed step ends here, and
# float rounding alone moves such a run across the limit, so it is neither called a minimum nor
# unstable; each verdict is computed with these runs counted as minima and without
# (src.report.inputs.ReportInputs.counting_edge_as_minima).
EDGE_OF_STABILITY = "edge_of_stability"

# In this order: a status's index is the `status_code` metric logged to MLflow.
STATUSES = (CONVERGED, PLATEAU, BUDGET_EXHAUSTED, UNSTABLE, DIVERGED, UNVERIFIED, EDGE_OF_STABILITY)

# Machine-readable reasons that come with each status (src.training.status says when).
REASONS = {
    CONVERGED: (
        "stationary_below_affine",  # stationary, below the affine denoiser, linearly stable
        "stationary",  # the same on data without an affine reference
    ),
    PLATEAU: ("stationary_above_affine",),  # stopped decreasing above the affine denoiser
    BUDGET_EXHAUSTED: (
        "still_improving",  # the epoch limit came while the loss was still decreasing
        "gradient_not_small",  # the loss stalled, but the full-batch gradient did not shrink
    ),
    UNSTABLE: ("lr_lambda_above_limit",),  # lr x lambda_max above the limit by more than the band
    DIVERGED: ("non_finite_loss", "loss_above_divergence_factor", "non_finite_initial_loss"),
    UNVERIFIED: ("hessian_solve_failed",),  # stationary, but lambda_max could not be measured
    EDGE_OF_STABILITY: ("lr_lambda_within_band",),  # stationary, below affine, r = 1 +- band
}

# A run that fails for one of these reasons bounds the stable step sizes from above (the
# bisection of the stability boundary); a spent budget or a plateau does not.
STABILITY_FAILURES = (DIVERGED, UNSTABLE)
