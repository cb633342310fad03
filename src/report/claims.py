"""Each qualitative claim of Sec. 6, and beyond the paper each further method's, judged from
our saved results (`check_claims`, `check_beyond_claims`).

Every verdict states its test (issue 11): the statistic, the threshold and where it comes from
(the paper's figure, table or theorem, or "fixed in advance" with the reason), the uncertainty
(per-seed values, rank tests, t intervals), and one of three verdicts:
  holds          the data support the claim at the stated threshold;
  does not hold  the data contradict it at the stated threshold;
  undecided      the data cannot decide: too few minima, a boundary not bracketed, intervals
                 that overlap, too few depths. `reason` says which.
Only runs with status `converged` (a minimum: stationary, below the affine denoiser, linearly
stable) enter any statistic; a claim whose runs are not minima is undecided, with the statuses.

The thresholds below were fixed from the paper before looking at any result of this project;
changing one after seeing the outcome defeats the report's purpose. Issue 23 (item 4) added
rules, fixed before their outcome was looked at, so that each claim tests what the paper claims:
  claim 4 (Fig. 5a, Lemma 1) a second test, lr_stable(He) below lr_stable(identity) per depth
          (a sharper start meets the stability limit of App. I eq. S4, lambda_max <= 2 / lr,
          at a smaller step; sign test over depths), combined with the matched-cell test by
          `combine_verdicts`;
  claim 5 (Table S1) the two methods' minima must first be comparable (`comparability`:
          training losses within 20%, SGD's lr x lambda_max <= 1.8, i.e. 0.9 of eq. S4's
          limit), then direction and magnitude are separate lines;
  claim 7 (Fig. 7, Lemma 2) only pairs whose lambda_max ratio sharp / flat is
          >= MIN_SHARPNESS_RATIO count, and the interval is over flat runs, not pairs;
  ratios of lambda_max: a Welch t-interval of the ratio of geometric means
          (src.paper.statistics.geometric_mean_ratio_ci), honest at 3-4 runs per method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from src.core.status import CONVERGED, DIVERGED, STABILITY_FAILURES, UNSTABLE
from src.paper.boundary import with_probes
from src.paper.reference import PAIRS_COMPARED, adam_sgd_ratio_interval
from src.paper.statistics import (
    ALPHA,
    CI_LEVEL,
    contains,
    geometric_mean_ratio_ci,
    line_fit,
    mwu_greater,
    signed_rank_p,
    smallest_exact_mwu_p,
    spearman_one_sided,
)
from src.paper.tables import flattest_per_depth, minima, reason_counts
from src.report.inputs import ReportInputs
from src.report.rules import RULES_FROZEN_AT

MIN_RUNS_PER_METHOD = 3  # issue 11 item 4: fewer converged runs per method -> undecided
MIN_DEPTHS = 3  # a slope over depths needs n - 2 >= 1 degrees of freedom
# Claim 1: below 4 distinct step sizes, no exact rank test can reach p < 0.05 (3! = 6
# orderings, smallest one-sided p 1/6); 4 gives 1/24.
MIN_STEP_SIZES = 4
# Claim 4: the exact one-sided signed-rank test on n matched cells reaches at best 1/2^n;
# n = 5 is the first with 1/32 < 0.05.
MIN_MATCHED_CELLS = 5
# Claim 4's second test: the one-sided exact sign test over depths reaches at best 1/2^n;
# n = 5 is the first with 1/32 < 0.05 (issue 23, fixed in advance).
MIN_SIGN_DEPTHS = 5
# Claim 5's comparability (issue 23, fixed in advance): Table S1's two minima have equal
# training loss, and its SGD sits at 0.88 of the stability limit 2.
MAX_LOSS_MISMATCH = 0.2  # |mean loss Adam / mean loss SGD - 1| at most 20%
MAX_FLAT_LR_LAMBDA = 1.8  # SGD's mean lr x lambda_max: 0.9 of its limit 2
# Claim 7 (issue 23, fixed in advance): a pair counts only when its sharp end's lambda_max is
# at least twice its flat end's (Lemma 2 speaks of a flat and a sharp minimum; Table S1: 7.3x).
MIN_SHARPNESS_RATIO = 2.0

HOLDS, FAILS, UNDECIDED = True, False, None
EDGE_SENSITIVE = "undecided (edge-sensitive)"
SENSITIVE = "undecided (sensitive)"  # decided otherwise by a rounding-only rerun (item 7)
# The two readings of every claim (issue 23 item 2), by the key claims.json stores them under.
STRICT, WITH_EDGE = "converged_only", "with_edge_runs"


@dataclass
class Claim:
    """One claim with its test. `holds` is True / False / None (undecided)."""

    name: str
    statement: str  # what the paper says (Sec. 6)
    holds: bool | None
    evidence: str  # the numbers behind the verdict, in words
    statistic: str = ""  # what is computed, from which runs
    threshold: str = ""  # the decision rule
    threshold_source: str = ""  # the paper's figure/table/theorem, or "fixed in advance: why"
    uncertainty: dict[str, Any] = field(default_factory=dict)  # per-seed values, intervals, p
    reason: str | None = None  # why undecided (None when decided)
    numbers: dict[str, Any] = field(default_factory=dict)
    # The verdict of each reading (`judged_both_ways`): edge-of-stability runs not counted as
    # minima, and counted. Empty for a claim judged once.
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    edge_sensitive: bool = False  # the two readings disagree: undecided by design
    # {"this_run": verdict, "variant": verdict} when a rounding-only rerun was compared
    stability: dict[str, Any] = field(default_factory=dict)
    sensitive: bool = False  # the rerun's verdict differs: undecided by design

    @property
    def verdict(self) -> str:
        if self.sensitive:
            return SENSITIVE
        if self.edge_sensitive:
            return EDGE_SENSITIVE
        return {True: "holds", False: "does not hold", None: "undecided"}[self.holds]

    def to_dict(self) -> dict[str, Any]:
        return _plain({**asdict(self), "verdict": self.verdict})


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python numbers, non-finite floats to None, tuples and
    dict keys made plain (claims.json stays machine-readable)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def statuses_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """'3 converged, 2 plateau (stationary_above_affine), ...': every run accounted for."""
    parts = []
    for status, by_reason in reason_counts(list(rows)).items():
        for reason, n in by_reason.items():
            parts.append(f"{n} {status}" + ("" if reason == "n/a" else f" ({reason})"))
    return ", ".join(parts) or "no runs"


def slope_interval(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """The slope of `line_fit` with its t-interval, as a claim's uncertainty reports it."""
    fit = line_fit(x, y)
    return {k: fit[k] for k in ("slope", "intercept", "ci", "r2", "n")}


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float | np.floating):
        return f"{float(value):.3g}"
    return str(value)


