"""Lemma 1 end to end: deep linear nets trained by the project's own training stack, their
measured sharpness set against Thm 1's value for the map they learned.

Our training loss is the mean over the d_y outputs (README), so Thm 1 (eq. 17) reads
lambda = 2m s_max(T)^(2(1-1/m)) / d_y for the end-to-end map T = W_m ... W_1 a run learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from src.core.status import CONVERGED, DIVERGED
from src.theory.linear import end_to_end, flattest_sharpness
from src.training.checkpoint import load_state_dict

COLUMNS = (
    "depth",
    "lr",
    "status",
    "epochs",
    "final_train_loss",
    "s_max_T",
    "lambda_max",
    "lambda_theorem1",
    "relative_error",
    "lr_times_lambda_max",
)


def learned_map(state_dict: Mapping[str, Any], depth: int) -> np.ndarray:
    """T = W_m ... W_1 of a bias-free linear net's saved weights, float64 numpy."""
    return end_to_end([state_dict[f"layers.{k}.weight"].double().numpy() for k in range(depth)])


def linear_check_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """One run: its status and, for a converged run, the measured lambda_max beside Thm 1's
    for the T it learned (in our loss units), their relative gap and lr x lambda_max."""
    depth = int(result["config"]["model"]["depth"])
    lr = float(result["config"]["optimizer"]["lr"])
    row = {
        "depth": depth,
        "lr": lr,
        "status": result["status"],
        "epochs": result["epochs"],
        "final_train_loss": result["final_train_loss"],
    }
    measured = (result.get("analysis") or {}).get("lambda_max")
    if result["status"] == CONVERGED and measured is not None:
        T = learned_map(load_state_dict(result["checkpoint_path"]), depth)
        predicted = flattest_sharpness(T, depth) / T.shape[0]  # eq. (17) / d_y
        row.update(
            s_max_T=float(np.linalg.norm(T, 2)),
            lambda_max=measured,
            lambda_theorem1=predicted,
            relative_error=abs(measured - predicted) / predicted,
            lr_times_lambda_max=lr * measured,
        )
    return row


def linear_check_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    converged = [r for r in rows if "relative_error" in r]
    return {
        "runs": len(rows),
        "runs_converged": len(converged),
        "runs_diverged": sum(r["status"] == DIVERGED for r in rows),
        "max_relative_error": max((r["relative_error"] for r in converged), default=None),
        "max_lr_times_lambda_max": max((r["lr_times_lambda_max"] for r in converged), default=None),
    }
