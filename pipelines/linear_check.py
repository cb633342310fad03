"""DVC stage `linear_check`: the training stack on deep linear nets, against Thm 1 (Lemma 1).

    python -m pipelines.linear_check [--params params.yaml] [--root .]

Linear nets (no bias) from identity init, trained by full-batch GD on whitened synthetic data
(Sigma_x = I exactly). For every converged run, the sharpness measured by the analysis callback
is compared with Thm 1's value for the end-to-end map T the run learned. Our training loss is
the mean over the d_y outputs (README), so Thm 1 reads lambda = 2m s_max(T)^(2(1-1/m)) / d_y.
Writes results/linear_check/{runs/, grid.csv, summary.json}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pipelines.common import (
    grid_settings,
    load_params,
    profile_settings,
    stage_main,
    training_overrides,
)
from src.experiments.grid import run_grid
from src.experiments.store import prune_results
from src.paper.tables import write_csv, write_json

STAGE = "linear_check"


def theorem1_sharpness(state_dict: dict, depth: int) -> tuple[float, float]:
    """(s_max(T), Thm 1 sharpness in our loss units) for T = W_m ... W_1 of a linear net."""
    weights = [state_dict[f"layers.{k}.weight"].double() for k in range(depth)]
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    s_max = float(torch.linalg.matrix_norm(product, ord=2))
    d_y = product.shape[0]
    return s_max, 2 * depth * s_max ** (2 * (1 - 1 / depth)) / d_y  # eq. (17) / d_y


def run(params_path: str, root: str) -> None:
    params = load_params(params_path)
    settings = profile_settings(params, STAGE)
    out = Path(root) / "results" / STAGE
    results = run_grid(
        # Linear nets need none of the ReLU experiments' shared overrides: only the stage's own.
        training_overrides(params, STAGE, settings, shared=False),
        {"depth": settings["depths"], "lr": settings["lrs"]},
        results_dir=out / "runs",
        output_root=Path(root) / "outputs" / "pipeline" / STAGE,
        require_files=("checkpoint_path",),
        **grid_settings(params),
    )
    prune_results(out / "runs", [r["key"] for r in results])
    rows = []
    for result in results:
        depth, lr = (
            int(result["config"]["model"]["depth"]),
            float(result["config"]["optimizer"]["lr"]),
        )
        row = {
            "depth": depth,
            "lr": lr,
            "status": result["status"],
            "epochs": result["epochs"],
            "final_train_loss": result["final_train_loss"],
        }
        measured = (result.get("analysis") or {}).get("lambda_max")
        if result["status"] == "converged" and measured is not None:
            state = torch.load(result["checkpoint_path"], map_location="cpu", weights_only=False)[
                "state_dict"
            ]
            s_max, predicted = theorem1_sharpness(state, depth)
            row.update(
                s_max_T=s_max,
                lambda_max=measured,
                lambda_theorem1=predicted,
                relative_error=abs(measured - predicted) / predicted,
                lr_times_lambda_max=lr * measured,
            )
        rows.append(row)
    columns = [
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
    ]
    write_csv(out / "grid.csv", rows, columns)
    converged = [r for r in rows if "relative_error" in r]
    write_json(
        out / "summary.json",
        {
            "runs": len(rows),
            "runs_converged": len(converged),
            "runs_diverged": sum(r["status"] == "diverged" for r in rows),
            "max_relative_error": max((r["relative_error"] for r in converged), default=None),
            "max_lr_times_lambda_max": max(
                (r["lr_times_lambda_max"] for r in converged), default=None
            ),
        },
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