def fmt_values(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def fmt_ci(ci: Sequence[float] | None) -> str:
    return "n/a" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


# --- claims 1-4: the step-size grids (Figs 4-5) ----------------------------------------------


def claim_larger_steps_flatter(rows: Sequence[dict], probes: Sequence[dict] = ()) -> Claim:
    """Fig. 4a: per depth, Spearman's rho of step size vs lambda_max over converged runs (the
    grid's and the bisection's converged probes, `with_probes`), one-sided exact permutation
    p; the depths combined by Fisher's method."""
    rows = with_probes(rows, probes)
    joined = sum(r.get("source") == "probe" for r in rows)
    statement = "Larger step sizes lead to flatter minima (Fig. 4a)."
    claim = Claim(
        "larger_steps_flatter",
        statement,
        UNDECIDED,
        "",
        statistic=(
            "per depth: Spearman rho of step size vs lambda_max over converged runs (grid and "
            "the bisection's converged probes, same settings), one-sided "
            f"exact permutation p (depths with >= {MIN_STEP_SIZES} converged step sizes); "
            "depths combined by Fisher's method"
        ),
        threshold=(
            f"holds: combined p(rho < 0) < {ALPHA}; does not hold: combined p(rho > 0) < "
            f"{ALPHA}; else undecided"
        ),
        threshold_source=(
            f"fixed in advance: one-sided alpha = {ALPHA}; the paper shows the trend in "
            f"Fig. 4a without a test. {MIN_STEP_SIZES} step sizes: the fewest for which an "
            "exact rank test can reach p < 0.05"
        ),
    )
    per_depth: dict[int, dict[str, Any]] = {}
    too_few: dict[int, int] = {}
    for depth in sorted({r["depth"] for r in rows}):
        points = sorted((r["lr"], r["lambda_max"]) for r in minima(rows) if r["depth"] == depth)
        if len({lr for lr, _ in points}) < MIN_STEP_SIZES:
            too_few[depth] = len({lr for lr, _ in points})
            continue
        lrs, lams = zip(*points)
        per_depth[depth] = {
            "rho": float(stats.spearmanr(lrs, lams).statistic),
            "p_less": spearman_one_sided(lrs, lams, "less"),
            "p_greater": spearman_one_sided(lrs, lams, "greater"),
            "n": len(points),
        }
    claim.uncertainty = {
        "per_depth": per_depth,
        "too_few_step_sizes": too_few,
        "probes_joined": joined,
    }
    if len(per_depth) < 2:
        claim.reason = (
            f"fewer than 2 depths with >= {MIN_STEP_SIZES} converged step sizes "
            f"(converged step sizes per depth: {too_few or 'none'})"
        )
        claim.evidence = claim.reason
        return claim
    p_less = float(stats.combine_pvalues([d["p_less"] for d in per_depth.values()]).pvalue)
    p_greater = float(stats.combine_pvalues([d["p_greater"] for d in per_depth.values()]).pvalue)
    claim.uncertainty.update({"combined_p_less": p_less, "combined_p_greater": p_greater})
    claim.evidence = (
        ", ".join(
            f"m={d}: rho {v['rho']:+.2f} (p {v['p_less']:.3g}, n {v['n']})"
            for d, v in per_depth.items()
        )
        + f"; Fisher combined p(rho<0) {p_less:.3g}, p(rho>0) {p_greater:.3g}"
        + f"; {joined} converged bisection probes joined the grid"
    )
    if too_few:
        claim.evidence += f"; depths left out (converged step sizes < {MIN_STEP_SIZES}): {too_few}"
    if p_less < ALPHA and p_greater >= ALPHA:
        claim.holds = HOLDS
    elif p_greater < ALPHA and p_less >= ALPHA:
        claim.holds = FAILS
    else:
        claim.reason = f"neither direction significant at {ALPHA} (or both: mixed depths)"
    return claim


def boundary_depths(boundary: Mapping[str, Any] | None) -> dict[int, dict[str, Any]]:
    """Per-depth entries of results/boundary/boundary.json, whichever of the shapes helper A's
    stage may write: {"depths": {depth: entry}}, {"depths": [entry with "depth"]}, or the
    depths as top-level keys. Each entry has lr_max, bracket [lo, hi] and state."""
    if not boundary:
        return {}
    container: Any = boundary
    for key in ("depths", "boundaries", "per_depth", "boundary"):
        if key in boundary:
            container = boundary[key]
            break
    if isinstance(container, list):
        return {int(e["depth"]): dict(e) for e in container if isinstance(e, Mapping)}
    return {
        int(k): dict(v) for k, v in container.items() if str(k).isdigit() and isinstance(v, Mapping)
    }


def boundary_fit(boundary: Mapping[str, Any] | None) -> dict[str, Any]:
    """The power-law fit of lr_max(m) stored with the bisection, if any ({} otherwise)."""
    if not boundary:
        return {}
    for key in ("fit", "power_law", "power_law_fit"):
        if isinstance(boundary.get(key), Mapping):
            return dict(boundary[key])
    return {}


def fit_interval(fit: Mapping[str, Any]) -> tuple[list[float] | None, str]:
    """The widest interval the bisection stage gives for the exponent: the one that includes
    the brackets' width first, then the plain t-interval."""
    for key in ("ci95_with_bracket", "ci95", "ci"):
        if fit.get(key) is not None:
            return [float(v) for v in fit[key]], f"boundary.json fit.{key}"
    return None, ""


def claim_lr_max_one_over_m(boundary: Mapping[str, Any] | None) -> Claim:
    """Fig. 4a / Thm 1: the power-law exponent of lr_max(m) from the bisection of the stability
    boundary (results/boundary/boundary.json), with its interval."""
    claim = Claim(
        "lr_max_one_over_m",
        "The largest step size allowing convergence behaves as 1/m (Fig. 4a).",
        UNDECIDED,
        "",
        statistic=(
            "exponent p of lr_max(m) ~ c m^p over the bisection's bracketed depths, with its 95% "
            "interval (the bisection's own, including the brackets' width; else a t-interval "
            "on log lr_max vs log m). A depth's boundary: lo = the largest step size of a "
            "minimum below hi = the smallest step size above a minimum that diverged or was "
            "unstable beyond the band; limited by divergence or by the edge (hi's status)"
        ),
        threshold=(
            "holds: interval contains -1 and excludes 0; does not hold: interval excludes -1; "
            "undecided: contains both, any depth not bracketed, or any depth non-monotone (a "
            "minimum at or above a stability failure: no single boundary; fixed in advance, "
            "issue 23)"
        ),
        threshold_source=(
            "Thm 1 and Fig. 4a: the flattest minimum's lambda_max grows like m and SGD is "
            "stable only for lambda_max <= 2/lr (App. I), so lr_max ~ 1/m (exponent -1); "
            "0 = no dependence on depth"
        ),
    )
    depths = boundary_depths(boundary)
    if not depths:
        claim.reason = "no bisection output (results/boundary/boundary.json absent or empty)"
        claim.evidence = claim.reason
        return claim
    states = {d: e.get("state") for d, e in depths.items()}
    non_monotone = {d: list(e["non_monotone"]) for d, e in depths.items() if e.get("non_monotone")}
    claim.uncertainty = {
        "brackets": {d: e.get("bracket") for d, e in depths.items()},
        "states": states,
        "limited_by": {d: e.get("limited_by") for d, e in depths.items()},
        "non_monotone": non_monotone,
    }
    claim.evidence = ", ".join(
        f"m={d}: lr_max {fmt(e.get('lr_max'))} in {fmt_ci(e.get('bracket'))} ({e.get('state')}"
        + (f", limited by {e['limited_by']}" if e.get("limited_by") else "")
        + ")"
        for d, e in depths.items()
    )
    if non_monotone:
        claim.evidence += "; non-monotone (a minimum at or above a stability failure): " + (
            ", ".join(f"m={d} at lr {fmt_values(lrs)}" for d, lrs in non_monotone.items())
        )
    edge_only = boundary_fit(boundary).get("edge_limited_only") or {}
    if edge_only.get("exponent") is not None:  # descriptive only: no verdict rests on it
        claim.numbers["edge_limited_only"] = edge_only
        claim.evidence += (
            f"; descriptive: exponent over the edge-limited depths {edge_only.get('depths')} "
            f"alone {fmt(edge_only['exponent'])}, 95% CI {fmt_ci(edge_only.get('ci95'))}"
        )
    open_depths = {d: s for d, s in states.items() if s != "bracketed"}
    reasons = []
    if open_depths:
        reasons.append(f"boundary not bracketed at depths {open_depths}")
    if non_monotone:
        reasons.append(
            f"non-monotone boundary at depths {sorted(non_monotone)} (a minimum at or above "
            "a stability failure: not one threshold)"
        )
    if reasons:
        claim.reason = "; ".join(reasons)
        return claim
    if len(depths) < MIN_DEPTHS:
        claim.reason = f"bracketed at {len(depths)} depths only (need {MIN_DEPTHS})"
        return claim
    fit = boundary_fit(boundary)
    ci, source = fit_interval(fit)
    exponent = fit.get("exponent")
    if ci is None:
        lr_max = [float(depths[d]["lr_max"]) for d in depths]
        own = slope_interval(np.log(list(depths)), np.log(lr_max))
        exponent, ci, source = own["slope"], own["ci"], "t-interval on log lr_max (lo ends)"
    claim.uncertainty.update({"exponent": exponent, "ci": ci, "interval_source": source})
    claim.evidence += f"; exponent {fmt(exponent)}, 95% interval {fmt_ci(ci)} ({source})"
    if not contains(ci, -1.0):
        claim.holds = FAILS
    elif not contains(ci, 0.0):
        claim.holds = HOLDS
    else:
        claim.reason = "the interval contains both -1 and 0: too wide to tell 1/m from no trend"
    return claim


def claim_flattest_linear_in_m(
    rows: Sequence[dict], boundary: Mapping[str, Any] | None = None, probes: Sequence[dict] = ()
) -> Claim:
    """Fig. 4b / Thm 1 eq. (17): the flattest converged minimum per depth (of the grid and the
    bisection's converged probes, `with_probes`); its slope against m with a t-interval, and
    the log-log exponent (1 for linear growth) with a t-interval."""
    rows = with_probes(rows, probes)
    claim = Claim(
        "flattest_linear_in_m",
        "The sharpness of the flattest minimum grows roughly linearly with depth (Fig. 4b, Thm 1).",
        UNDECIDED,
        "",
        statistic=(
            "flattest converged lambda_max per depth (grid and the bisection's converged probes, "
            "same settings): least-squares slope vs m and exponent of "
            "lambda ~ m^q, each with a 95% t-interval over depths; 2/lr_max beside (bisection)"
        ),
        threshold=(
            "holds: slope interval above 0 and exponent interval contains 1; does not hold: "
            "slope interval below 0, or above 0 with an exponent interval excluding 1; else "
            "undecided"
        ),
        threshold_source=(
            "Thm 1 eq. (17): lambda_min = 2 m sigma_max(T)^(2 - 2/m), linear in m (exponent 1) "
            "for sigma_max(T) near 1; Fig. 4b"
        ),
    )
    best = flattest_per_depth(rows)
    from_probes = {  # depths whose flattest minimum is a probe's
        int(r["depth"])
        for r in minima(rows)
        if r.get("source") == "probe"
        and float(r["lambda_max"]) == best[int(r["depth"])]["lambda_max"]
    }
    depths = list(best)
    lams = [v["lambda_max"] for v in best.values()]
    claim.uncertainty = {"flattest": {d: v for d, v in best.items()}}
    stability = {}
    for depth, entry in boundary_depths(boundary).items():
        if entry.get("lr_max") and depth in best:
            limit = 2.0 / float(entry["lr_max"])
            stability[depth] = {
                "flattest_lambda_max": best[depth]["lambda_max"],
                "two_over_lr_max": limit,
                "ratio": best[depth]["lambda_max"] / limit,
            }
    claim.numbers["vs_stability_limit"] = stability
    if len(best) < MIN_DEPTHS:
        claim.reason = f"flattest minimum known at {len(best)} depths only (need {MIN_DEPTHS})"
        claim.evidence = claim.reason
        return claim
    linear = slope_interval(depths, lams)
    power = slope_interval(np.log(depths), np.log(lams))
    claim.uncertainty.update({"slope": linear, "exponent": power})
    claim.evidence = (
        f"slope {linear['slope']:.3g} per layer, 95% CI {fmt_ci(linear['ci'])}; exponent "
        f"{power['slope']:.2f}, 95% CI {fmt_ci(power['ci'])}; "
        + ", ".join(
            f"m={d}: {v['lambda_max']:.3g} (lr {v['lr']:g}"
            + (", probe" if d in from_probes else "")
            + ")"
            for d, v in best.items()
        )
    )
    claim.uncertainty["flattest_from_probes"] = sorted(from_probes)
    if stability:
        claim.evidence += "; flattest / (2/lr_max): " + ", ".join(
            f"m={d}: {v['ratio']:.2f}" for d, v in stability.items()
        )
    slope_lo, slope_hi = linear["ci"]
    if slope_hi < 0:
        claim.holds = FAILS
    elif slope_lo > 0:
        claim.holds = HOLDS if contains(power["ci"], 1.0) else FAILS
        if not claim.holds:
            claim.evidence += " (grows, but not linearly)"
    else:
        claim.reason = "the slope's interval contains 0"
    return claim


def _cell(row: Mapping[str, Any]) -> tuple:
    return (row["depth"], row["lr"], row.get("seed"))


def lr_stable_per_depth(rows: Sequence[dict]) -> dict[int, dict[str, Any]]:
    """Per depth of one init's grid: lr_stable, the largest grid step size strictly below the
    smallest step size at which a run failed for a stability reason (`STABILITY_FAILURES`:
    diverged or unstable); 0 when the smallest grid step already failed; None when no run
    failed (not bounded by the grid). With the first failing step size and the number of
    diverged and unstable runs."""
    out: dict[int, dict[str, Any]] = {}
    for depth in sorted({int(r["depth"]) for r in rows}):
        at_depth = [r for r in rows if int(r["depth"]) == depth]
        failed = [float(r["lr"]) for r in at_depth if r["status"] in STABILITY_FAILURES]
        first = min(failed) if failed else None
        below = [float(r["lr"]) for r in at_depth if first is not None and float(r["lr"]) < first]
        out[depth] = {
            "lr_stable": None if first is None else max(below, default=0.0),
            "first_failure_lr": first,
            "diverged": sum(r["status"] == DIVERGED for r in at_depth),
            "unstable": sum(r["status"] == UNSTABLE for r in at_depth),
        }
    return out


def he_lr_stable_test(identity: Sequence[dict], he: Sequence[dict]) -> dict[str, Any]:
    """Claim 4's second test (Lemma 1: He init starts sharper, so it tolerates smaller steps):
    over the depths where both inits' lr_stable is bounded and the two differ, the number with
    He's lower; one-sided exact sign test (binomial, 1/2). Returns the per-depth values, the
    depths left out, the counts, both one-sided p and the test's own verdict and reason."""
    per_init = {"identity": lr_stable_per_depth(identity), "he": lr_stable_per_depth(he)}
    depths = sorted(set(per_init["identity"]) | set(per_init["he"]))
    per_depth = {d: {init: per_init[init].get(d) for init in per_init} for d in depths}
    unbounded = [
        d for d in depths if any((per_depth[d][i] or {}).get("lr_stable") is None for i in per_init)
    ]
    tested = [
        d
        for d in depths
        if d not in unbounded
        and per_depth[d]["he"]["lr_stable"] != per_depth[d]["identity"]["lr_stable"]
    ]
    lower = sum(
        per_depth[d]["he"]["lr_stable"] < per_depth[d]["identity"]["lr_stable"] for d in tested
    )
    n = len(tested)
    test: dict[str, Any] = {
        "per_depth": per_depth,
        "not_bounded": unbounded,
        "tested_depths": tested,
        "he_lower": lower,
        "n": n,
        "p_he_lower": stats.binomtest(lower, n, alternative="greater").pvalue if n else 1.0,
        "p_he_higher": stats.binomtest(n - lower, n, alternative="greater").pvalue if n else 1.0,
        "holds": UNDECIDED,
        "reason": None,
    }
    if n < MIN_SIGN_DEPTHS:
        test["reason"] = (
            f"{n} depths where both inits' lr_stable is bounded and differs (need "
            f"{MIN_SIGN_DEPTHS}); not bounded (no stability failure on the grid): "
            f"{unbounded or 'none'}"
        )
    elif test["p_he_lower"] < ALPHA:
        test["holds"] = HOLDS
    elif test["p_he_higher"] < ALPHA:
        test["holds"] = FAILS
    else:
        test["reason"] = f"He lower at {lower} of {n} depths: sign test not significant"
    return test


def combine_verdicts(first: bool | None, second: bool | None) -> bool | None:
    """Two pre-stated tests of one claim: holds if at least one holds and neither says the
    opposite; does not hold if at least one says the opposite and neither holds; else None."""
    outcomes = {first, second}
    if HOLDS in outcomes and FAILS not in outcomes:
        return HOLDS
    if FAILS in outcomes and HOLDS not in outcomes:
        return FAILS
    return UNDECIDED


def _verdict_word(holds: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "undecided"}[holds]


def claim_he_sharper(identity: Sequence[dict], he: Sequence[dict]) -> Claim:
    """Fig. 5a by two tests, stated in advance and combined by `combine_verdicts`: (1) at the
    (depth, step size) cells where both inits reached a minimum, the log ratio
    lambda_He / lambda_identity, one-sided exact Wilcoxon signed-rank test; (2) per depth,
    lr_stable(He) below lr_stable(identity) (`he_lr_stable_test`, a sign test over depths)."""
    claim = Claim(
        "he_sharper",
        "With He init, SGD reaches sharper minima than with identity init (Fig. 5a).",
        UNDECIDED,
        "",
        statistic=(
            "(1) log(lambda_He / lambda_identity) over the (depth, step size, seed) cells where "
            "both runs converged; one-sided exact Wilcoxon signed-rank p. (2) per depth, "
            "lr_stable = the largest grid step size strictly below the smallest one at which "
            "that init's run diverged or was unstable; over the depths where both are bounded "
            "and differ, the number with He's lower; one-sided exact sign test (binomial)"
        ),
        threshold=(
            f"each test: holds at one-sided p < {ALPHA} for He sharper (1) / He's lr_stable "
            f"lower (2), does not hold at p < {ALPHA} the other way, undecided otherwise or "
            f"with fewer than {MIN_MATCHED_CELLS} matched cells (1) / {MIN_SIGN_DEPTHS} "
            "depths (2). The claim: holds if at least one test holds and neither says the "
            "opposite; does not hold if at least one says the opposite and neither holds; "
            "else undecided"
        ),
        threshold_source=(
            f"fixed in advance: one-sided alpha = {ALPHA} (Fig. 5a shows the trend without a "
            f"test; Lemma 1 predicts it, and a sharper start bounds the stable step lower); "
            f"{MIN_MATCHED_CELLS} cells / {MIN_SIGN_DEPTHS} depths: the fewest for which each "
            "exact test can reach p < 0.05 (1/2^5); the combination rule fixed by issue 23"
        ),
    )
    id_minima = {_cell(r): r["lambda_max"] for r in minima(identity)}
    he_minima = {_cell(r): r["lambda_max"] for r in minima(he)}
    common = sorted(set(id_minima) & set(he_minima))
    log_ratios = [math.log(he_minima[c] / id_minima[c]) for c in common]
    counts = {
        "identity": {"converged": len(id_minima), "runs": len(identity)},
        "he": {"converged": len(he_minima), "runs": len(he)},
    }
    lr_test = he_lr_stable_test(identity, he)
    claim.numbers = {
        "counts": counts,
        "statuses_identity": statuses_text(identity),
        "statuses_he": statuses_text(he),
        "lr_stable": lr_test,
    }
    claim.uncertainty = {
        "cells": [{"depth": c[0], "lr": c[1], "log_ratio": v} for c, v in zip(common, log_ratios)],
        "p_he_lr_stable_lower": lr_test["p_he_lower"],
        "p_he_lr_stable_higher": lr_test["p_he_higher"],
    }
    runs_text = (
        f"identity: {statuses_text(identity)}; He: {statuses_text(he)}"
        if identity or he
        else "no runs"
    )
    best_id, best_he = flattest_per_depth(identity), flattest_per_depth(he)
    flattest = ", ".join(
        f"m={d}: {best_he[d]['lambda_max']:.3g} vs {best_id[d]['lambda_max']:.3g}"
        for d in sorted(set(best_id) & set(best_he))
    )
    cells_holds, cells_reason = UNDECIDED, None
    if len(common) < MIN_MATCHED_CELLS:
        cells_reason = (
            f"{len(common)} cells where both inits reached a minimum (need {MIN_MATCHED_CELLS})"
        )
        cells_text = cells_reason
    else:
        p_greater = signed_rank_p(log_ratios, "greater")
        p_less = signed_rank_p(log_ratios, "less")
        sharper = sum(v > 0 for v in log_ratios)
        claim.uncertainty.update({"p_he_sharper": p_greater, "p_he_flatter": p_less})
        cells_text = (
            f"He sharper at {sharper} of {len(common)} matched cells (median ratio "
            f"{math.exp(float(np.median(log_ratios))):.3g}), p {p_greater:.3g}"
        )
        if p_greater < ALPHA:
            cells_holds = HOLDS
        elif p_less < ALPHA:
            cells_holds = FAILS
        else:
            cells_reason = f"neither direction significant at {ALPHA}"
    per_depth = "; ".join(
        f"m={d}: "
        + ", ".join(
            f"{init} {fmt((v or {}).get('lr_stable'))} ({(v or {}).get('diverged', 0)} diverged)"
            for init, v in entry.items()
        )
        for d, entry in lr_test["per_depth"].items()
    )
    lr_text = (
        f"lr_stable (He vs identity) {per_depth or 'n/a'}; He lower at {lr_test['he_lower']} of "
        f"{lr_test['n']} depths, sign-test p {lr_test['p_he_lower']:.3g}; not bounded: "
        f"{lr_test['not_bounded'] or 'none'}"
    )
    claim.numbers["tests"] = {
        "matched_cells": _verdict_word(cells_holds),
        "lr_stable": _verdict_word(lr_test["holds"]),
    }
    claim.evidence = (
        f"(1) {cells_text} [{_verdict_word(cells_holds)}]; (2) {lr_text} "
        f"[{_verdict_word(lr_test['holds'])}]; flattest per depth He vs identity: "
        f"{flattest or 'n/a'}; runs: {runs_text}"
    )
    claim.holds = combine_verdicts(cells_holds, lr_test["holds"])
    if claim.holds is UNDECIDED:
        claim.reason = (
            f"matched cells: {_verdict_word(cells_holds)}"
            + (f" ({cells_reason})" if cells_reason else "")
            + f"; lr_stable: {_verdict_word(lr_test['holds'])}"
            + (f" ({lr_test['reason']})" if lr_test["reason"] else "")
        )
    return claim


# --- claims 5-7: flat (SGD) vs sharp (Adam), Table S1, Figs 6-7 ------------------------------


def _method_minima(table: Mapping[str, Any], method: str) -> tuple[list[float], str]:
    """A method's per-seed lambda_max over converged runs (table_s1.json), and the statuses of
    its other runs in words."""
    row = table.get(method) or {}
    values = list((row.get("lambda_max") or {}).get("values") or [])
    others = row.get("not_converged")
    if others is None:  # an older table without the field: count what it has
        others = [{"status": s, "reason": None} for s in row.get("statuses", []) if s != CONVERGED]
    text = statuses_text(others) if others else "none"
    return values, text


def _too_few(table: Mapping[str, Any], flat: str, sharp: str) -> str | None:
    """The undecided reason when a method has fewer than MIN_RUNS_PER_METHOD converged runs."""
    short = []
    for method in (flat, sharp):
        row = table.get(method) or {}
        n = row.get("converged")
        if n is None:  # an older table: converged count from the statuses
            n = sum(s == CONVERGED for s in row.get("statuses", []))
        if n < MIN_RUNS_PER_METHOD:
            _, others = _method_minima(table, method)
            short.append(f"{method}: {n} of {row.get('seeds', 0)} converged (others: {others})")
    if not short:
        return None
    return f"fewer than {MIN_RUNS_PER_METHOD} converged runs per method: " + "; ".join(short)


def _counted_runs(table: Mapping[str, Any], method: str) -> list[Mapping[str, Any]]:
    """The per-run entries of Table S1 behind a method's lambda_max values (by seed)."""
    row = table.get(method) or {}
    seeds = (row.get("lambda_max") or {}).get("seeds")
    if seeds is None:
        seeds = row.get("converged_seeds") or []
    return [r for r in row.get("runs") or [] if r.get("seed") in set(seeds)]


def _lr_times_lambda(run: Mapping[str, Any], method_lr: Any) -> float | None:
    """A run's lr x lambda_max: from its own lr, else its stored product, else the method's lr
    (Table S1's row); None when none is known."""
    lam = run.get("lambda_max")
    if run.get("lr") is not None and lam is not None:
        return float(run["lr"]) * float(lam)
    if run.get("lr_times_lambda_max") is not None:
        return float(run["lr_times_lambda_max"])
    if method_lr is not None and lam is not None:
        return float(method_lr) * float(lam)
    return None


def comparability(table: Mapping[str, Any], flat: str, sharp: str) -> dict[str, Any]:
    """Claim 5's precondition (issue 23, fixed in advance): the paper's two minima have equal
    training loss (Table S1: 0.0269 vs 0.0274) and SGD's sits well inside its stability limit
    (1.76 x 0.5 = 0.88 of 2). Comparable when |mean loss sharp / mean loss flat - 1| <=
    MAX_LOSS_MISMATCH and the flat method's mean lr x lambda_max over its counted runs is
    <= MAX_FLAT_LR_LAMBDA. `comparable` is None when either number is unknown."""
    losses = [
        ((table.get(m) or {}).get("final_train_loss") or {}).get("mean") for m in (flat, sharp)
    ]
    loss_ratio = losses[1] / losses[0] if None not in losses and losses[0] else None
    method_lr = (table.get(flat) or {}).get("lr")
    products = [_lr_times_lambda(r, method_lr) for r in _counted_runs(table, flat)]
    lr_lambda = float(np.mean(products)) if products and None not in products else None
    loss_ok = None if loss_ratio is None else abs(loss_ratio - 1) <= MAX_LOSS_MISMATCH
    edge_ok = None if lr_lambda is None else lr_lambda <= MAX_FLAT_LR_LAMBDA
    failed = []
    if loss_ok is False:
        failed.append(
            f"mean final training loss {sharp} / {flat} {loss_ratio:.3g} (needs 1 ± "
            f"{MAX_LOSS_MISMATCH:g}: the paper's minima have equal loss)"
        )
    if edge_ok is False:
        failed.append(
            f"{flat}'s mean lr x lambda_max {lr_lambda:.3g} > {MAX_FLAT_LR_LAMBDA:g} (at the "
            "edge of stability; the paper's SGD: 0.88)"
        )
    unknown = [
        name
        for name, ok in (("training losses", loss_ok), (f"{flat}'s lr x lambda_max", edge_ok))
        if ok is None
    ]
    return {
        "loss_ratio": loss_ratio,
        "flat_lr_times_lambda_max": lr_lambda,
        "flat_lr_times_lambda_max_runs": products,
        "comparable": False if failed else (None if unknown else True),
        "failed": failed,
        "unknown": unknown,
    }


def claim_adam_sharper(table: Mapping[str, Any], flat: str = "sgd", sharp: str = "adam") -> Claim:
    """Table S1: Adam's minima sharper than SGD's by a factor like the paper's. First the
    comparability of the two methods' minima (`comparability`), then two separate lines:
    direction (Adam sharper, exact Mann-Whitney) and magnitude (the Welch t-interval of the
    ratio of geometric means against the paper's range)."""
    ratio, paper_lo, paper_hi = adam_sgd_ratio_interval(CI_LEVEL)
    claim = Claim(
        "adam_sharper",
        "Adam's minima are several times sharper than SGD's (paper: roughly 6x; Table S1).",
        UNDECIDED,
        "",
        statistic=(
            "comparability: the ratio of mean final training losses (Adam / SGD) and SGD's mean "
            "lr x lambda_max over its counted runs; direction: exact one-sided Mann-Whitney p "
            "(Adam lambda_max > SGD's) over converged runs; magnitude: the ratio of geometric "
            "means of lambda_max (Adam / SGD) with a 95% Welch t-interval on the difference "
            "of mean logs"
        ),
        threshold=(
            f"not comparable (undecided): |loss ratio - 1| > {MAX_LOSS_MISMATCH:g} or SGD's "
            f"lr x lambda_max > {MAX_FLAT_LR_LAMBDA:g}. If comparable: holds when direction "
            f"holds (p < {ALPHA}) and the ratio interval overlaps the paper's range "
            f"[{paper_lo:.2f}, {paper_hi:.2f}]; does not hold when SGD is significantly "
            f"sharper (p < {ALPHA}) or the ratio interval lies entirely below {paper_lo:.2f}; "
            "else undecided"
        ),
        threshold_source=(
            f"Table S1: 12.9 ± 2.2 vs 1.76 ± 0.00943 (4 seeds each), ratio {ratio:.2f}, "
            f"95% range [{paper_lo:.2f}, {paper_hi:.2f}] from the t-intervals of both means; "
            f"training losses 0.0269 vs 0.0274 (equal). Fixed in advance (issue 23): the "
            f"{MAX_LOSS_MISMATCH:.0%} loss band and {MAX_FLAT_LR_LAMBDA:g} = 0.9 x SGD's "
            f"limit 2; one-sided alpha = {ALPHA}"
        ),
        numbers={"paper_ratio": ratio, "paper_ratio_range": [paper_lo, paper_hi]},
    )
    too_few = _too_few(table, flat, sharp)
    lam_f, others_f = _method_minima(table, flat)
    lam_s, others_s = _method_minima(table, sharp)
    claim.uncertainty = {f"{flat}_lambda_max": lam_f, f"{sharp}_lambda_max": lam_s}
    if too_few:
        claim.reason = claim.evidence = too_few
        return claim
    floor = smallest_exact_mwu_p(len(lam_f), len(lam_s))
    p_sharper = mwu_greater(lam_s, lam_f)
    p_flatter = mwu_greater(lam_f, lam_s)
    observed, lo, hi = geometric_mean_ratio_ci(lam_s, lam_f)
    direction = HOLDS if p_sharper < ALPHA else (FAILS if p_flatter < ALPHA else UNDECIDED)
    if hi < paper_lo:
        magnitude, magnitude_text = (
            FAILS,
            f"below the paper's range [{paper_lo:.2f}, {paper_hi:.2f}]",
        )
    elif lo > paper_hi:
        magnitude, magnitude_text = (
            UNDECIDED,
            f"above the paper's range [{paper_lo:.2f}, {paper_hi:.2f}]",
        )
    else:
        magnitude, magnitude_text = (
            HOLDS,
            f"overlaps the paper's range [{paper_lo:.2f}, {paper_hi:.2f}]",
        )
    if direction is UNDECIDED:
        direction_text = (
            f"with {len(lam_s)} vs {len(lam_f)} runs the smallest exact p is {floor:.3g}, not "
            f"below {ALPHA}"
            if floor >= ALPHA
            else "the per-seed values overlap (rank test not significant)"
        )
    else:
        direction_text = f"{sharp if direction else flat} significantly sharper"
    comparable = comparability(table, flat, sharp)
    claim.numbers.update(
        {
            "ratio": observed,
            "ratio_of_means": float(np.mean(lam_s) / np.mean(lam_f)),
            "comparability": comparable,
            "direction": {
                "verdict": _verdict_word(direction),
                "p_adam_sharper": p_sharper,
                "p_sgd_sharper": p_flatter,
                "text": direction_text,
            },
            "magnitude": {
                "verdict": _verdict_word(magnitude),
                "ratio": observed,
                "ratio_ci": [lo, hi],
                "text": magnitude_text,
            },
        }
    )
    claim.uncertainty.update(
        {
            "p_adam_sharper": p_sharper,
            "p_sgd_sharper": p_flatter,
            "ratio_ci": [lo, hi],
            "smallest_possible_p": floor,
        }
    )
    products = comparable["flat_lr_times_lambda_max_runs"]
    claim.evidence = (
        f"comparability: loss ratio {sharp}/{flat} {fmt(comparable['loss_ratio'])}, {flat} "
        f"lr x lambda_max {fmt(comparable['flat_lr_times_lambda_max'])} "
        f"{fmt_values([v for v in products if v is not None])}; "
        f"direction: lambda_max {sharp} {fmt_values(lam_s)}, {flat} {fmt_values(lam_f)}, "
        f"Mann-Whitney p {p_sharper:.3g} ({direction_text}) [{_verdict_word(direction)}]; "
        f"magnitude: ratio of geometric means {observed:.2f}, 95% CI {fmt_ci([lo, hi])} "
        f"{magnitude_text} (paper {ratio:.2f}) [{_verdict_word(magnitude)}]; not converged: "
        f"{flat} {others_f}, {sharp} {others_s}"
    )
    if comparable["comparable"] is False:
        claim.reason = "not comparable at this scale: " + "; ".join(comparable["failed"])
    elif comparable["comparable"] is None:
        claim.reason = "comparability unknown: no " + " and no ".join(comparable["unknown"])
    elif direction is FAILS or magnitude is FAILS:
        claim.holds = FAILS
    elif direction is HOLDS and magnitude is HOLDS:
        claim.holds = HOLDS
    else:
        failing = []
        if direction is not HOLDS:
            failing.append(f"direction: {direction_text}")
        if magnitude is not HOLDS:
            failing.append(f"magnitude: ratio interval {fmt_ci([lo, hi])} {magnitude_text}")
        claim.reason = "; ".join(failing)
    return claim


def peak_intermediate_gain(profile: Mapping[str, Any], key: str = "max_gain") -> float:
    """The largest gain up to an intermediate layer (k = 1..m-1): the highest blue dot of
    Fig. 6 before the output (the end-to-end gain is fixed by the task, not by balance)."""
    gains = list(profile[key])
    return float(max(gains[:-1] or gains))


def _converged_peaks(
    table: Mapping[str, Any], gains: Mapping[str, Sequence[dict]], a: str, b: str
) -> tuple[dict[str, list[float]], str | None]:
    """Per method (a, b), the peak intermediate gain of each converged run (Fig. 6), and the
    undecided reason when either has fewer than MIN_RUNS_PER_METHOD of them (else None)."""
    peaks = {}
    for m in (a, b):
        seeds = set((table.get(m) or {}).get("converged_seeds") or []) or None
        profiles = _converged_profiles(gains.get(m) or [], seeds)
        peaks[m] = [peak_intermediate_gain(p) for p in profiles]
    if min(len(peaks[a]), len(peaks[b])) >= MIN_RUNS_PER_METHOD:
        return peaks, None
    return peaks, (
        f"gain profiles of {len(peaks[a])} ({a}) and {len(peaks[b])} ({b}) "
        f"converged runs (need {MIN_RUNS_PER_METHOD} each)"
    )


def _converged_profiles(profiles: Sequence[Mapping[str, Any]], seeds: set | None) -> list:
    """Profiles of runs that reached a minimum: by their own status when stored, else by the
    converged seeds of Table S1."""
    kept = []
    for p in profiles:
        status = p.get("status")
        if status == CONVERGED or (status is None and seeds is not None and p.get("seed") in seeds):
            kept.append(p)
    return kept


def _peaks_test(flat_peaks: Sequence[float], sharp_peaks: Sequence[float]) -> dict[str, Any]:
    return {
        "p_flat_lower": mwu_greater(sharp_peaks, flat_peaks),
        "p_flat_higher": mwu_greater(flat_peaks, sharp_peaks),
        "median_flat": float(np.median(flat_peaks)),
        "median_sharp": float(np.median(sharp_peaks)),
    }


def gains_by_radius_tests(
    by_radius: Mapping[str, Any] | None, flat: str, sharp: str
) -> dict[str, Any]:
    """The claim-6 test repeated at each input radius of the gain search and on the radius-free
    training-input gains (results/flat_vs_sharp/gains_by_radius.json)."""
    if not by_radius:
        return {}
    runs = by_radius.get("runs", {})
    flat_runs, sharp_runs = (
        [r for r in runs.get(m, []) if r.get("status", CONVERGED) == CONVERGED]
        for m in (flat, sharp)
    )
    out: dict[str, Any] = {}
    if not flat_runs or not sharp_runs:
        return out
    for i, factor in enumerate(by_radius.get("radius_factors", [])):
        f = [peak_intermediate_gain(r["by_radius"][i]) for r in flat_runs]
        s = [peak_intermediate_gain(r["by_radius"][i]) for r in sharp_runs]
        out[f"radius x{factor:g}"] = {"flat": f, "sharp": s, **_peaks_test(f, s)}
    f = [peak_intermediate_gain(r["training_inputs"]) for r in flat_runs]
    s = [peak_intermediate_gain(r["training_inputs"]) for r in sharp_runs]
    out["training inputs"] = {"flat": f, "sharp": s, **_peaks_test(f, s)}
    return out


def claim_flat_gains_balanced(
    gains: Mapping[str, Sequence[dict]],
    flat: str = "sgd",
    sharp: str = "adam",
    table: Mapping[str, Any] | None = None,
    by_radius: Mapping[str, Any] | None = None,
) -> Claim:
    """Fig. 6 / Thm 2: per converged seed, the peak intermediate gain; SGD's lower by a rank
    test. The same test at other input radii and on the training inputs is reported beside."""
    claim = Claim(
        "flat_gains_balanced",
        "The gains of flat (SGD) solutions are more balanced than those of sharp (Adam) ones "
        "(Fig. 6).",
        UNDECIDED,
        "",
        statistic=(
            "per converged run: the peak intermediate gain max_{k<m} max_x ||h_k(x)||/||x|| "
            "(gain search at the mean training-input norm); exact one-sided Mann-Whitney p "
            "(SGD lower); beside it the same test at other radii and on the training inputs"
        ),
        threshold=(
            f"holds: p(SGD lower) < {ALPHA}; does not hold: p(SGD higher) < {ALPHA}; else "
            "undecided (overlapping per-seed values)"
        ),
        threshold_source=(
            f"fixed in advance: one-sided alpha = {ALPHA}; Fig. 6 and Thm 2(ii) give the "
            "direction (flat: restrained gains) but no number"
        ),
    )
    table = table or {}
    peaks, too_few_peaks = _converged_peaks(table, gains, flat, sharp)
    too_few = (_too_few(table, flat, sharp) if table else None) or too_few_peaks
    flat_peaks, sharp_peaks = peaks[flat], peaks[sharp]
    radius = gains_by_radius_tests(by_radius, flat, sharp)
    claim.uncertainty = {f"{flat}_peaks": flat_peaks, f"{sharp}_peaks": sharp_peaks}
    claim.numbers["by_radius"] = radius
    if too_few:
        claim.reason = claim.evidence = too_few
        return claim
    test = _peaks_test(flat_peaks, sharp_peaks)
    floor = smallest_exact_mwu_p(len(flat_peaks), len(sharp_peaks))
    claim.uncertainty.update({**test, "smallest_possible_p": floor})
    claim.evidence = (
        f"peak intermediate gain {flat} {fmt_values(flat_peaks)}, {sharp} {fmt_values(sharp_peaks)}; "
        f"Mann-Whitney p(SGD lower) {test['p_flat_lower']:.3g}"
    )
    if radius:
        claim.evidence += "; other radii: " + ", ".join(
            f"{name}: medians {v['median_flat']:.3g} vs {v['median_sharp']:.3g} "
            f"(p {v['p_flat_lower']:.3g})"
            for name, v in radius.items()
        )
    if test["p_flat_lower"] < ALPHA:
        claim.holds = HOLDS
    elif test["p_flat_higher"] < ALPHA:
        claim.holds = FAILS
    elif floor >= ALPHA:
        claim.reason = (
            f"with {len(flat_peaks)} vs {len(sharp_peaks)} runs the smallest exact p is "
            f"{floor:.3g}, not below {ALPHA}"
        )
    else:
        claim.reason = "the per-seed peaks overlap (rank test not significant)"
    return claim


def _pair_lambda(pair: Mapping[str, Any], table: Mapping[str, Any], method: str) -> float | None:
    """lambda_max of a pair's `method` end: the pair row's own value, else Table S1's entry of
    that run (by seed); None when neither has it."""
    value = pair.get(f"lambda_max_{method}")
    if value is None:
        seed = pair.get(f"{method}_seed")
        runs = (table.get(method) or {}).get("runs") or []
        value = next((r.get("lambda_max") for r in runs if r.get("seed") == seed), None)
    return None if value is None else float(value)


def sharpness_ratios(
    pairs: Sequence[dict], table: Mapping[str, Any], flat: str, sharp: str
) -> list[dict[str, Any]]:
    """Per (flat, sharp) pair: lambda_max(sharp end) / lambda_max(flat end) and whether it
    reaches MIN_SHARPNESS_RATIO (None: a lambda_max unknown, the pair does not qualify)."""
    out = []
    for pair in pairs:
        lam_f, lam_s = _pair_lambda(pair, table, flat), _pair_lambda(pair, table, sharp)
        ratio = lam_s / lam_f if lam_f and lam_s is not None else None
        out.append(
            {
                f"{flat}_seed": pair.get(f"{flat}_seed"),
                f"{sharp}_seed": pair.get(f"{sharp}_seed"),
                "ratio": ratio,
                "qualifies": ratio is not None and ratio >= MIN_SHARPNESS_RATIO,
                "flat_looks_sharper_on_line": bool(pair["flat_looks_sharper_on_line"]),
            }
        )
    return out


def claim_interpolation_misleads(
    pairs: Sequence[dict],
    table: Mapping[str, Any] | None = None,
    skipped: Sequence[dict] = (),
    flat: str = "sgd",
    sharp: str = "adam",
) -> Claim:
    """Fig. 7 / Lemma 2, counted by flat run: among the pairs of minima whose lambda_max ratio
    sharp / flat reaches MIN_SHARPNESS_RATIO (the paper's premise: a flat and a sharp minimum),
    the flat runs that look sharper on the line in all of their qualifying pairs."""
    claim = Claim(
        "interpolation_misleads",
        "Along the line between a flat and a sharp minimum, the flat one looks sharper "
        "(paper: all 16 pairs; Fig. 7, Lemma 2).",
        UNDECIDED,
        "",
        statistic=(
            f"pairs of converged ({flat}, {sharp}) runs whose lambda_max ratio {sharp} / {flat} "
            f"is >= {MIN_SHARPNESS_RATIO:g} qualify; unit: the {flat} run. k of N distinct "
            f"{flat} runs in qualifying pairs where the {flat} end has the larger curvature "
            "along the connecting line in every one of its qualifying pairs; Clopper-Pearson 95% "
            "interval of k/N (the pairs share runs, so they are not independent)"
        ),
        threshold=(
            "holds: k = N (every qualifying flat run, as the paper: all pairs); does not hold: "
            f"k <= N/2; undecided between, with no qualifying pair, with N < "
            f"{MIN_RUNS_PER_METHOD}, or with fewer than {MIN_RUNS_PER_METHOD} converged runs per "
            "method"
        ),
        threshold_source=(
            f"Sec. 6 / Fig. 7: all {PAIRS_COMPARED} of {PAIRS_COMPARED} pairs; the ratio "
            f">= {MIN_SHARPNESS_RATIO:g} fixed in advance (issue 23): Lemma 2 compares a flat "
            "with a sharp minimum, Table S1's pair differs by 7.3x"
        ),
    )
    table = table or {}
    seeds = {m: (table.get(m) or {}).get("converged_seeds") for m in (flat, sharp)}
    compared = [p for p in pairs if p.get("flat_looks_sharper_on_line") is not None]
    if seeds[flat] is not None and seeds[sharp] is not None:
        compared = [
            p
            for p in compared
            if p.get(f"{flat}_seed") in seeds[flat] and p.get(f"{sharp}_seed") in seeds[sharp]
        ]
    claim.numbers["skipped_pairs"] = list(skipped)
    too_few = _too_few(table, flat, sharp) if table else None
    if too_few is None and not compared:
        too_few = f"no pair of converged ({flat}, {sharp}) runs"
    if too_few:
        claim.reason = claim.evidence = too_few + (
            f"; {len(skipped)} pairs skipped" if skipped else ""
        )
        return claim
    ratios = sharpness_ratios(compared, table, flat, sharp)
    qualifying = [r for r in ratios if r["qualifies"]]
    excluded = [r for r in ratios if not r["qualifies"]]
    claim.numbers.update({"pair_ratios": ratios, "excluded_pairs": excluded})
    excluded_text = (
        f"{len(excluded)} of {len(ratios)} pairs excluded (ratio < {MIN_SHARPNESS_RATIO:g}): "
        + ", ".join(
            f"({r[f'{flat}_seed']}, {r[f'{sharp}_seed']}) {fmt(r['ratio'])}" for r in excluded
        )
        if excluded
        else f"all {len(ratios)} pairs qualify"
    )
    if not qualifying:
        claim.reason = (
            f"no ({flat}, {sharp}) pair has a lambda_max ratio >= {MIN_SHARPNESS_RATIO:g}: "
            f"ratios {fmt_values([r['ratio'] for r in ratios if r['ratio'] is not None])}"
        )
        claim.evidence = f"{claim.reason}; {len(skipped)} pairs skipped (a run not a minimum)"
        return claim
    by_run: dict[Any, list[bool]] = {}
    for r in qualifying:
        by_run.setdefault(r[f"{flat}_seed"], []).append(r["flat_looks_sharper_on_line"])
    shows = {seed: all(flags) for seed, flags in by_run.items()}
    n, k = len(shows), sum(shows.values())
    k_pairs = sum(r["flat_looks_sharper_on_line"] for r in qualifying)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=CI_LEVEL)
    claim.numbers.update(
        {
            "pairs": len(qualifying),
            "flat_looks_sharper": k_pairs,
            "runs": n,
            "runs_flat_looks_sharper": k,
            "per_run": shows,
        }
    )
    claim.uncertainty = {"fraction_ci": [float(ci.low), float(ci.high)], "k": k, "n": n}
    claim.evidence = (
        f"{k} of {n} {flat} runs look sharper in all their qualifying pairs (pairs: {k_pairs} "
        f"of {len(qualifying)}; paper: {PAIRS_COMPARED} of {PAIRS_COMPARED} pairs); run "
        f"fraction 95% CI {fmt_ci([ci.low, ci.high])}; {excluded_text}; {len(skipped)} pairs "
        "skipped (a run not a minimum)"
    )
    if n < MIN_RUNS_PER_METHOD:
        claim.reason = (
            f"{n} {flat} run(s) in qualifying pairs (need {MIN_RUNS_PER_METHOD}): too few to "
            "judge by runs"
        )
    elif k == n:
        claim.holds = HOLDS
    elif k <= n / 2:
        claim.holds = FAILS
    else:
        claim.reason = (
            f"most but not all {flat} runs ({k} of {n}) look sharper in all their qualifying "
            "pairs; the paper saw all pairs"
        )
    return claim


