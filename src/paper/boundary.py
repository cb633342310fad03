"""Tables and the power-law fit of the stability boundary lr_max(m), from the bisection's
per-depth outcomes (src.experiments.boundary) and the runs behind them. Never trains.

Writes nothing itself: the `boundary` stage stores what these return (boundary.json,
boundary.csv, lr_max.csv) and draws Fig. 4d from it (src.paper.boundary_figure).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from src.core.status import CONVERGED, DIVERGED, EDGE_OF_STABILITY, UNSTABLE
from src.paper.statistics import line_fit
from src.paper.tables import flattest_per_depth

# A depth's bracket state (src.experiments.boundary bisects; boundary.json's `state`).
BRACKETED = "bracketed"  # a minimum at lo, a stability failure at hi
OPEN_ABOVE = "open_above"  # minima, but no stability failure above the largest one
NO_MINIMUM = "no_minimum"  # no minimum at all

# The two readings of a bracket (issue 23, item 3), fixed in advance: which statuses count as a
# minimum (lo). The strict reading is boundary.json's per-depth entries and `fit`; the reading
# with edge-of-stability runs counted as minima is each entry's `with_edge` and `fit_with_edge`
# (`boundary_counting_edge` puts it in the strict shape).
STRICT = "strict"
WITH_EDGE = "with_edge"
MINIMUM_STATUSES = {STRICT: (CONVERGED,), WITH_EDGE: (CONVERGED, EDGE_OF_STABILITY)}
# What a bracketed boundary is limited by: the status of its hi run (a stability failure).
LIMITED_BY = {DIVERGED: "divergence", UNSTABLE: "edge"}
# The fields of a depth's entry that its reading decides (the rest is the search's record).
READING_FIELDS = (
    "lr_max",
    "bracket",
    "state",
    "non_monotone",
    "limited_by",
    "ratio",
    "lo_run",
    "hi_run",
    "between",
)

# boundary.csv: one row per grid run of a searched depth and per probe.
CSV_COLUMNS = (
    "depth",
    "lr",
    "seed",
    "source",
    "round",
    "status",
    "reason",
    "final_train_loss",
    "loss_vs_affine",
    "lambda_max",
    "key",
)
# lr_max.csv: one row per depth (dvc plots).
LR_MAX_COLUMNS = (
    "depth",
    "state",
    "limited_by",
    "lr_max",
    "lr_max_hi",
    "two_over_lr_max",
    "flattest_lambda_max",
)


def limited_by(hi_run: Mapping[str, Any] | None) -> str | None:
    """'divergence' when the run above the boundary diverged, 'edge' when it ended unstable
    (lr x lambda_max beyond the band of the stability limit); None without such a run."""
    return LIMITED_BY.get(hi_run["status"]) if hi_run else None


def loglog_fit(depths: Sequence[float], values: Sequence[float]) -> dict[str, Any]:
    """log(value) = log c + p log(depth) by `line_fit`, with the slope's 95% t-interval
    (None below 3 points)."""
    fit = line_fit(np.log(np.asarray(depths, float)), np.log(np.asarray(values, float)))
    return {
        "exponent": fit["slope"],
        "log_c": fit["intercept"],
        "r2": fit["r2"],
        "ci95": fit["ci"],
        "stderr": fit["stderr"],
        "n": fit["n"],
    }


def bracket_slope_range(
    depths: Sequence[float], lows: Sequence[float], highs: Sequence[float]
) -> list[float]:
    """The least and greatest log-log least-squares slope over all values inside the brackets.

    The slope is linear in the data, sum_i w_i log y_i with w_i = (x_i - mean x) / Sxx, so its
    extremes take each y_i at one end of its bracket: the low end where w_i > 0 for the least
    slope, the high end for the greatest.
    """
    x = np.log(np.asarray(depths, float))
    weights = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    log_lo, log_hi = np.log(np.asarray(lows, float)), np.log(np.asarray(highs, float))
    least = np.sum(np.where(weights > 0, weights * log_lo, weights * log_hi))
    greatest = np.sum(np.where(weights > 0, weights * log_hi, weights * log_lo))
    return [float(least), float(greatest)]


def power_law_fit(boundaries: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """lr_max(m) ~ c m^p over the bracketed depths, with an interval for p that accounts for
    both the scatter and the brackets' width.

    The estimate is the fit to the geometric midpoints sqrt(lo hi) (the bracket's centre in log
    step size); fits to the lo and to the hi ends are given beside it. `ci95_with_bracket`
    widens the range of slopes the brackets allow (`bracket_slope_range`) by the midpoint fit's
    t half-width: p lies in it whatever the true boundary inside each bracket.
    Open or empty depths enter no fit (their lr_max is only a lower bound, or none).
    """
    used = [b for _, b in sorted(boundaries.items()) if b["state"] == BRACKETED]
    edge_limited = [b for b in used if b.get("limited_by") == LIMITED_BY[UNSTABLE]]
    depths = [float(b["depth"]) for b in used]
    lows = [b["bracket"][0] for b in used]
    highs = [b["bracket"][1] for b in used]
    mids = [math.sqrt(lo * hi) for lo, hi in zip(lows, highs)]
    midpoint = loglog_fit(depths, mids)
    result: dict[str, Any] = {
        **midpoint,
        "fit_lo": loglog_fit(depths, lows),
        "fit_hi": loglog_fit(depths, highs),
        "bracket_range": None,
        "ci95_with_bracket": None,
        "points": [
            {"depth": int(d), "lo": lo, "hi": hi, "mid": mid}
            for d, lo, hi, mid in zip(depths, lows, highs, mids)
        ],
        "excluded_depths": {
            str(d): b["state"] for d, b in sorted(boundaries.items()) if b["state"] != BRACKETED
        },
        # descriptive only (no verdict): the midpoint fit over the edge-limited depths alone
        "edge_limited_only": {
            "depths": [int(b["depth"]) for b in edge_limited],
            **loglog_fit(
                [float(b["depth"]) for b in edge_limited],
                [math.sqrt(b["bracket"][0] * b["bracket"][1]) for b in edge_limited],
            ),
        },
    }
    if midpoint["exponent"] is not None:
        span = bracket_slope_range(depths, lows, highs)
        result["bracket_range"] = span
        if midpoint["ci95"] is not None:
            half = midpoint["ci95"][1] - midpoint["exponent"]
            result["ci95_with_bracket"] = [span[0] - half, span[1] + half]
    return result


def _limits(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A stability-table row's fields that one reading of a depth's bracket decides."""
    lo, hi = entry["bracket"]
    return {
        "state": entry["state"],
        "limited_by": entry.get("limited_by"),
        "lr_max": entry["lr_max"],
        "lr_max_hi": hi,
        "two_over_lr_max": None if lo is None else 2.0 / lo,
        "two_over_lr_max_hi": None if hi is None else 2.0 / hi,
        "lambda_max_at_lr_max": (entry.get("lo_run") or {}).get("lambda_max"),
    }


