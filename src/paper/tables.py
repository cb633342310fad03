"""Tables over saved training results (never trains): one row per run, counts per status,
the flattest minimum per depth and the grids' summaries (Figs 4-5), Table S1.

Every function that speaks about minima keeps only runs with status `converged`; the others
are counted and listed, never dropped silently.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from src.core.files import finite_or_none
from src.core.status import CONVERGED, STATUSES
from src.paper.reference import TABLE_S1
from src.paper.statistics import line_fit

# One row per run (results/<stage>/grid.csv). lambda_max is given for every run whose Hessian
# solve ran, minimum or not; every function here that speaks about minima filters `converged`.
# lambda_max is the robust value (after the analysis's short polish, which the status is judged
# by), lambda_max_raw the one at the final weights (issue 23; None in older results).
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
    "lambda_max_raw",
    "key",
)


def grid_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """One stored training result (src.experiments.store) as a flat row of GRID_COLUMNS,
    whatever its status. Keys added by issue 11 (affine baseline, gradient norm, dead units)
    may be missing from older results and are then None."""
    cfg = result["config"]
    analysis = result.get("analysis") or {}
    lam = finite_or_none(analysis.get("lambda_max"))
    lr = float(cfg["optimizer"]["lr"])
    return {
        "depth": int(cfg["model"]["depth"]),
        "lr": lr,
        "seed": int(cfg["seed"]),
        "init": cfg["init"]["name"],
        "optimizer": cfg["optimizer"]["name"],
        "status": result["status"],
        "reason": result.get("reason"),
        "epochs": int(result["epochs"]),
        "final_train_loss": finite_or_none(result["final_train_loss"]),
        "final_val_loss": finite_or_none(result["final_val_loss"]),
        "affine_baseline_loss": finite_or_none(result.get("affine_baseline_loss")),
        "loss_vs_affine": finite_or_none(result.get("loss_vs_affine")),
        "grad_norm_ratio": finite_or_none(result.get("grad_norm_ratio")),
        "dead_fraction_max": dead_fraction_max(result.get("dead_units")),
        "lambda_max": lam,
        "lr_times_lambda_max": None if lam is None else lr * lam,
        "lambda_max_raw": finite_or_none(analysis.get("lambda_max_raw")),
        "key": result["key"],
    }


def grid_rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [grid_row(result) for result in results]


def dead_fraction_max(dead_units: Sequence[float] | None) -> float | None:
    """The largest fraction of dead ReLU units over the hidden layers: one collapsed layer is
    enough to make a net a near-trivial denoiser (issue 11: 34-50% dead in layer 5)."""
    values = [float(v) for v in dead_units or () if v is not None]
    return max(values) if values else None


def minima(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows that speak about a minimum: converged, with a measured lambda_max."""
    return [r for r in rows if r["status"] == CONVERGED and r.get("lambda_max") is not None]