# --- beyond the paper: further methods (SAM) against the sharp one -------------------------

METHOD_LABELS = {"sgd": "SGD", "adam": "Adam", "sam": "SAM"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method.upper())


def claim_method_flat(
    table: Mapping[str, Any],
    gains: Mapping[str, Sequence[dict]],
    method: str,
    flat: str = "sgd",
    sharp: str = "adam",
) -> Claim:
    """Is `method`'s minimum flat in the paper's sense? Claims 5 and 6's tests (lambda_max,
    Table S1; peak intermediate gain, Fig. 6 / Thm 2) applied to `method` against the sharp
    method; the ratio to the flat method's lambda_max is reported beside, without a verdict."""
    claim = Claim(
        f"{method}_flat",
        f"{method_label(method)}'s minima are flat in the paper's sense: a smaller λ_max and "
        f"more balanced gains than {method_label(sharp)}'s (Table S1, Fig. 6, Thm 2).",
        UNDECIDED,
        "",
        statistic=(
            f"over converged runs: exact one-sided Mann-Whitney p for lambda_max({method}) < "
            f"lambda_max({sharp}) and for peak intermediate gain({method}) < {sharp}'s (the "
            f"statistics of claims 5 and 6); beside them the lambda_max ratio "
            f"{method} / {flat} as a ratio of geometric means with a 95% Welch t-interval on "
            "the difference of mean logs (descriptive)"
        ),
        threshold=(
            f"holds: both p < {ALPHA}; does not hold: either reversed (p < {ALPHA} for "
            f"{method} sharper or less balanced); else undecided"
        ),
        threshold_source=(
            f"fixed in advance (before any {method} run): one-sided alpha = {ALPHA}, the tests "
            "of claims 5 and 6; the paper has no SAM numbers"
        ),
    )
    lam_m, others_m = _method_minima(table, method)
    lam_s, others_s = _method_minima(table, sharp)
    lam_f, _ = _method_minima(table, flat)
    peaks, too_few_peaks = _converged_peaks(table, gains, method, sharp)
    too_few = _too_few(table, method, sharp) or too_few_peaks
    claim.uncertainty = {
        f"{method}_lambda_max": lam_m,
        f"{sharp}_lambda_max": lam_s,
        f"{method}_peaks": peaks[method],
        f"{sharp}_peaks": peaks[sharp],
    }
    if too_few:
        claim.reason = claim.evidence = too_few
        return claim
    p_lam = mwu_greater(lam_s, lam_m)
    p_lam_rev = mwu_greater(lam_m, lam_s)
    p_gain = mwu_greater(peaks[sharp], peaks[method])
    p_gain_rev = mwu_greater(peaks[method], peaks[sharp])
    floor = smallest_exact_mwu_p(len(lam_m), len(lam_s))
    claim.uncertainty.update(
        {
            f"p_{method}_flatter": p_lam,
            f"p_{method}_sharper": p_lam_rev,
            f"p_{method}_gains_lower": p_gain,
            f"p_{method}_gains_higher": p_gain_rev,
            "smallest_possible_p": floor,
        }
    )
    vs_flat = ""
    if len(lam_f) >= 2 and len(lam_m) >= 2:
        ratio, lo, hi = geometric_mean_ratio_ci(lam_m, lam_f)
        claim.numbers[f"ratio_to_{flat}"] = ratio
        claim.uncertainty[f"ratio_to_{flat}_ci"] = [lo, hi]
        vs_flat = (
            f"; lambda_max {method} / {flat} (ratio of geometric means) {ratio:.2f}, 95% CI "
            f"{fmt_ci([lo, hi])}"
        )
    claim.evidence = (
        f"lambda_max {method} {fmt_values(lam_m)}, {sharp} {fmt_values(lam_s)} (p {p_lam:.3g}); "
        f"peak intermediate gain {method} {fmt_values(peaks[method])}, {sharp} "
        f"{fmt_values(peaks[sharp])} (p {p_gain:.3g}){vs_flat}; not converged: {method} "
        f"{others_m}, {sharp} {others_s}"
    )
    if p_lam_rev < ALPHA or p_gain_rev < ALPHA:
        claim.holds = FAILS
    elif p_lam < ALPHA and p_gain < ALPHA:
        claim.holds = HOLDS
    elif floor >= ALPHA:
        claim.reason = f"with these run counts the smallest exact p is {floor:.3g}"
    else:
        claim.reason = "lambda_max or the gains overlap between the methods (not significant)"
    return claim


