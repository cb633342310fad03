"""DVC stage `linear_check`: the training stack on deep linear nets, against Thm 1 (Lemma 1).

    python -m pipelines.linear_check [--params params.yaml] [--root .]

Linear nets (no bias) from identity init, trained by full-batch GD on whitened synthetic data
(Sigma_x = I exactly). For every converged run, the sharpness measured by the analysis callback
is compared with Thm 1's value for the end-to-end map T the run learned
(src.experiments.linear_check). Writes results/linear_check/{runs/, grid.csv, summary.json}.
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.core.files import write_csv, write_json
from src.experiments.grid import run_grid
from src.experiments.linear_check import COLUMNS, linear_check_row, linear_check_summary
from src.experiments.store import prune_results
from src.runtime.params import grid_settings, load_params, profile_settings, training_overrides
from src.runtime.stage import stage_main

STAGE = "linear_check"


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
    rows = [linear_check_row(result) for result in results]
    write_csv(out / "grid.csv", rows, COLUMNS)
    write_json(out / "summary.json", linear_check_summary(rows))


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
