"""DVC stages `grid_identity` / `grid_he` (Figs 4-5): ReLU denoisers over depth x step size.

    python -m pipelines.grid --stage grid_identity [--params params.yaml] [--root .]

Writes (relative to --root):
  results/<stage>/runs/<key>.json   one result per training run (kept across interruptions)
  results/<stage>/grid.csv          depth, lr, status, losses, lambda_max (dvc plots)
  results/<stage>/summary.json      counts and per-depth flattest minimum (dvc metrics)
"""

from __future__ import annotations

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
from src.paper.tables import grid_rows, summarize_grid, write_csv, write_json


def run(stage: str, params_path: str, root: str) -> None:
    params = load_params(params_path)
    settings = profile_settings(params, stage)
    out = Path(root) / "results" / stage
    axes = {"depth": settings["depths"], "lr": settings["lrs"]}
    if settings.get("seeds"):
        axes["seed"] = settings["seeds"]
    results = run_grid(
        training_overrides(params, stage, settings),
        axes,
        results_dir=out / "runs",
        output_root=Path(root) / "outputs" / "pipeline" / stage,
        **grid_settings(params),
    )
    prune_results(out / "runs", [r["key"] for r in results])
    rows = grid_rows(results)
    write_csv(out / "grid.csv", rows)
    write_json(out / "summary.json", summarize_grid(rows))


def main(argv: list[str] | None = None) -> int:
    def configure(parser):
        parser.add_argument(
            "--stage", required=True, help="params.yaml section, e.g. grid_identity"
        )

    return stage_main(
        lambda args: run(args.stage, args.params, args.root), __doc__, argv, configure
    )


if __name__ == "__main__":
    sys.exit(main())
