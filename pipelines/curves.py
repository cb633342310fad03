"""DVC stage `curves` (Fig. 5b): training loss vs iteration, identity vs He init.

    python -m pipelines.curves [--params params.yaml] [--root .]

Writes results/curves/runs/<key>.json, results/curves/curves.csv (init, epoch, iteration,
train_loss, val_loss) and results/curves/summary.json. A run the grids already trained (same
config: same depth, step size, init and training settings) is copied from their result store.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

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

STAGE = "curves"
GRIDS = ("grid_identity", "grid_he")  # dvc.yaml deps of this stage


def run(params_path: str, root: str) -> None:
    params = load_params(params_path)
    settings = profile_settings(params, STAGE)
    out = Path(root) / "results" / STAGE
    base = [
        *training_overrides(params, STAGE, settings),
        f"depth={settings['depth']}",
        f"lr={settings['lr']}",
    ]
    results = run_grid(
        base,
        {"init": settings["inits"]},
        results_dir=out / "runs",
        output_root=Path(root) / "outputs" / "pipeline" / STAGE,
        # the grids' runs at this depth and step size are these very runs: read, not retrained
        reuse_from=[Path(root) / "results" / grid / "runs" for grid in GRIDS],
        **grid_settings(params),
    )
    prune_results(out / "runs", [r["key"] for r in results])
    rows, summary = [], {}
    for result in results:
        init = result["config"]["init"]["name"]
        steps_per_epoch = math.ceil(result["steps"] / max(result["epochs"], 1))
        history = result["history"]
        for epoch, (train_loss, val_loss) in enumerate(
            zip(history["train_loss"], history["val_loss"]), 1
        ):
            rows.append(
                {
                    "init": init,
                    "epoch": epoch,
                    "iteration": epoch * steps_per_epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                }
            )
        summary[init] = {
            "status": result["status"],
            "epochs": result["epochs"],
            "final_train_loss": result["final_train_loss"],
            "initial_train_loss": result["initial_train_loss"],
            "lambda_max": (result.get("analysis") or {}).get("lambda_max"),
        }
    write_csv(out / "curves.csv", rows, ["init", "epoch", "iteration", "train_loss", "val_loss"])
    write_json(out / "summary.json", {"depth": settings["depth"], "lr": settings["lr"], **summary})


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
