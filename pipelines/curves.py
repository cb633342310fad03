"""DVC stage `curves` (Fig. 5b): training loss vs iteration, identity vs He init.

    python -m pipelines.curves [--params params.yaml] [--root .]

Writes results/curves/runs/<key>.json, results/curves/curves.csv (init, epoch, iteration,
train_loss, val_loss) and results/curves/summary.json. A run the grids already trained (same
config: same depth, step size, init and training settings) is copied from their result store.
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.core.files import write_csv, write_json
from src.experiments.grid import run_grid
from src.experiments.store import prune_results
from src.paper.tables import CURVE_COLUMNS, curve_rows, curve_summary
from src.runtime.params import grid_settings, load_params, profile_settings, training_overrides
from src.runtime.stage import stage_main

STAGE = "curves"
GRIDS = ("grid_identity", "grid_he")  # dvc.yaml deps of this stage (same configs, same runs)


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
    write_csv(out / "curves.csv", [r for res in results for r in curve_rows(res)], CURVE_COLUMNS)
    summary = {res["config"]["init"]["name"]: curve_summary(res) for res in results}
    write_json(out / "summary.json", {"depth": settings["depth"], "lr": settings["lr"], **summary})


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
