"""The stability boundary by bisection: per depth, the largest step size that reaches a minimum.

The paper reads the largest stable step size lr_max(m) off its grid (Fig. 4c) and finds it falls
with depth like the flattest minimum's sharpness rises, since a minimum is linearly stable for
SGD of step eta only when lambda_max <= 2/eta (App. I, eq. S4). A grid with a factor 2 between
step sizes places that boundary only within a factor 2, and an empty tile above the last
converged run may be a budget or plateau failure rather than instability. Here the boundary is
bracketed from below by a minimum and from above by a run that fails for a stability reason
(`STABILITY_FAILURES`: diverged, or unstable beyond the band of the limit), and refined by
bisection in log step size to a set resolution. Each bracket is read twice from the same runs
(issue 23, item 3): strictly (a minimum is a `converged` run; an `edge_of_stability` run is
neither end) and with edge-of-stability runs counted as minima (`with_edge`); the bisection
refines the strict bracket.

The bracket logic reads rows of results and the bisection driver trains only through the
`train_points` callable its caller provides: `store_trainer` gives one that trains a round's
points together through the result store (`run_points`), as the `boundary` DVC stage does. The
power-law fit and the tables of the outcome are in src.paper.boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.core.files import read_csv
from src.core.status import STABILITY_FAILURES
from src.experiments.grid import run_points
from src.paper.boundary import (
    BRACKETED,
    MINIMUM_STATUSES,
    NO_MINIMUM,
    OPEN_ABOVE,
    READING_FIELDS,
    STRICT,
    WITH_EDGE,
    limited_by,
)
from src.paper.tables import grid_row
from src.runtime.params import ParamsError

DEFAULT_RESOLUTION = 2.0**0.25  # the target: the boundary to within 2^(1/4)
# Relative slack on the resolution test, so that a bracket halved twice from a factor 2
# (ratio 2^0.25 up to rounding) counts as resolved and not as one round short.
RATIO_SLACK = 1e-6
LR_DIGITS = 10  # significant digits of a probe's step size (its Hydra override stays readable)

Point = tuple[int, float]  # (depth, lr) of a run to train
TrainPoints = Callable[[list[Point]], list[dict[str, Any]]]


@dataclass
class Bracket:
    """Where one depth's stability boundary lies, read from its runs (`bracket`).

    lo: the largest step size of a minimum below the lowest stability failure above a minimum;
    hi: that stability failure. `lo_run` / `hi_run` are the rows behind them.
    between: runs with lo < lr < hi (or above lo when open) that are neither a minimum nor a
        stability failure (plateau, budget, unverified; edge of stability in the strict
        reading): they say the boundary is not clean there.
    non_monotone: step sizes of minima at or above a stability failure (above hi, or above a
        failure below every minimum); reported, never hidden, because the boundary is then not
        one threshold.
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

    @property
    def limited_by(self) -> str | None:
        """'divergence' (hi diverged) or 'edge' (hi unstable); None when not bracketed."""
        return limited_by(self.hi_run)

    def reading(self) -> dict[str, Any]:
        """The fields of boundary.json that this reading of the runs decides."""
        values = {
            "lr_max": self.lo,
            "bracket": [self.lo, self.hi],
            "state": self.state,
            "non_monotone": self.non_monotone,
            "limited_by": self.limited_by,
            "ratio": self.ratio,
            "lo_run": self.lo_run,
            "hi_run": self.hi_run,
            "between": self.between,
        }
        return {k: values[k] for k in READING_FIELDS}


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


def bracket(depth: int, rows: Iterable[Mapping[str, Any]], reading: str = STRICT) -> Bracket:
    """The bracket of one depth's stability boundary from its runs (rows with lr and status).

    hi is the smallest step size that failed for a stability reason above the smallest
    minimum (the first place the minimum is lost to instability, not to budget), lo the
    largest step size of a minimum below hi. Minima above hi make the data non-monotone.
    `reading` says which statuses are minima (MINIMUM_STATUSES): strict (converged) or
    with_edge (converged or edge_of_stability).
    """
    minimum = MINIMUM_STATUSES[reading]
    runs = sorted((dict(r) for r in rows), key=lambda r: float(r["lr"]))
    converged = [r for r in runs if r["status"] in minimum]
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
        if lo < float(r["lr"]) < hi and r["status"] not in minimum and not is_stability_failure(r)
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


# The reading whose bracket the bisection refines: the boundary is where stability fails, and
# SGD runs just below it end at the edge of stability (r = lr x lambda_max / 2 near 1), which
# the band calls stable; refining the strict bracket would stop at the first such probe. The
# strict reading's lo (the largest converged step size) is read off the same runs, coarser.
SEARCH_READING = WITH_EDGE


@dataclass
class DepthSearch:
    """The state of one depth's search between rounds."""

    depth: int
    runs: list[dict[str, Any]]
    probes: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None

    def current(self, reading: str = STRICT) -> Bracket:
        return bracket(self.depth, self.runs, reading)


