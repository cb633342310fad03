"""DVC stage `flat_vs_sharp` (Table S1, Figs 6-7): SGD (flat) vs Adam (sharp) minima, and beyond
the paper the minima of further methods (SAM) measured beside them (src.experiments.flat_vs_sharp).

    python -m pipelines.flat_vs_sharp [--params params.yaml] [--root .]

Only runs that reached a minimum (status `converged`) enter Table S1's statistics and the
pairs; the others are listed with their status and reason, never dropped. Writes under
results/flat_vs_sharp/:
  runs/<key>.json        one result per training run
  table_s1.json          per method: mean and std over converged runs, their per-seed values,
                         the count of converged runs and the statuses of the others, beside the
                         paper's numbers
  gains.json             per-run gain profiles (Fig. 6), each with its run's status
  gains_by_radius.json   per converged run: the gain search at several input radii, and the
                         radius-free gains at the training inputs themselves
  cross_sections.npz     line, close-up and eigenvector cross-sections (Fig. 7)
  pairs.csv              per (converged, converged) pair: curvature along the line at each end
                         vs each lambda_max
  summary.json           the numbers the report checks (dvc metrics), and the pairs skipped
                         because a run of the pair is not a minimum
  cross_sections_others.npz, pairs_others.csv
                         the same Fig. 7 cross-sections and pair curvatures for every further
                         method (params.yaml's methods after the first two, e.g. SAM) against
                         the sharp one; npz keys are prefixed `<method>:`
  spectra.json           per run: lambda_1, lambda_2 and their gap ratio, the Hessian trace
                         (Hutchinson, with its standard error) and (where the analysis measured
                         it) the density's moments, with each measure's cost in HVPs; per
                         method the eigenvalue density of its first converged run
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from src.domain.data import load_dataset
from src.experiments.flat_vs_sharp import train_methods, write_outputs
from src.experiments.grid import compose_config
from src.runtime.params import grid_settings, load_params, profile_settings, training_overrides
from src.runtime.stage import stage_main

STAGE = "flat_vs_sharp"


def run(params_path: str, root: str) -> None:
    params = load_params(params_path)
    settings = profile_settings(params, STAGE)
    root = Path(root)
    base = training_overrides(params, STAGE, settings)
    runs = train_methods(
        [*base, f"depth={settings['depth']}"],
        settings["methods"],
        settings["seeds"],
        results_dir=root / "results" / STAGE / "runs",
        output_root=root / "outputs" / "pipeline" / STAGE,
        **grid_settings(params),
    )
    cfg = compose_config(base)
    density = OmegaConf.to_container(cfg.analysis.density, resolve=True)
    write_outputs(root / "results" / STAGE, runs, settings, load_dataset(cfg.dataset), density)


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