def flattest_per_depth(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """For each depth, the converged run with the lowest lambda_max (Fig. 4b): its lambda_max
    and step size. A plateau or an unstable run has a lambda_max too, but is no minimum."""
    best: dict[int, dict[str, float]] = {}
    for row in minima(rows):
        depth, lam = int(row["depth"]), float(row["lambda_max"])
        if depth not in best or lam < best[depth]["lambda_max"]:
            best[depth] = {"lambda_max": lam, "lr": float(row["lr"])}
    return dict(sorted(best.items()))


def largest_converged_lr(rows: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Per depth, the largest step size of a converged run (a lower bound on lr_max; the
    bisection stage, not this, brackets the boundary)."""
    per_depth: dict[int, float] = {}
    for row in rows:
        if row["status"] == CONVERGED:
            per_depth[row["depth"]] = max(per_depth.get(row["depth"], 0.0), row["lr"])
    return dict(sorted(per_depth.items()))


def status_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Runs per status: every status of STATUSES (zero included, so a metric never vanishes),
    then any other status found in older results (counted, not hidden)."""
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def reason_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Runs per status and reason ({status: {reason: n}}); a missing reason counts as "n/a"."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        counts[row["status"]][row.get("reason") or "n/a"] += 1
    return {status: dict(sorted(by.items())) for status, by in sorted(counts.items())}


def summarize_grid(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per status and reason, per-depth flattest minima, and the two Sec. 6 trends over
    converged runs only (DVC metrics): the flattest lambda_max against depth, and the largest
    converged step size against depth as a power law."""
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
        fit = line_fit(list(flattest), [v["lambda_max"] for v in flattest.values()])
        summary["flattest_vs_depth_fit"] = {
            "slope": fit["slope"],
            "intercept": fit["intercept"],
            "r2": fit["r2"],
            "points": fit["n"],
        }
    if len(lr_max) >= 2:
        fit = line_fit(np.log(list(lr_max)), np.log(list(lr_max.values())))
        summary["lr_max_vs_depth_fit"] = {
            "exponent": fit["slope"],
            "log_c": fit["intercept"],
            "r2": fit["r2"],
            "points": fit["n"],
        }
    return summary


# --- training curves (Fig. 5b) ---------------------------------------------------------------

CURVE_COLUMNS = ("init", "epoch", "iteration", "train_loss", "val_loss")


def curve_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per epoch of a run's history: its train and validation loss, at the iteration
    (optimizer step) the epoch ended on."""
    init = result["config"]["init"]["name"]
    steps_per_epoch = math.ceil(result["steps"] / max(result["epochs"], 1))
    history = result["history"]
    return [
        {
            "init": init,
            "epoch": epoch,
            "iteration": epoch * steps_per_epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
        }
        for epoch, (train_loss, val_loss) in enumerate(
            zip(history["train_loss"], history["val_loss"]), 1
        )
    ]


def curve_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "status": result["status"],
        "epochs": result["epochs"],
        "final_train_loss": result["final_train_loss"],
        "initial_train_loss": result["initial_train_loss"],
        "lambda_max": (result.get("analysis") or {}).get("lambda_max"),
    }


# --- Table S1: flat (SGD) vs sharp (Adam) minima, 6 layers -----------------------------------

TABLE_S1_FIELDS = ("final_train_loss", "final_val_loss", "lambda_max")
# What Table S1 keeps of each run: its numbers and why it is (not) a minimum.
TABLE_S1_RUN_FIELDS = (
    "seed",
    "status",
    "reason",
    "epochs",
    "final_train_loss",
    "final_val_loss",
    "lambda_max",
    "lr",  # with lr x lambda_max: claim 5's comparability (is the flat run at the edge?)
    "lr_times_lambda_max",
    "lambda_max_raw",
    "affine_baseline_loss",
    "loss_vs_affine",
    "dead_fraction_max",
    "key",
)


def mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample std (ddof 1, as the paper's "mean ± std" over 4 seeds)."""
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()) if len(array) else None,
        "std": float(array.std(ddof=1)) if len(array) > 1 else None,
    }


def table_s1(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Table S1 from the stored results of each method's runs (`table_s1_from_entries`)."""
    return table_s1_from_entries(
        {
            method: [{k: grid_row(r)[k] for k in TABLE_S1_RUN_FIELDS} for r in results]
            for method, results in runs.items()
        }
    )


def table_s1_from_entries(entries_by_method: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict:
    """Table S1 from converged runs only (issue 11 item 4): per method the mean ± std over the
    runs that reached a minimum, their per-seed values, and every other run listed with its
    status and reason (a plateau or an unstable run is not a minimum, so its lambda_max says
    nothing about the minima the paper compares). The paper's numbers sit beside ours.
    `entries_by_method`: per method, each run's TABLE_S1_RUN_FIELDS (the table's `runs`, so a
    saved table can be rebuilt from its own entries, e.g. with other statuses counted)."""
    table = {}
    for method, entries in entries_by_method.items():
        entries = [dict(e) for e in entries]
        used = [e for e in entries if e["status"] == CONVERGED]
        row: dict[str, Any] = {
            "seeds": len(entries),
            "converged": len(used),
            "converged_seeds": [e["seed"] for e in used],
            "statuses": [e["status"] for e in entries],
            "not_converged": [
                {"seed": e["seed"], "status": e["status"], "reason": e["reason"]}
                for e in entries
                if e["status"] != CONVERGED
            ],
            "runs": entries,
        }
        for field in TABLE_S1_FIELDS:
            pairs = [(e["seed"], e.get(field)) for e in used if e.get(field) is not None]
            row[field] = {
                **mean_std([v for _, v in pairs]),
                "values": [v for _, v in pairs],
                "seeds": [seed for seed, _ in pairs],
            }
            if method in TABLE_S1:
                mean, std = TABLE_S1[method][field]
                row[field]["paper"] = {"mean": mean, "std": std}
        table[method] = row
    return table


def table_s1_means(table: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per method, the mean of each Table S1 column (the stage's DVC metrics)."""
    return {
        method: {k: v["mean"] for k, v in row.items() if k in TABLE_S1_FIELDS}
        for method, row in table.items()
    }
