"""Claims 1-4 of Sec. 6, from the step-size grids and the bisection of the stability boundary
(Figs 4-5): larger steps flatter, lr_max ~ 1/m, the flattest minimum linear in m, He init
sharper than identity init. Each returns a `Claim` with its test, threshold and evidence."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from src.core.status import DIVERGED, STABILITY_FAILURES, UNSTABLE
from src.paper.boundary import with_probes
from src.paper.statistics import (
    ALPHA,
    contains,
    signed_rank_p,
    spearman_one_sided,
)
from src.paper.tables import flattest_per_depth, minima
from src.report.claim import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Claim,
    fmt,
    fmt_ci,
    fmt_values,
    slope_interval,
    statuses_text,
    verdict_word,
)

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
        "matched_cells": verdict_word(cells_holds),
        "lr_stable": verdict_word(lr_test["holds"]),
    }
    claim.evidence = (
        f"(1) {cells_text} [{verdict_word(cells_holds)}]; (2) {lr_text} "
        f"[{verdict_word(lr_test['holds'])}]; flattest per depth He vs identity: "
        f"{flattest or 'n/a'}; runs: {runs_text}"
    )
    claim.holds = combine_verdicts(cells_holds, lr_test["holds"])
    if claim.holds is UNDECIDED:
        claim.reason = (
            f"matched cells: {verdict_word(cells_holds)}"
            + (f" ({cells_reason})" if cells_reason else "")
            + f"; lr_stable: {verdict_word(lr_test['holds'])}"
            + (f" ({lr_test['reason']})" if lr_test["reason"] else "")
        )
    return claim
