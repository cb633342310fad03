"""The stability boundary by bisection: per depth, the largest step size that reaches a minimum.

The paper reads the largest stable step size lr_max(m) off its grid (Fig. 4c) and finds it falls
with depth like the flattest minimum's sharpness rises, since a minimum is linearly stable for
SGD of step eta only when lambda_max <= 2/eta (App. I, eq. S4). A grid with a factor 2 between
step sizes places that boundary only within a factor 2, and an empty tile above the last
converged run may be a budget or plateau failure rather than instability. Here the boundary is
bracketed from below by a converged run and from above by a run that fails for a stability
reason (`STABILITY_FAILURES`), and refined by bisection in log step size to a set resolution.

Everything here is pure: the bracket logic and the fit read rows of results, and the bisection
driver trains only through the `train_points` callable its caller provides (the `boundary` DVC
stage passes one that trains a round's points together through `run_grid`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from src.training.status import STABILITY_FAILURES

CONVERGED = "converged"
DEFAULT_RESOLUTION = 2.0**0.25  # the target: the boundary to within 2^(1/4)
# Relative slack on the resolution test, so that a bracket halved twice from a factor 2
# (ratio 2^0.25 up to rounding) counts as resolved and not as one round short.
RATIO_SLACK = 1e-6
LR_DIGITS = 10  # significant digits of a probe's step size (its Hydra override stays readable)

# A bracket's state.
BRACKETED = "bracketed"  # converged at lo, a stability failure at hi
OPEN_ABOVE = "open_above"  # converged runs, but no stability failure above the largest one
NO_MINIMUM = "no_minimum"  # no converged run at all

Point = tuple[int, float]  # (depth, lr) of a run to train
TrainPoints = Callable[[list[Point]], list[dict[str, Any]]]


@dataclass
class Bracket:
    """Where one depth's stability boundary lies, read from its runs (`bracket`).

    lo: the largest converged step size below the lowest stability failure above a converged run;
    hi: that stability failure. `lo_run` / `hi_run` are the rows behind them.
    between: runs with lo < lr < hi (or above lo when open) that failed for another reason
        (plateau, budget, unverified): they say the boundary is not clean there.
    non_monotone: converged step sizes at or above a stability failure (above hi, or above a
        failure below every converged run); reported, never hidden, because the boundary is
        then not one threshold.
    """

    depth: int
    state: str
    lo: float | None = None
    hi: float | None = None
    lo_run: dict[str, Any] | None = None
    hi_run: dict[str, Any] | None = None
    between: list[dict[str, Any]] = field(default_factory=list)
    non_monotone: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.hi / self.lo if self.state == BRACKETED else None


def run_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a run that say why it bounds the boundary (for the report and the json)."""
    return {
        "lr": float(row["lr"]),
        "status": row["status"],
        "reason": row.get("reason"),
        "key": row.get("key"),
        "source": row.get("source"),
        "lambda_max": row.get("lambda_max"),
    }


def is_stability_failure(row: Mapping[str, Any]) -> bool:
    return row["status"] in STABILITY_FAILURES


def bracket(depth: int, rows: Iterable[Mapping[str, Any]]) -> Bracket:
    """The bracket of one depth's stability boundary from its runs (rows with lr and status).

    hi is the smallest step size that failed for a stability reason above the smallest
    converged one (the first place the minimum is lost to instability, not to budget), lo the
    largest converged step size below hi. Converged runs above hi make the data non-monotone.
    """
    runs = sorted((dict(r) for r in rows), key=lambda r: float(r["lr"]))
    converged = [r for r in runs if r["status"] == CONVERGED]
    if not converged:
        return Bracket(depth, NO_MINIMUM, between=[run_summary(r) for r in runs])
    smallest = float(converged[0]["lr"])
    failures = [r for r in runs if is_stability_failure(r) and float(r["lr"]) > smallest]
    hi_run = failures[0] if failures else None
    hi = float(hi_run["lr"]) if hi_run else math.inf
    lo_run = [r for r in converged if float(r["lr"]) < hi][-1]
    lo = float(lo_run["lr"])
    between = [
        run_summary(r)
        for r in runs
        if lo < float(r["lr"]) < hi and r["status"] != CONVERGED and not is_stability_failure(r)
    ]
    # converged at or above a stability failure: the boundary is not one threshold there
    lowest_failure = min(
        (float(r["lr"]) for r in runs if is_stability_failure(r)), default=math.inf
    )
    non_monotone = sorted({float(r["lr"]) for r in converged if float(r["lr"]) >= lowest_failure})
    return Bracket(
        depth,
        BRACKETED if hi_run else OPEN_ABOVE,
        lo=lo,
        hi=float(hi_run["lr"]) if hi_run else None,
        lo_run=run_summary(lo_run),
        hi_run=run_summary(hi_run) if hi_run else None,
        between=between,
        non_monotone=non_monotone,
    )


