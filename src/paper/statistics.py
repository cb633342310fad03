"""The statistics behind the paper's tables and the report's verdicts: one regression
(`line_fit`), the rank tests and intervals the claims use, and their fixed levels.

Every level here was fixed in advance (issue 11), before any result of this project was seen.
The ratio interval (`geometric_mean_ratio_ci`) was changed by issue 23 from a percentile
bootstrap, which covers a true ratio only ~82% of the time at nominal 95% with 3-4 runs per
method, to a Welch t-interval on the log scale, fixed before its outcome was looked at.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05  # one-sided significance level of every test (fixed in advance)
CI_LEVEL = 0.95  # two-sided level of every interval
EXACT_PERMUTATIONS_UP_TO = 8  # exact Spearman permutation p for n <= 8 (8! = 40,320 orderings)
PERMUTATION_RESAMPLES = 9999  # random splits when the exact enumeration would be larger
PERMUTATION_SEED = 0


def smallest_exact_mwu_p(n1: int, n2: int) -> float:
    """The smallest one-sided p an exact Mann-Whitney test can give with n1 vs n2 runs:
    complete separation, 1 / C(n1 + n2, n1) (3 vs 3: 0.05, 4 vs 4: 1/70 = 0.014)."""
    return 1.0 / math.comb(n1 + n2, n1) if n1 and n2 else 1.0


def mwu_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided Mann-Whitney p for "x tends to exceed y": exact by permutation (all
    C(n1 + n2, n1) splits up to PERMUTATION_RESAMPLES of them), ties included."""
    if min(len(x), len(y)) < 2:
        return math.nan  # no test with a single run (reported as nan, decides nothing)
    method = stats.PermutationMethod(
        n_resamples=PERMUTATION_RESAMPLES, rng=np.random.default_rng(PERMUTATION_SEED)
    )
    return float(stats.mannwhitneyu(x, y, alternative="greater", method=method).pvalue)


def geometric_mean_ratio_ci(
    numerator: Sequence[float], denominator: Sequence[float]
) -> tuple[float, float, float]:
    """The ratio of geometric means gm(numerator) / gm(denominator) with its CI_LEVEL Welch
    t-interval: the interval of the difference of mean logs (unequal variances, Welch-
    Satterthwaite degrees of freedom), exponentiated. Returns (ratio, low, high).

    Exact for log-normal samples with equal log variances and close to nominal otherwise,
    also at n = 3-4 per group, where a percentile bootstrap of a ratio of means is far too
    narrow (tests/test_claims_rules.py checks the coverage by simulation). Positive values
    only; at least 2 per group. Two samples without spread give a zero-width interval.
    """
    logs_n = np.log(np.asarray(numerator, float))
    logs_d = np.log(np.asarray(denominator, float))
    n1, n2 = len(logs_n), len(logs_d)
    if min(n1, n2) < 2:
        raise ValueError("a t-interval needs at least 2 values per group")
    diff = float(logs_n.mean() - logs_d.mean())
    v1, v2 = logs_n.var(ddof=1) / n1, logs_d.var(ddof=1) / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        return math.exp(diff), math.exp(diff), math.exp(diff)
    dof = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, dof)) * se
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half)


def line_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Least squares y = slope x + intercept: the one regression of this project (the grids'
    trends over depth, the power law of lr_max(m) on log-log axes, the report's slopes).

    Returns slope, intercept, r2 (1 for data on a horizontal line), the slope's standard error
    and its CI_LEVEL t-interval `ci` (n - 2 degrees of freedom; None below 3 points), and n.
    Fewer than 2 distinct x give None everywhere: no line is defined.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return {"slope": None, "intercept": None, "r2": None, "stderr": None, "ci": None, "n": n}
    fit = stats.linregress(x, y)
    slope, stderr, ci = float(fit.slope), None, None
    if n >= 3:
        stderr = float(fit.stderr)
        half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, n - 2)) * stderr
        ci = [slope - half, slope + half]
    return {
        "slope": slope,
        "intercept": float(fit.intercept),
        "r2": float(fit.rvalue**2) if np.ptp(y) > 0 else 1.0,
        "stderr": stderr,
        "ci": ci,
        "n": n,
    }


def spearman_one_sided(x: Sequence[float], y: Sequence[float], alternative: str) -> float:
    """One-sided p of Spearman's rho: exact for n <= 8 (all n! orderings of y against x,
    vectorized), else scipy's t approximation (adequate for n > 8)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) > EXACT_PERMUTATIONS_UP_TO:
        return float(stats.spearmanr(x, y, alternative=alternative).pvalue)
    rank_x = stats.rankdata(x) - (len(x) + 1) / 2
    rank_y = stats.rankdata(y) - (len(y) + 1) / 2
    orderings = np.array(list(itertools.permutations(range(len(y)))))
    scale = np.linalg.norm(rank_x) * np.linalg.norm(rank_y)
    if scale == 0:
        return 1.0
    rhos = rank_y[orderings] @ rank_x / scale
    observed = float(rank_y @ rank_x / scale)
    slack = 1e-12  # rounding: an ordering with the observed rho counts as at least as extreme
    if alternative == "less":
        return float(np.mean(rhos <= observed + slack))
    return float(np.mean(rhos >= observed - slack))


def contains(interval: Sequence[float], value: float, rtol: float = 1e-9) -> bool:
    """value in [lo, hi], up to rounding (an exact fit has a zero-width interval)."""
    lo, hi = interval
    slack = rtol * max(1.0, abs(value))
    return lo - slack <= value <= hi + slack


def signed_rank_p(differences: Sequence[float], alternative: str) -> float:
    """One-sided Wilcoxon signed-rank p (zero differences dropped, as Wilcoxon's test does;
    1 when every difference is zero: no evidence either way)."""
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return 1.0
    return float(stats.wilcoxon(nonzero, alternative=alternative).pvalue)