def claim_method_interpolation(
    pairs: Sequence[dict],
    table: Mapping[str, Any],
    skipped: Sequence[dict],
    method: str,
    sharp: str = "adam",
) -> Claim:
    """Claim 7's test for `method`'s minima against the sharp method's: does the interpolation
    line make `method`'s end look sharper (Lemma 2), as it does for SGD's?"""
    claim = claim_interpolation_misleads(pairs, table, skipped, method, sharp)
    claim.name = f"{method}_interpolation_misleads"
    claim.statement = (
        f"Along the line between a {method_label(method)} minimum and an "
        f"{method_label(sharp)} one, the {method_label(method)} end looks sharper, as the flat "
        "end does in Fig. 7 (Lemma 2)."
    )
    claim.threshold_source = "claim 7's rule (the paper: all 16 SGD/Adam pairs), fixed in advance"
    return claim


def judged_both_ways(strict: Claim, with_edge: Claim) -> Claim:
    """One claim from its two readings (issue 23 item 2): edge-of-stability runs not counted
    as minima (`strict`) and counted (`with_edge`). Where they agree the verdict stands (the
    strict reading's evidence and uncertainty are shown); where they differ the claim is
    `undecided (edge-sensitive)`, since which runs are minima then decides it. Both readings
    are kept in `readings`."""
    claim = strict
    claim.readings = {
        STRICT: _reading(strict),
        WITH_EDGE: _reading(with_edge),
    }
    if strict.holds is not with_edge.holds:
        claim.reason = (
            f"edge-sensitive: {strict.verdict} with converged runs only, {with_edge.verdict} "
            "with edge-of-stability runs counted as minima"
        )
        claim.holds, claim.edge_sensitive = UNDECIDED, True
    return claim


