"""Issue 23 item 4, the rules fixed in advance: the ratio interval's coverage at n = 3-4 (by
simulation), claim 7's sharpness-ratio filter counted by run, claim 5's comparability with its
direction and magnitude lines, and claim 4's lr_stable sign test with the combination rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from src.paper.statistics import CI_LEVEL, geometric_mean_ratio_ci
from src.report.grid_claims import (
    claim_he_sharper,
    combine_verdicts,
    he_lr_stable_test,
    lr_stable_per_depth,
)
from src.report.minima_claims import (
    MAX_FLAT_LR_LAMBDA,
    MIN_SHARPNESS_RATIO,
    claim_adam_sharper,
    claim_interpolation_misleads,
    comparability,
)

# --- the ratio interval: a Welch t-interval on the log scale ---------------------------------


@pytest.mark.parametrize("n_num, n_den", [(3, 3), (3, 4), (4, 4)])
def test_ratio_interval_covers_at_small_n(n_num, n_den):
    """Log-normal samples (sigma of the log 0.3), true ratio 2: the 95% interval covers it in
    at least 90% of 2,000 replications (a percentile bootstrap of the ratio of means: ~82%)."""
    rng = np.random.default_rng(2023)
    covered = 0
    for _ in range(2000):
        num = np.exp(math.log(2.0) + 0.3 * rng.standard_normal(n_num))
        den = np.exp(0.3 * rng.standard_normal(n_den))
        _, lo, hi = geometric_mean_ratio_ci(num, den)
        covered += lo <= 2.0 <= hi
    assert covered / 2000 >= 0.90
    assert covered / 2000 <= 0.99  # an honest interval, not an arbitrarily wide one


def test_ratio_interval_values():
    ratio, lo, hi = geometric_mean_ratio_ci([2.0, 8.0], [1.0, 1.0, 1.0])
    assert ratio == pytest.approx(4.0)  # sqrt(16) / 1
    # the denominator has no spread: se from the numerator's logs alone, Welch dof = n1 - 1
    se = math.sqrt(np.var(np.log([2.0, 8.0]), ddof=1) / 2)
    half = stats.t.ppf(0.5 + CI_LEVEL / 2, 1) * se
    assert lo == pytest.approx(4.0 * math.exp(-half)) and hi == pytest.approx(4.0 * math.exp(half))
    assert geometric_mean_ratio_ci([3.0, 3.0], [1.5, 1.5]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        geometric_mean_ratio_ci([1.0], [1.0, 2.0])


# --- Table S1-like inputs ---------------------------------------------------------------------


def method_row(lams, lr=None, loss=0.03, **run_extra):
    runs = [
        {"seed": i, "status": "converged", "lambda_max": v, **({"lr": lr} if lr else {})}
        | run_extra
        for i, v in enumerate(lams)
    ]
    return {
        "seeds": len(runs),
        "converged": len(runs),
        "converged_seeds": list(range(len(runs))),
        "statuses": ["converged"] * len(runs),
        "not_converged": [],
        "runs": runs,
        "final_train_loss": {"mean": loss},
        "lambda_max": {"values": list(lams), "seeds": list(range(len(runs)))},
    }


SGD = [1.75, 1.76, 1.77, 1.76]
ADAM = [10.0, 12.0, 14.0, 16.0]


def s1(sgd=SGD, adam=ADAM, sgd_lr=0.5, sgd_loss=0.03, adam_loss=0.03):
    return {"sgd": method_row(sgd, sgd_lr, sgd_loss), "adam": method_row(adam, 3e-4, adam_loss)}


# --- claim 7: pairs with a lambda_max ratio >= 2, counted by flat run ---------------------------


def pair(f, s, flag, lam_f=None, lam_s=None):
    out = {"sgd_seed": f, "adam_seed": s, "flat_looks_sharper_on_line": flag}
    if lam_f is not None:
        out |= {"lambda_max_sgd": lam_f, "lambda_max_adam": lam_s}
    return out


def test_interpolation_counts_only_pairs_with_ratio_two():
    assert MIN_SHARPNESS_RATIO == 2.0
    t = s1(sgd=[1.0, 1.0, 1.0], adam=[3.0, 1.5, 3.0])
    # adam seed 1 is only 1.5x sharper: its pairs are left out, whatever they show
    pairs = [pair(f, s, s != 1) for f in range(3) for s in range(3)]
    claim = claim_interpolation_misleads(pairs, t)
    assert claim.holds is True
    assert claim.numbers["pairs"] == 6 and claim.numbers["runs"] == 3
    excluded = claim.numbers["excluded_pairs"]
    assert [(e["sgd_seed"], e["adam_seed"]) for e in excluded] == [(0, 1), (1, 1), (2, 1)]
    assert [e["ratio"] for e in excluded] == pytest.approx([1.5] * 3)
    assert "3 of 9 pairs excluded (ratio < 2): (0, 1) 1.5" in claim.evidence
    # counted, those pairs would have broken "all pairs"
    assert sum(not p["flat_looks_sharper_on_line"] for p in pairs) == 3


def test_interpolation_ratio_from_the_pair_rows_first():
    """The pair's own lambda_max values win over Table S1's (here: ratio 1 in the table,
    3 in the pair rows)."""
    t = s1(sgd=[1.0, 1.0, 1.0], adam=[1.0, 1.0, 1.0])
    pairs = [pair(f, s, True, 1.0, 3.0) for f in range(3) for s in range(3)]
    claim = claim_interpolation_misleads(pairs, t)
    assert claim.holds is True and claim.numbers["excluded_pairs"] == []
    assert {r["ratio"] for r in claim.numbers["pair_ratios"]} == {3.0}


def test_interpolation_undecided_without_a_qualifying_pair():
    t = s1(sgd=[3.0, 3.5, 3.2], adam=[3.1, 3.4, 3.6])
    pairs = [pair(f, s, f == 0) for f in range(3) for s in range(3)]
    claim = claim_interpolation_misleads(pairs, t)
    assert claim.holds is None
    assert claim.reason.startswith("no (sgd, adam) pair has a lambda_max ratio >= 2: ratios [")
    assert len(claim.numbers["excluded_pairs"]) == 9
    assert max(r["ratio"] for r in claim.numbers["pair_ratios"]) == pytest.approx(3.6 / 3.0)


def test_interpolation_interval_over_runs_not_pairs():
    """3 SGD runs x 3 Adam runs: SGD seed 2 looks sharper in 2 of its 3 pairs. By pairs 8 of 9;
    by runs 2 of 3 (the interval over 3 runs, not 9 pairs); seed 1 failing too: 1 of 3, not."""
    t = s1(sgd=[1.0, 1.0, 1.0], adam=[5.0, 5.0, 5.0])
    flags = {(2, 2): False}
    pairs = [pair(f, s, flags.get((f, s), True)) for f in range(3) for s in range(3)]
    claim = claim_interpolation_misleads(pairs, t)
    assert claim.holds is None and "(2 of 3)" in claim.reason
    assert claim.numbers["flat_looks_sharper"] == 8 and claim.numbers["pairs"] == 9
    assert claim.numbers["per_run"] == {0: True, 1: True, 2: False}
    ci = stats.binomtest(2, 3).proportion_ci(confidence_level=CI_LEVEL)
    assert claim.uncertainty["fraction_ci"] == pytest.approx([ci.low, ci.high])
    assert claim.uncertainty["n"] == 3 and "unit: the sgd run" in claim.statistic
    flags[(1, 0)] = False
    pairs = [pair(f, s, flags.get((f, s), True)) for f in range(3) for s in range(3)]
    fails = claim_interpolation_misleads(pairs, t)
    assert fails.holds is False and fails.numbers["runs_flat_looks_sharper"] == 1


def test_interpolation_undecided_with_fewer_than_three_qualifying_runs():
    """Two SGD runs reach the ratio, one does not: 2 of 2 is no verdict by runs."""
    t = s1(sgd=[1.0, 1.0, 4.0], adam=[5.0, 5.0, 5.0])
    pairs = [pair(f, s, True) for f in range(3) for s in range(3)]
    claim = claim_interpolation_misleads(pairs, t)
    assert claim.holds is None and claim.numbers["runs"] == 2
    assert claim.reason.startswith("2 sgd run(s) in qualifying pairs (need 3)")


# --- claim 5: comparability first, then direction and magnitude --------------------------------


def test_adam_sharper_not_comparable_by_loss():
    claim = claim_adam_sharper(s1(adam_loss=0.013))  # Adam at 0.43x SGD's training loss
    assert claim.holds is None
    assert claim.reason.startswith("not comparable at this scale:")
    assert "mean final training loss adam / sgd 0.433" in claim.reason
    assert claim.numbers["comparability"]["loss_ratio"] == pytest.approx(0.013 / 0.03)
    # the two lines are still computed and reported
    assert claim.numbers["direction"]["verdict"] == "holds"
    assert claim.numbers["magnitude"]["verdict"] == "holds"
    assert "direction:" in claim.evidence and "magnitude:" in claim.evidence
    # within 20%: comparable, and it holds
    assert claim_adam_sharper(s1(adam_loss=0.035)).holds is True


def test_adam_sharper_not_comparable_at_the_edge():
    edge = [3.7, 3.8, 3.9, 3.75]  # x lr 0.5: mean 1.89 > 1.8
    claim = claim_adam_sharper(s1(sgd=edge, adam=[30.0, 27.0, 28.0, 25.0]))
    assert claim.holds is None
    assert claim.reason.startswith("not comparable at this scale:")
    assert f"> {MAX_FLAT_LR_LAMBDA:g}" in claim.reason
    assert claim.numbers["comparability"]["flat_lr_times_lambda_max"] == pytest.approx(
        0.5 * np.mean(edge)
    )


def test_comparability_sources_of_lr_times_lambda():
    t = s1(sgd_lr=None)
    assert comparability(t, "sgd", "adam")["comparable"] is None
    unknown = claim_adam_sharper(t)
    assert unknown.holds is None and unknown.reason.startswith("comparability unknown")
    # the stored product, else the method's lr
    for run, v in zip(t["sgd"]["runs"], (1.9, 1.9, 1.9, 1.9)):
        run["lr_times_lambda_max"] = v
    assert comparability(t, "sgd", "adam")["comparable"] is False
    t = s1(sgd_lr=None)
    t["sgd"]["lr"] = 0.5
    check = comparability(t, "sgd", "adam")
    assert check["comparable"] is True
    assert check["flat_lr_times_lambda_max"] == pytest.approx(0.5 * np.mean(SGD))


def test_adam_sharper_direction_and_magnitude_apart():
    # direction holds, magnitude above the paper's range: undecided, naming the magnitude
    far = claim_adam_sharper(s1(adam=[60.0, 62.0, 64.0, 66.0]))
    assert far.holds is None and far.reason.startswith("magnitude:")
    assert "above the paper's range" in far.reason
    assert far.numbers["direction"]["verdict"] == "holds"
    assert far.numbers["magnitude"]["verdict"] == "undecided"
    # direction holds, magnitude below the paper's range: does not hold
    twice = claim_adam_sharper(s1(adam=[3.4, 3.5, 3.6, 3.55]))
    assert twice.holds is False and twice.numbers["direction"]["verdict"] == "holds"
    assert twice.numbers["magnitude"]["verdict"] == "does not hold"
    # magnitude consistent, direction at its floor (3 vs 3): undecided, the floor named
    floor = claim_adam_sharper(s1(sgd=SGD[:3], adam=[8.0, 30.0, 12.0]))
    assert floor.numbers["magnitude"]["verdict"] == "holds"
    assert floor.holds is None
    assert floor.reason.startswith("direction: with 3 vs 3 runs the smallest exact p is 0.05")


# --- claim 4: lr_stable per depth, a sign test, and the combination rule -----------------------


def grid(depths, statuses, lam=1.0):
    """Rows for each depth and step size, `statuses` {lr: status}."""
    return [
        {"depth": d, "lr": lr, "seed": 0, "status": st, "reason": None, "lambda_max": lam}
        for d in depths
        for lr, st in statuses.items()
    ]


LRS = (0.5, 1.0, 2.0, 4.0)


def test_lr_stable_per_depth():
    rows = grid([2], dict(zip(LRS, ["converged", "plateau", "unstable", "diverged"])))
    rows += grid([4], dict(zip(LRS, ["diverged", "converged", "converged", "diverged"])))
    rows += grid([6], dict(zip(LRS, ["converged", "budget_exhausted", "plateau", "plateau"])))
    out = lr_stable_per_depth(rows)
    assert out[2] == {"lr_stable": 1.0, "first_failure_lr": 2.0, "diverged": 1, "unstable": 1}
    assert out[4]["lr_stable"] == 0.0 and out[4]["diverged"] == 2  # the smallest step failed
    assert out[6]["lr_stable"] is None  # a plateau or a spent budget does not bound


DEPTHS5 = (2, 3, 4, 5, 6)
ID_OK = dict(zip(LRS, ["converged", "converged", "converged", "diverged"]))  # lr_stable 2


def test_he_lr_stable_sign_test_three_ways():
    he_low = grid(DEPTHS5, dict(zip(LRS, ["plateau", "diverged", "diverged", "diverged"])))
    test = he_lr_stable_test(grid(DEPTHS5, ID_OK), he_low)
    assert test["holds"] is True and test["n"] == 5 and test["he_lower"] == 5
    assert test["p_he_lower"] == pytest.approx(1 / 32)
    assert test["per_depth"][3]["he"]["lr_stable"] == 0.5
    assert test["per_depth"][3]["identity"]["lr_stable"] == 2.0
    assert test["per_depth"][3]["he"]["diverged"] == 3

    id_low = grid(DEPTHS5, dict(zip(LRS, ["converged", "diverged", "diverged", "diverged"])))
    he_high = grid(DEPTHS5, ID_OK)
    assert he_lr_stable_test(id_low, he_high)["holds"] is False

    four = he_lr_stable_test(grid(DEPTHS5[:4], ID_OK), he_low)
    assert four["holds"] is None and four["reason"].startswith("4 depths")
    # a depth where He never fails is not bounded: left out and named
    unbounded = he_lr_stable_test(
        grid(DEPTHS5, ID_OK), he_low + grid([7], dict(zip(LRS, ["converged"] * 4)))
    )
    assert unbounded["not_bounded"] == [7] and unbounded["n"] == 5


def test_combine_verdicts_rule():
    assert combine_verdicts(True, None) is True and combine_verdicts(None, True) is True
    assert combine_verdicts(True, True) is True
    assert combine_verdicts(False, None) is False and combine_verdicts(False, False) is False
    assert combine_verdicts(True, False) is None and combine_verdicts(None, None) is None


def test_he_sharper_combines_the_two_tests():
    # no matched minima (test 1 undecided), He's lr_stable lower at 5 depths: holds
    he_low = grid(DEPTHS5, dict(zip(LRS, ["plateau", "diverged", "diverged", "diverged"])))
    holds = claim_he_sharper(grid(DEPTHS5, ID_OK), he_low)
    assert holds.holds is True
    assert holds.numbers["tests"] == {"matched_cells": "undecided", "lr_stable": "holds"}
    assert "m=2: identity 2 (1 diverged), he 0.5 (3 diverged)" in holds.evidence
    # He sharper at 10 matched cells, but its lr_stable higher at 5 depths: undecided
    identity = grid(DEPTHS5, dict(zip(LRS, ["converged", "converged", "diverged", "diverged"])))
    he = grid(DEPTHS5, ID_OK, lam=3.0)
    conflict = claim_he_sharper(identity, he)
    assert conflict.holds is None
    assert conflict.numbers["tests"] == {"matched_cells": "holds", "lr_stable": "does not hold"}
    assert conflict.reason.startswith("matched cells: holds; lr_stable: does not hold")
    # both undecided: the reason lists both
    neither = claim_he_sharper(grid(DEPTHS5[:2], ID_OK), he_low[:8])
    assert neither.holds is None
    assert "matched cells: undecided (0 cells" in neither.reason
    assert "lr_stable: undecided (2 depths" in neither.reason