def rows_by_depth(rows: Iterable[Mapping[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(int(row["depth"]), []).append(dict(row))
    return dict(sorted(grouped.items()))


def geometric_midpoint(lo: float, hi: float) -> float:
    """sqrt(lo hi), rounded to LR_DIGITS significant digits: bisection in log step size."""
    return float(f"{math.sqrt(lo * hi):.{LR_DIGITS}g}")


def resolved(b: Bracket, resolution: float) -> bool:
    return b.state == BRACKETED and b.hi / b.lo <= resolution * (1.0 + RATIO_SLACK)


def _tried(runs: Sequence[Mapping[str, Any]], lr: float) -> dict[str, Any] | None:
    """A run of this depth already at step size `lr` (up to rounding), if any."""
    for run in runs:
        if math.isclose(float(run["lr"]), lr, rel_tol=1e-9):
            return dict(run)
    return None


def _describe(run: Mapping[str, Any]) -> str:
    reason = f" ({run['reason']})" if run.get("reason") else ""
    return f"{run['status']}{reason} at lr {float(run['lr']):g} ({run.get('source') or 'run'})"


@dataclass
class DepthSearch:
    """The state of one depth's search between rounds."""

    depth: int
    runs: list[dict[str, Any]]
    probes: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None

    def current(self) -> Bracket:
        return bracket(self.depth, self.runs)


def next_probe(
    search: DepthSearch, resolution: float, max_lr: float | None
) -> tuple[float | None, str | None]:
    """The step size to train next for one depth, or (None, why the search ends).

    Bisection while the bracket is wider than `resolution`; an open bracket is first extended
    upward by factors of 2 (up to `max_lr`; None: no extension). A probe that came back with a
    status that is neither converged nor a stability failure ends the search: the boundary
    above lo is then not shown to be a stability boundary.
    """
    b = search.current()
    if b.state == NO_MINIMUM:
        return None, "no converged run: nothing to bracket"
    if b.state == OPEN_ABOVE:
        top = max(float(r["lr"]) for r in search.runs)
        if max_lr is None or 2.0 * top > max_lr * (1.0 + RATIO_SLACK):
            cap = "no upward extension" if max_lr is None else f"max_lr {max_lr:g}"
            return None, f"not bracketed: no stability failure above lr {b.lo:g} ({cap})"
        return float(f"{2.0 * top:.{LR_DIGITS}g}"), None
    if resolved(b, resolution):
        return None, f"resolution reached (hi/lo = {b.ratio:.4g} <= {resolution:.4g})"
    mid = geometric_midpoint(b.lo, b.hi)
    earlier = _tried(search.runs, mid)
    if earlier is not None:  # a non-stability failure sits at the midpoint already
        return None, f"stopped: {_describe(earlier)} inside the bracket (not a stability failure)"
    return mid, None


def bisect_boundary(
    runs: Iterable[Mapping[str, Any]],
    train_points: TrainPoints,
    resolution: float = DEFAULT_RESOLUTION,
    max_rounds: int = 8,
    max_lr: float | None = None,
) -> dict[int, dict[str, Any]]:
    """Refine every depth's bracket (`bracket`) by bisection in log step size.

    runs: the starting rows (e.g. the grid's: depth, lr, status, reason, key).
    train_points: trains a round's points, one per depth still searching, all together (so a
        round across depths runs in parallel), and returns one row per point in their order.
    A probe that converges raises lo, one that fails for a stability reason lowers hi; any other
    status ends that depth's search with the reason recorded (the bracket above must be a
    stability failure, not a spent budget). Returns `boundary_entry` per depth.
    """
    searches = {
        depth: DepthSearch(depth, [{**r, "source": r.get("source") or "grid"} for r in rows])
        for depth, rows in rows_by_depth(runs).items()
    }
    for round_index in range(1, max_rounds + 1):
        points: list[Point] = []
        for search in searches.values():
            if search.stop_reason is not None:
                continue
            lr, why = next_probe(search, resolution, max_lr)
            if lr is None:
                search.stop_reason = why
            else:
                points.append((search.depth, lr))
        if not points:
            break
        for (depth, lr), row in zip(points, train_points(points), strict=True):
            probe = {**row, "depth": depth, "lr": lr, "source": "probe", "round": round_index}
            search = searches[depth]
            search.runs.append(probe)
            search.probes.append(probe)
            if probe["status"] != CONVERGED and not is_stability_failure(probe):
                search.stop_reason = (
                    f"stopped: {_describe(probe)} inside the bracket (not a stability failure)"
                )
    for search in searches.values():
        if search.stop_reason is None:
            lr, why = next_probe(search, resolution, max_lr)
            search.stop_reason = why or f"max_rounds ({max_rounds}) reached"
    return {depth: boundary_entry(search, resolution) for depth, search in searches.items()}


def boundary_entry(search: DepthSearch, resolution: float) -> dict[str, Any]:
    """One depth's outcome: lr_max (= lo), its bracket, whether the resolution was reached,
    the runs behind each end, and every probe with its status and reason."""
    b = search.current()
    return {
        "depth": search.depth,
        "state": b.state,
        "lr_max": b.lo,
        "bracket": [b.lo, b.hi],
        "ratio": b.ratio,
        "resolution": resolution,
        "resolution_reached": resolved(b, resolution),
        "lo_run": b.lo_run,
        "hi_run": b.hi_run,
        "between": b.between,
        "non_monotone": b.non_monotone,
        "stop_reason": search.stop_reason,
        "rounds": max((p["round"] for p in search.probes), default=0),
        "probes": [probe_summary(p) for p in search.probes],
    }


def probe_summary(probe: Mapping[str, Any]) -> dict[str, Any]:
    """A probe as the result json lists it: its row (losses, lambda_max, ...) and its round."""
    return {**dict(probe), **run_summary(probe), "round": probe["round"]}


# --- the power law lr_max(m) ~ c m^p -------------------------------------------------------


def loglog_fit(depths: Sequence[float], values: Sequence[float]) -> dict[str, Any]:
    """Least squares log(value) = log c + p log(depth), with the slope's 95% t-interval
    (n - 2 degrees of freedom; None below 3 points)."""
    x, y = np.log(np.asarray(depths, float)), np.log(np.asarray(values, float))
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return {"exponent": None, "log_c": None, "r2": None, "ci95": None, "stderr": None, "n": n}
    fit = stats.linregress(x, y)
    r2 = float(fit.rvalue**2) if np.ptp(y) > 0 else 1.0
    ci = None
    stderr = None
    if n >= 3:
        stderr = float(fit.stderr)
        half = float(stats.t.ppf(0.975, n - 2)) * stderr
        ci = [float(fit.slope) - half, float(fit.slope) + half]
    return {
        "exponent": float(fit.slope),
        "log_c": float(fit.intercept),
        "r2": r2,
        "ci95": ci,
        "stderr": stderr,
        "n": n,
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
    }
    if midpoint["exponent"] is not None:
        span = bracket_slope_range(depths, lows, highs)
        result["bracket_range"] = span
        if midpoint["ci95"] is not None:
            half = midpoint["ci95"][1] - midpoint["exponent"]
            result["ci95_with_bracket"] = [span[0] - half, span[1] + half]
    return result


# --- beside lr_max: the flattest minimum and the linear-stability value 2 / lr_max -----------


def result_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """A stored training result (src.experiments.store) as a row: what the bracket reads and
    what the boundary table shows beside it."""
    config = result["config"]
    analysis = result.get("analysis") or {}
    return {
        "depth": int(config["model"]["depth"]),
        "lr": float(config["optimizer"]["lr"]),
        "status": result["status"],
        "reason": result.get("reason"),
        "final_train_loss": _finite_or_none(result.get("final_train_loss")),
        "loss_vs_affine": _finite_or_none(result.get("loss_vs_affine")),
        "lambda_max": _finite_or_none(analysis.get("lambda_max")),
        "epochs": result.get("epochs"),
        "key": result.get("key"),
    }


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def flattest_converged(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per depth, the converged run with the lowest lambda_max (the flattest minimum found)."""
    best: dict[int, dict[str, Any]] = {}
    for row in rows:
        lam = row.get("lambda_max")
        if row["status"] != CONVERGED or lam is None or not math.isfinite(float(lam)):
            continue
        depth = int(row["depth"])
        if depth not in best or float(lam) < best[depth]["lambda_max"]:
            best[depth] = {"lambda_max": float(lam), "lr": float(row["lr"]), "key": row.get("key")}
    return dict(sorted(best.items()))


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
    flattest = flattest_converged(grid_rows)
    flattest_all = flattest_converged([*grid_rows, *probe_rows])
    table = []
    for depth, b in sorted(boundaries.items()):
        lo, hi = b["bracket"]
        table.append(
            {
                "depth": depth,
                "state": b["state"],
                "lr_max": b["lr_max"],
                "lr_max_hi": hi,
                "two_over_lr_max": None if lo is None else 2.0 / lo,
                "two_over_lr_max_hi": None if hi is None else 2.0 / hi,
                "lambda_max_at_lr_max": (b.get("lo_run") or {}).get("lambda_max"),
                "flattest_lambda_max": flattest.get(depth, {}).get("lambda_max"),
                "flattest_lr": flattest.get(depth, {}).get("lr"),
                "flattest_lambda_max_with_probes": flattest_all.get(depth, {}).get("lambda_max"),
            }
        )
    return table
