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

GRID_COLUMNS = (
    "depth",
    "lr",
    "seed",
    "init",
    "optimizer",
    "status",
    "epochs",
    "final_train_loss",
    "final_val_loss",
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
    """One flat row per training result (lambda_max only for converged runs)."""
    rows = []
    for result in results:
        cfg = result["config"]
        analysis = result.get("analysis") or {}
        converged = result["status"] == "converged"
        lam = analysis.get("lambda_max") if converged else None
        lr = float(cfg["optimizer"]["lr"])
        rows.append(
            {
                "depth": int(cfg["model"]["depth"]),
                "lr": lr,
                "seed": int(cfg["seed"]),
                "init": cfg["init"]["name"],
                "optimizer": cfg["optimizer"]["name"],
                "status": result["status"],
                "epochs": int(result["epochs"]),
                "final_train_loss": _finite(result["final_train_loss"]),
                "final_val_loss": _finite(result["final_val_loss"]),
                "lambda_max": lam,
                "lr_times_lambda_max": None if lam is None else lr * lam,
                "key": result["key"],
            }
        )
    return rows


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def flattest_per_depth(rows: Sequence[dict]) -> dict[int, dict[str, float]]:
    """For each depth, the converged run with the lowest lambda_max (Fig. 4b)."""
    best: dict[int, dict] = {}
    for row in rows:
        if row["status"] != "converged" or row["lambda_max"] is None:
            continue
        depth = row["depth"]
        if depth not in best or row["lambda_max"] < best[depth]["lambda_max"]:
            best[depth] = {"lambda_max": row["lambda_max"], "lr": row["lr"]}
    return dict(sorted(best.items()))


def largest_converged_lr(rows: Sequence[dict]) -> dict[int, float]:
    per_depth: dict[int, float] = {}
    for row in rows:
        if row["status"] == "converged":
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


def summarize_grid(rows: Sequence[dict]) -> dict[str, Any]:
    """Counts, per-depth flattest minima, and the two Sec. 6 fits (DVC metrics)."""
    statuses = defaultdict(int)
    for row in rows:
        statuses[row["status"]] += 1
    flattest = flattest_per_depth(rows)
    lr_max = largest_converged_lr(rows)
    summary: dict[str, Any] = {
        "runs": len(rows),
        **{
            f"runs_{status}": statuses.get(status, 0)
            for status in ("converged", "not_converged", "diverged")
        },
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
