"""DVC stages `grid@identity` / `grid@he` (Figs 4-5): ReLU denoisers over depth x step size.

    python -m pipelines.grid --stage grid_identity [--params params.yaml] [--root .]

The axes are the profile's `depths` and `lrs` in params.yaml, or the sweep of the experiment
preset its overrides name (the paper profile: `+experiment=fig4_grid`). Writes (relative to
--root):
  results/<stage>/runs/<key>.json   one result per training run (kept across interruptions)
  results/<stage>/grid.csv          depth, lr, status, losses, lambda_max (dvc plots)
  results/<stage>/summary.json      counts and per-depth flattest minimum (dvc metrics)
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.core.files import write_csv, write_json
from src.experiments.grid import grid_axes, run_grid
from src.experiments.store import prune_results
from src.paper.tables import GRID_COLUMNS, grid_rows, summarize_grid
from src.runtime.params import grid_settings, load_params, profile_settings, training_overrides
from src.runtime.stage import stage_main


def run(stage: str, params_path: str, root: str) -> None:
    params = load_params(params_path)
    settings = profile_settings(params, stage)
    out = Path(root) / "results" / stage
    base = training_overrides(params, stage, settings)
    results = run_grid(
        base,
        grid_axes(settings, base),
        results_dir=out / "runs",
        output_root=Path(root) / "outputs" / "pipeline" / stage,
        **grid_settings(params),
    )
    prune_results(out / "runs", [r["key"] for r in results])
    rows = grid_rows(results)
    write_csv(out / "grid.csv", rows, GRID_COLUMNS)
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