def stability_comparison(
    boundaries: Mapping[int, Mapping[str, Any]],
    grid_rows: Iterable[Mapping[str, Any]],
    probe_rows: Iterable[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Per depth: lr_max with its bracket, the flattest converged lambda_max of the grid (and of
    grid and probes together), and 2 / lr_max: the sharpness above which no minimum is linearly
    stable for SGD at step lr_max (App. I, eq. S4: stable only if lambda_max <= 2 / eta). The
    flattest minimum should sit at or below it; in the paper's Fig. 4 both fall with depth."""
    grid_rows = list(grid_rows)
    flattest = flattest_per_depth(grid_rows)
    flattest_all = flattest_per_depth([*grid_rows, *probe_rows])
    table = []
    for depth, b in sorted(boundaries.items()):
        table.append(
            {
                "depth": depth,
                **_limits(b),
                "flattest_lambda_max": flattest.get(depth, {}).get("lambda_max"),
                "flattest_lr": flattest.get(depth, {}).get("lr"),
                "flattest_lambda_max_with_probes": flattest_all.get(depth, {}).get("lambda_max"),
            }
        )
    return table


def boundary_csv_rows(
    grid: Iterable[Mapping[str, Any]], boundaries: Mapping[int, Any], probes: Iterable[Mapping]
) -> list[dict[str, Any]]:
    """One row per grid run of a searched depth and per probe, by depth then step size."""
    rows = [{**r, "round": 0} for r in grid if int(r["depth"]) in boundaries]
    rows += [dict(p) for p in probes]
    return sorted(rows, key=lambda r: (int(r["depth"]), float(r["lr"])))


def boundary_summary(
    source: str,
    search: Mapping[str, Any],
    boundaries: Mapping[int, Mapping[str, Any]],
    grid: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """What boundary.json holds: the search's settings, every depth's outcome, the power-law
    fit and the comparison with the flattest minima (dvc metrics)."""
    probes = [p for b in boundaries.values() for p in b["probes"]]
    with_edge = {d: {"depth": d, **b[WITH_EDGE]} for d, b in boundaries.items() if WITH_EDGE in b}
    return {
        "source": source,
        **search,
        "depths": {str(d): b for d, b in boundaries.items()},
        "fit": power_law_fit(boundaries),
        "fit_with_edge": power_law_fit(with_edge),
        "stability": stability_comparison(boundaries, grid, probes),
    }


def boundary_counting_edge(boundary: Mapping[str, Any]) -> dict[str, Any]:
    """boundary.json in its strict shape with the reading that counts edge-of-stability runs as
    minima in place: each depth's READING_FIELDS from its `with_edge`, `fit` from
    `fit_with_edge`, the stability table's limits from the with-edge brackets (its flattest
    lambda_max stays the grid's converged runs'). Claims code runs on it unchanged. A file
    written before runs could end at the edge of stability has one reading only: returned as is."""
    if "fit_with_edge" not in boundary:
        return dict(boundary)
    out = {k: v for k, v in boundary.items() if k != "fit_with_edge"}
    depths = {}
    for depth, entry in boundary["depths"].items():
        reading = entry.get(WITH_EDGE) or {}
        depths[depth] = {
            **{k: v for k, v in entry.items() if k != WITH_EDGE},
            **{k: reading.get(k) for k in READING_FIELDS},
        }
    out["depths"] = depths
    out["fit"] = boundary["fit_with_edge"]
    out["stability"] = [
        _stability_limits(row, depths.get(str(row["depth"])))
        for row in boundary.get("stability") or []
    ]
    return out


def _stability_limits(row: Mapping[str, Any], entry: Mapping[str, Any] | None) -> dict:
    return dict(row) if entry is None else {**row, **_limits(entry)}


# --- the bisection's probes as runs of the identity-init grid (claims 1 and 3) ---------------


def probe_rows(boundary: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every probe the bisection trained (boundary.json, each depth's `probes`) as a grid row:
    depth, lr, seed (None in results written before the probes kept theirs), status, reason,
    lambda_max, ... The boundary stage trains them with grid_identity's settings (init,
    optimizer, seed, budget), so they are runs of that grid at step sizes it lacks."""
    if not boundary:
        return []
    return [
        {**probe, "depth": int(entry.get("depth", depth)), "lr": float(probe["lr"])}
        for depth, entry in sorted(boundary.get("depths", {}).items(), key=lambda kv: int(kv[0]))
        for probe in entry.get("probes") or []
    ]


def _same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same depth, step size (up to rounding) and seed (a row without a seed matches any)."""
    seeds = (a.get("seed"), b.get("seed"))
    return (
        int(a["depth"]) == int(b["depth"])
        and math.isclose(float(a["lr"]), float(b["lr"]), rel_tol=1e-9)
        and (None in seeds or int(seeds[0]) == int(seeds[1]))
    )


def with_probes(
    rows: Iterable[Mapping[str, Any]], probes: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The grid's rows and the probes that are minima (status converged: a relabelled copy
    that counts edge-of-stability runs as minima has them as converged too), leaving out a
    probe of a run the grid (or an earlier probe) already has: same depth, lr and seed."""
    out = [dict(r) for r in rows]
    for probe in probes:
        if probe["status"] == CONVERGED and not any(_same_run(probe, r) for r in out):
            out.append({**probe, "source": "probe"})
    return out