def _reading(claim: Claim) -> dict[str, Any]:
    return _plain(
        {
            "verdict": claim.verdict,
            "holds": claim.holds,
            "reason": claim.reason,
            "evidence": claim.evidence,
            "uncertainty": claim.uncertainty,
            "numbers": claim.numbers,
        }
    )


def variant_unusable(inputs: ReportInputs) -> str | None:
    """Why the rounding variant's verdicts cannot be compared with this run's (None: they can):
    none saved, another profile, or other rules."""
    variant = inputs.variant
    if not variant:
        return "no rounding variant has been run (python -m pipelines.verdict_stability)"
    if variant.get("profile") != inputs.profile:
        return f"the saved variant ran profile {variant.get('profile')!r}, not {inputs.profile!r}"
    frozen = (variant.get("rules") or {}).get("frozen_at")
    if frozen != RULES_FROZEN_AT:
        return (
            f"the saved variant ran under other rules (frozen at {frozen}, now {RULES_FROZEN_AT})"
        )
    return None


def judged_across_runs(claims: Sequence[Claim], variant: Mapping[str, Any]) -> list[Claim]:
    """Each claim against the verdict a rounding-only rerun of the pipeline gave it (issue 23
    item 7): where they differ, rounding alone decides it, and it is `undecided (sensitive)`."""
    for claim in claims:
        other = (variant.get(claim.name) or {}).get("verdict")
        claim.stability = {"this_run": claim.verdict, "variant": other}
        if other is not None and other != claim.verdict:
            claim.reason = f"sensitive to rounding: {claim.verdict} here, {other} in the variant"
            claim.holds, claim.sensitive = UNDECIDED, True
    return claims


