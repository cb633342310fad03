"""DVC stage `boundary`: the stability boundary lr_max(m) by bisection (issue 11, item 3).

    python -m pipelines.boundary [--params params.yaml] [--root .]

Starts from the identity-init grid (results/grid_identity/grid.csv): per depth, the largest
converged step size and the smallest step size above it that failed for a stability reason
(diverged or unstable). Open brackets are first extended upward by factors of 2 (up to
`max_lr`), then every bracket is bisected in log step size to `2 ** resolution_exponent`
(src.experiments.boundary). Each round trains one step size per depth, all depths together,
with grid_identity's training settings (its own result store and MLflow experiment
`boundary`). Writes (relative to --root):
  results/boundary/runs/<key>.json     one result per probe (kept across interruptions)
  results/boundary/boundary.json       per depth: lr_max, bracket, limited_by, probes (with
                                       their seed); the same read with edge-of-stability runs
                                       as minima (`with_edge`, `fit_with_edge`); the power-law
                                       fit; flattest lambda_max beside 2 / lr_max (dvc metrics)
  results/boundary/boundary.csv        one row per grid run used and per probe
  results/boundary/lr_max.csv          one row per depth: lr_max, its bracket, 2 / lr_max, the
                                       flattest lambda_max (dvc plots)
  figures/fig4d_lr_max_boundary.{png,pdf}
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.core.files import write_csv, write_json
from src.experiments.boundary import (
    bisect_boundary,
    search_settings,
    source_grid_rows,
    store_trainer,
)
from src.experiments.store import prune_results
from src.paper.boundary import CSV_COLUMNS, LR_MAX_COLUMNS, boundary_csv_rows, boundary_summary
from src.paper.boundary_figure import boundary_figure
from src.runtime.params import grid_settings, load_params, profile_settings, training_overrides
from src.runtime.stage import stage_main

STAGE = "boundary"
SOURCE = "grid_identity"  # the grid whose brackets are refined (a dvc.yaml dep of the stage)
FIGURE = "fig4d_lr_max_boundary.png"


def run(params_path: str, root: str) -> None:
    params = load_params(params_path)
    search = search_settings(profile_settings(params, STAGE))
    root_path = Path(root)
    out = root_path / "results" / STAGE
    source = profile_settings(params, SOURCE)
    seed = int(source["seeds"][0]) if source.get("seeds") else None
    grid = source_grid_rows(root_path / "results" / SOURCE / "grid.csv", seed)
    train_points, used_keys = store_trainer(
        training_overrides(params, STAGE, source),
        out / "runs",
        root_path / "outputs" / "pipeline" / STAGE,
        seed,
        **grid_settings(params),
    )
    boundaries = bisect_boundary(grid, train_points, **search)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    prune_results(out / "runs", used_keys)
    payload = boundary_summary(SOURCE, search, boundaries, grid)
    probes = [p for b in boundaries.values() for p in b["probes"]]
    write_json(out / "boundary.json", payload)
    write_csv(out / "boundary.csv", boundary_csv_rows(grid, boundaries, probes), CSV_COLUMNS)
    write_csv(out / "lr_max.csv", payload["stability"], LR_MAX_COLUMNS)
    boundary_figure(payload, root_path / "figures" / FIGURE)


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
