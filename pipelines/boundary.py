"""DVC stage `boundary`: the stability boundary lr_max(m) by bisection (issue 11, item 3).

    python -m pipelines.boundary [--params params.yaml] [--root .]

Starts from the identity-init grid (results/grid_identity/grid.csv): per depth, the largest
converged step size and the smallest step size above it that failed for a stability reason
(diverged or unstable). Open brackets are first extended upward by factors of 2 (up to
`max_lr`), then every bracket is bisected in log step size to `2 ** resolution_exponent`. Each
round trains one step size per depth, all depths together, with grid_identity's training
settings (its own result store and MLflow experiment `boundary`).

Writes (relative to --root):
  results/boundary/runs/<key>.json     one result per probe (kept across interruptions)
  results/boundary/boundary.json       per depth: lr_max, bracket, probes; the power-law fit;
                                       flattest lambda_max beside 2 / lr_max (dvc metrics)
  results/boundary/boundary.csv        one row per grid run used and per probe
  results/boundary/lr_max.csv          one row per depth: lr_max, its bracket, 2 / lr_max, the
                                       flattest lambda_max (dvc plots)
  figures/fig4d_lr_max_boundary.{png,pdf}
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipelines.common import (
    ParamsError,
    grid_settings,
    load_params,
    profile_settings,
    stage_main,
    training_overrides,
)
from src.experiments.boundary import (
    Point,
    bisect_boundary,
    power_law_fit,
    result_row,
    stability_comparison,
)
from src.experiments.grid import run_points
from src.experiments.store import prune_results
from src.paper.boundary_figure import boundary_figure
from src.paper.tables import read_csv, write_csv, write_json

STAGE = "boundary"
SOURCE = "grid_identity"  # the grid whose brackets are refined (a dvc.yaml dep of the stage)
CSV_COLUMNS = (
    "depth",
    "lr",
    "source",
    "round",
    "status",
    "reason",
    "final_train_loss",
    "loss_vs_affine",
    "lambda_max",
    "key",
)
FIGURE = "fig4d_lr_max_boundary.png"
LR_MAX_COLUMNS = (
    "depth",
    "state",
    "lr_max",
    "lr_max_hi",
    "two_over_lr_max",
    "flattest_lambda_max",
)


def search_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """bisect_boundary's arguments from the profile's `boundary` settings."""
    try:
        exponent = float(settings["resolution_exponent"])
        max_rounds = int(settings["max_rounds"])
    except (KeyError, TypeError, ValueError) as err:
        raise ParamsError(
            f"params.yaml: boundary needs resolution_exponent and max_rounds ({err})"
        ) from err
    if exponent <= 0 or max_rounds < 0:
        raise ParamsError("params.yaml: boundary.resolution_exponent must be > 0, max_rounds >= 0")
    max_lr = settings.get("max_lr")
    return {
        "resolution": 2.0**exponent,
        "max_rounds": max_rounds,
        "max_lr": None if max_lr is None else float(max_lr),
    }


def grid_rows_used(grid_csv: Path, seed: int | None) -> list[dict[str, Any]]:
    """The source grid's rows (one seed: the probes' own) that the brackets start from."""
    if not grid_csv.exists():
        raise ParamsError(f"{grid_csv}: not found (run the {SOURCE} stage first)")
    rows = read_csv(grid_csv)
    if seed is not None:
        rows = [r for r in rows if r.get("seed") in (None, seed)]
    return [{**r, "source": "grid"} for r in rows]


def probe_trainer(params: dict[str, Any], root: Path, seed: int | None, used_keys: list[str]):
    """train_points for bisect_boundary: one round's (depth, lr) points trained together
    through run_points, with the source grid's settings; the keys trained are appended to
    `used_keys` (the store keeps only those)."""
    source = profile_settings(params, SOURCE)
    base = training_overrides(params, STAGE, source)
    seed_override = [] if seed is None else [f"seed={seed}"]
    out = root / "results" / STAGE

    def train_points(points: list[Point]) -> list[dict[str, Any]]:
        jobs = [[f"depth={depth}", f"lr={lr:.10g}", *seed_override] for depth, lr in points]
        results = run_points(
            base,
            jobs,
            results_dir=out / "runs",
            output_root=root / "outputs" / "pipeline" / STAGE,
            **grid_settings(params),
        )
        used_keys.extend(r["key"] for r in results)
        return [result_row(r) for r in results]

    return train_points


def csv_rows(grid: list[dict[str, Any]], boundaries: dict[int, dict[str, Any]], probes) -> list:
    """One row per grid run of a searched depth and per probe, by depth then step size."""
    rows = [{**r, "round": 0} for r in grid if int(r["depth"]) in boundaries]
    rows += list(probes)
    return sorted(rows, key=lambda r: (int(r["depth"]), float(r["lr"])))


def run(params_path: str, root: str) -> None:
    params = load_params(params_path)
    search = search_settings(profile_settings(params, STAGE))
    root_path = Path(root)
    out = root_path / "results" / STAGE
    seeds = profile_settings(params, SOURCE).get("seeds")
    seed = int(seeds[0]) if seeds else None
    grid = grid_rows_used(root_path / "results" / SOURCE / "grid.csv", seed)
    used_keys: list[str] = []
    train_points = probe_trainer(params, root_path, seed, used_keys)
    boundaries = bisect_boundary(grid, train_points, **search)
    probes = [p for b in boundaries.values() for p in b["probes"]]
    (out / "runs").mkdir(parents=True, exist_ok=True)
    prune_results(out / "runs", used_keys)
    payload = {
        "source": SOURCE,
        **search,
        "depths": {str(d): b for d, b in boundaries.items()},
        "fit": power_law_fit(boundaries),
        "stability": stability_comparison(boundaries, grid, probes),
    }
    write_json(out / "boundary.json", payload)
    write_csv(out / "boundary.csv", csv_rows(grid, boundaries, probes), CSV_COLUMNS)
    write_csv(out / "lr_max.csv", payload["stability"], LR_MAX_COLUMNS)
    boundary_figure(payload, root_path / "figures" / FIGURE)


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
