"""Tables and fits over saved training results (no training here).

Used by the pipeline stages to write grid tables and by the report to check the paper's
claims from our data.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.files import read_json, write_json_atomic
from src.training.status import STATUSES

CONVERGED = "converged"  # the one status that speaks about a minimum (src.training.status)

# One row per run (results/<stage>/grid.csv). lambda_max is given for every run whose Hessian
# solve ran, minimum or not; every function here that speaks about minima filters `converged`.
GRID_COLUMNS = (
    "depth",
    "lr",
    "seed",
    "init",
    "optimizer",
    "status",
    "reason",
    "epochs",
    "final_train_loss",
    "final_val_loss",
    "affine_baseline_loss",
    "loss_vs_affine",
    "grad_norm_ratio",
    "dead_fraction_max",
    "lambda_max",
    "lr_times_lambda_max",
    "key",
)


def write_json(path: str | Path, payload: Any) -> None:
    write_json_atomic(Path(path), payload)


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or (rows[0].keys() if rows else GRID_COLUMNS))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as handle:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _csv_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


def _parse(text: str):
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def grid_rows(results: Iterable[dict]) -> list[dict[str, Any]]:
    """One flat row per training result, whatever its status (nothing is dropped, so a figure
    or the report can say why a tile is empty). lambda_max is kept for every run whose Hessian
    solve ran: readers that speak about minima filter status == "converged" themselves.
    Keys added by issue 11 (affine baseline, gradient norm, dead units) may be missing from
    older results and are then None."""
    rows = []
    for result in results:
        cfg = result["config"]
        analysis = result.get("analysis") or {}
        lam = finite_or_none(analysis.get("lambda_max"))
        lr = float(cfg["optimizer"]["lr"])
        rows.append(
            {
                "depth": int(cfg["model"]["depth"]),
                "lr": lr,
                "seed": int(cfg["seed"]),
                "init": cfg["init"]["name"],
                "optimizer": cfg["optimizer"]["name"],
                "status": result["status"],
                "reason": result.get("reason"),
                "epochs": int(result["epochs"]),
                "final_train_loss": _finite(result["final_train_loss"]),
                "final_val_loss": _finite(result["final_val_loss"]),
                "affine_baseline_loss": finite_or_none(result.get("affine_baseline_loss")),
                "loss_vs_affine": finite_or_none(result.get("loss_vs_affine")),
                "grad_norm_ratio": finite_or_none(result.get("grad_norm_ratio")),
                "dead_fraction_max": dead_fraction_max(result.get("dead_units")),
                "lambda_max": lam,
                "lr_times_lambda_max": None if lam is None else lr * lam,
                "key": result["key"],
            }
        )
    return rows


def dead_fraction_max(dead_units: Sequence[float] | None) -> float | None:
    """The largest fraction of dead ReLU units over the hidden layers: one collapsed layer is
    enough to make a net a near-trivial denoiser (issue 11: 34-50% dead in layer 5)."""
    values = [float(v) for v in dead_units or () if v is not None]
    return max(values) if values else None


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def finite_or_none(value) -> float | None:
    """A finite float, or None for a missing or non-finite value (JSON and CSV cells)."""
    return None if value is None else _finite(value)


def flattest_per_depth(rows: Sequence[dict]) -> dict[int, dict[str, float]]:
    """For each depth, the converged run with the lowest lambda_max (Fig. 4b). Only minima
    count: a plateau or an unstable run has a lambda_max too, but it is not a minimum."""
    best: dict[int, dict] = {}
    for row in rows:
        if row["status"] != CONVERGED or row.get("lambda_max") is None:
            continue
        depth = row["depth"]
        if depth not in best or row["lambda_max"] < best[depth]["lambda_max"]:
            best[depth] = {"lambda_max": row["lambda_max"], "lr": row["lr"]}
    return dict(sorted(best.items()))


def largest_converged_lr(rows: Sequence[dict]) -> dict[int, float]:
    """Per depth, the largest step size of a converged run (a lower bound on lr_max; the
    bisection stage, not this, brackets the boundary)."""
    per_depth: dict[int, float] = {}
    for row in rows:
        if row["status"] == CONVERGED:
            per_depth[row["depth"]] = max(per_depth.get(row["depth"], 0.0), row["lr"])
    return dict(sorted(per_depth.items()))


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares y = slope x + intercept, with R^2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return {"slope": math.nan, "intercept": math.nan, "r2": math.nan, "points": len(x)}
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum(residual**2) / total if total > 0 else math.nan
    return {"slope": float(slope), "intercept": float(intercept), "r2": float(r2), "points": len(x)}


def power_law_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """y = c x^exponent fitted in log-log space."""
    fit = linear_fit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)))
    return {
        "exponent": fit["slope"],
        "log_c": fit["intercept"],
        "r2": fit["r2"],
        "points": fit["points"],
    }


def status_counts(rows: Sequence[dict]) -> dict[str, int]:
    """Runs per status: every status of STATUSES (zero included, so a metric never vanishes),
    then any other status found in older results (counted, not hidden)."""
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def reason_counts(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Runs per status and reason ({status: {reason: n}}); a missing reason counts as "n/a"."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        counts[row["status"]][row.get("reason") or "n/a"] += 1
    return {status: dict(sorted(by.items())) for status, by in sorted(counts.items())}


def summarize_grid(rows: Sequence[dict]) -> dict[str, Any]:
    """Counts per status and reason, per-depth flattest minima, and the two Sec. 6 fits over
    converged runs only (DVC metrics)."""
    flattest = flattest_per_depth(rows)
    lr_max = largest_converged_lr(rows)
    summary: dict[str, Any] = {
        "runs": len(rows),
        **{f"runs_{status}": n for status, n in status_counts(rows).items()},
        "reasons": reason_counts(rows),
        "flattest_lambda_max": {str(d): v["lambda_max"] for d, v in flattest.items()},
        "largest_converged_lr": {str(d): v for d, v in lr_max.items()},
    }
    if len(flattest) >= 2:
        fit = linear_fit(list(flattest), [v["lambda_max"] for v in flattest.values()])
        summary["flattest_vs_depth_fit"] = fit
    if len(lr_max) >= 2:
        summary["lr_max_vs_depth_fit"] = power_law_fit(list(lr_max), list(lr_max.values()))
    return summary


def load_json(path: str | Path) -> Any:
    return read_json(path)