def next_probe(
    search: DepthSearch, resolution: float, max_lr: float | None
) -> tuple[float | None, str | None]:
    """The step size to train next for one depth, or (None, why the search ends).

    Bisection while the bracket is wider than `resolution`; an open bracket is first extended
    upward by factors of 2 (up to `max_lr`; None: no extension). A probe that came back with a
    status that is neither a minimum (in SEARCH_READING) nor a stability failure ends the
    search: the boundary above lo is then not shown to be a stability boundary.
    """
    b = search.current(SEARCH_READING)
    if b.state == NO_MINIMUM:
        return None, "no minimum (converged or edge of stability): nothing to bracket"
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
    A probe that reaches a minimum (converged or at the edge of stability: SEARCH_READING)
    raises lo, one that fails for a stability reason lowers hi; any other
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
            minimum = probe["status"] in MINIMUM_STATUSES[SEARCH_READING]
            if not minimum and not is_stability_failure(probe):
                search.stop_reason = (
                    f"stopped: {_describe(probe)} inside the bracket (not a stability failure)"
                )
    for search in searches.values():
        if search.stop_reason is None:
            lr, why = next_probe(search, resolution, max_lr)
            search.stop_reason = why or f"max_rounds ({max_rounds}) reached"
    return {depth: boundary_entry(search, resolution) for depth, search in searches.items()}


def boundary_entry(search: DepthSearch, resolution: float) -> dict[str, Any]:
    """One depth's outcome: lr_max (= lo), its bracket, what limits it, whether the resolution
    was reached, the runs behind each end, and every probe with its status and reason; all in
    the strict reading, with the reading that counts edge-of-stability runs as minima beside
    it (`with_edge`: lr_max, bracket, state, non_monotone, limited_by, ...)."""
    b, edge = search.current(), search.current(WITH_EDGE)
    return {
        "depth": search.depth,
        **b.reading(),
        "resolution": resolution,
        "resolution_reached": resolved(b, resolution),
        WITH_EDGE: {**edge.reading(), "resolution_reached": resolved(edge, resolution)},
        "stop_reason": search.stop_reason,
        "rounds": max((p["round"] for p in search.probes), default=0),
        "probes": [probe_summary(p) for p in search.probes],
    }


def probe_summary(probe: Mapping[str, Any]) -> dict[str, Any]:
    """A probe as the result json lists it: its row (losses, lambda_max, ...) and its round."""
    return {**dict(probe), **run_summary(probe), "round": probe["round"]}


# --- the search's settings, its starting grid and its training -------------------------------

# What a probe's row keeps of its run (boundary.json and boundary.csv).
PROBE_FIELDS = (
    "depth",
    "lr",
    "seed",
    "init",
    "optimizer",
    "status",
    "reason",
    "final_train_loss",
    "loss_vs_affine",
    "lambda_max",
    "epochs",
    "key",
)


def search_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """bisect_boundary's arguments from the profile's `boundary` settings in params.yaml."""
    try:
        exponent = float(settings["resolution_exponent"])
        max_rounds = int(settings["max_rounds"])
    except (KeyError, TypeError, ValueError) as err:
        raise ParamsError(
            f"params.yaml: boundary needs resolution_exponent and max_rounds ({err})"
        ) from err
    if exponent <= 0 or max_rounds < 0:
        raise ParamsError("params.yaml: boundary.resolution_exponent must be > 0, max_rounds >= 0")
    max_lr = settings.get("max_lr")
    return {
        "resolution": 2.0**exponent,
        "max_rounds": max_rounds,
        "max_lr": None if max_lr is None else float(max_lr),
    }


def source_grid_rows(grid_csv: Path, seed: int | None) -> list[dict[str, Any]]:
    """The rows of the grid whose brackets the search starts from (one seed: the probes'
    own), each marked as coming from the grid."""
    if not grid_csv.exists():
        raise ParamsError(f"{grid_csv}: not found (run the grid stage that writes it first)")
    rows = read_csv(grid_csv)
    if seed is not None:
        rows = [r for r in rows if r.get("seed") in (None, seed)]
    return [{**r, "source": "grid"} for r in rows]


def store_trainer(
    base_overrides: Sequence[str],
    results_dir: Path,
    output_root: Path,
    seed: int | None,
    **options: Any,
) -> tuple[TrainPoints, list[str]]:
    """A `train_points` for bisect_boundary that trains a round's (depth, lr) points together
    through the result store (`run_points` with `options`), and the list of the keys it has
    trained so far (the store keeps only those)."""
    seed_override = [] if seed is None else [f"seed={seed}"]
    used_keys: list[str] = []

    def train_points(points: list[Point]) -> list[dict[str, Any]]:
        jobs = [
            [f"depth={depth}", f"lr={lr:.{LR_DIGITS}g}", *seed_override] for depth, lr in points
        ]
        results = run_points(
            base_overrides, jobs, results_dir=results_dir, output_root=output_root, **options
        )
        used_keys.extend(r["key"] for r in results)
        return [{k: grid_row(r)[k] for k in PROBE_FIELDS} for r in results]

    return train_points, used_keys