def check_claims(inputs: ReportInputs) -> list[Claim]:
    """Every claim of Sec. 6, in the paper's order, each judged with and without the
    edge-of-stability runs counted as minima (`judged_both_ways`), then against the rounding
    variant's verdict when one is saved for this profile and these rules."""
    claims = [
        judged_both_ways(strict, with_edge)
        for strict, with_edge in zip(
            paper_claims(inputs), paper_claims(inputs.counting_edge_as_minima())
        )
    ]
    if variant_unusable(inputs) is None:
        judged_across_runs(claims, inputs.variant.get("claims") or {})
    return claims


def check_beyond_claims(inputs: ReportInputs) -> list[Claim]:
    """The further methods' claims (`beyond_claims`), each judged like the paper's."""
    claims = [
        judged_both_ways(strict, with_edge)
        for strict, with_edge in zip(
            beyond_claims(inputs), beyond_claims(inputs.counting_edge_as_minima())
        )
    ]
    if variant_unusable(inputs) is None:
        judged_across_runs(claims, inputs.variant.get("beyond_the_paper") or {})
    return claims


def paper_claims(inputs: ReportInputs) -> list[Claim]:
    """Every claim of Sec. 6 in one reading of the inputs, in the paper's order. Table S1's
    methods are read in params.yaml order (the flat one first)."""
    flat, sharp = inputs.methods[:2]
    table = inputs.table_s1
    return [
        claim_larger_steps_flatter(inputs.identity, inputs.boundary_probes),
        claim_lr_max_one_over_m(inputs.boundary),
        claim_flattest_linear_in_m(inputs.identity, inputs.boundary, inputs.boundary_probes),
        claim_he_sharper(inputs.identity, inputs.he),
        claim_adam_sharper(table, flat, sharp),
        claim_flat_gains_balanced(inputs.gains, flat, sharp, table, inputs.gains_by_radius),
        claim_interpolation_misleads(inputs.pairs, table, inputs.skipped_pairs, flat, sharp),
    ]


def beyond_claims(inputs: ReportInputs) -> list[Claim]:
    """For each method beyond the paper's two (Table S1's third and later rows, e.g. SAM): is
    its minimum flat in the paper's sense, and does the interpolation picture mislead for it?"""
    flat, sharp, *others = inputs.methods
    claims = []
    for method in others:
        pairs = [p for p in inputs.other_pairs if p.get("method") == method]
        skipped = inputs.others_skipped(method)
        claims.append(claim_method_flat(inputs.table_s1, inputs.gains, method, flat, sharp))
        claims.append(claim_method_interpolation(pairs, inputs.table_s1, skipped, method, sharp))
    return claims
