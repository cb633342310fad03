"""The rules the report's verdicts follow, and their history (issue 23 item 6).

A verdict is only honest if its rule was fixed before its outcome was seen. The rules below were
fixed in the commit named by RULES_FROZEN_AT, before the results they judge were computed;
earlier versions of this project applied other rules (EARLIER_RULES) to results of the same
profile, and REPORT.md and claims.json say so.
"""

from __future__ import annotations

# The commit that fixed the current rules (set in the commit after it: a commit cannot name
# itself). Every result in reports/ was computed after it.
RULES_FROZEN_AT = "5f50e7d"

# The rules introduced by issue 23, in words (the code in src.training.status and
# src.report.claims is what applies them).
CURRENT_RULES = (
    "a run's lambda_max is measured after 20 full-batch GD steps of 1 / lambda_raw from its "
    "final weights (lambda_max_raw, at the final weights, is kept beside)",
    "SGD runs: r = lr x lambda_max / (2 (1 + momentum)); converged needs r <= 0.9, "
    "edge_of_stability is |r - 1| <= 0.1 (a stationary point below the affine denoiser), "
    "unstable is r > 1.1; the band of 10% covers the 6-7% spread of lambda_max that float "
    "rounding alone produced",
    "every claim is judged twice, with edge-of-stability runs counted as minima and without; "
    "where the two readings differ the verdict is `undecided (edge-sensitive)`",
    "the stability boundary is bracketed by a stability failure (diverged, or unstable beyond "
    "the band); non-monotone depths make claim 2 undecided; the bisection's probes join the "
    "grid in claims 1 and 3",
    "claim 4: beside the matched-cell signed-rank test, a sign test over depths of the largest "
    "stable grid step size (He below identity), at least 5 depths; the claim holds if one test "
    "holds and neither says the opposite",
    "claim 5: decided only when the methods are comparable (mean training losses within 20%, "
    "SGD's mean lr x lambda_max <= 1.8), direction (Mann-Whitney) and magnitude (the paper's "
    "ratio range) reported apart",
    "claim 7: only (flat, sharp) pairs whose lambda_max ratio is >= 2 count, judged by flat "
    "run (at least 3), Clopper-Pearson over runs",
    "ratios of lambda_max: a Welch t-interval on the mean log ratio (ratio of geometric means), "
    "not a percentile bootstrap (82% coverage at n = 3-4)",
)

# Rules applied to results of this profile before RULES_FROZEN_AT (from the project's history).
EARLIER_RULES = (
    "unstable at lr x lambda_max > 2 (1 + 1e-4) (the eigensolver's tolerance), no band: runs at "
    "the edge of stability were called converged or unstable by rounding",
    "lambda_max measured at the final weights only",
    "claim 5: holds at an Adam / SGD ratio >= 2 (an early version), later the paper's ratio "
    "range with a percentile-bootstrap interval",
    "claim 3: decided by the R^2 of a linear fit (an early version), later by slope and "
    "exponent t-intervals over the coarse grid's flattest minima",
    "claim 7: every (SGD, Adam) pair counted, Clopper-Pearson over pairs",
    "claim 4: the matched-cell signed-rank test alone",
    "a single verdict per claim, with edge-of-stability runs not distinguished",
)


def rules_payload() -> dict:
    """The rules' history as claims.json stores it."""
    return {
        "frozen_at": RULES_FROZEN_AT,
        "current": list(CURRENT_RULES),
        "earlier": list(EARLIER_RULES),
    }
