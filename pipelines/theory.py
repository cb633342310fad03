"""DVC stage `theory`: verify the paper's claims, draw Figures 1-3, log everything to MLflow.

    python -m pipelines.theory [--params params.yaml] [--root .]

Reads the profile's ``theory`` settings of the params file (src.theory.verify's cases, seeds
and findings; the figures' sizes), writes (relative to ``--root``)
  results/theory/verify.json        full report (claims, findings), as src.theory.verify writes it
  results/theory/metrics.json       flat metrics: worst error per claim, all_passed, findings gap
  results/theory/figure_data.npz    all data behind Figures 1-3
  figures/theory/{fig1_scalar_valley,fig2_interpolation,fig3_gains}.{png,pdf}
and logs them as one MLflow run in experiment "theory" (tracking URI: $MLFLOW_TRACKING_URI, else
``mlflow.tracking_uri`` of the params file, else sqlite:///mlflow.db in the current directory).
Exits with status 1 if any claim fails (after writing and logging everything).
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.runtime.params import load_params, profile_settings
from src.runtime.stage import stage_main
from src.runtime.tracking import log_summary_run
from src.theory import figures, verify

VERIFY_JSON = Path("results/theory/verify.json")
METRICS_JSON = Path("results/theory/metrics.json")
FIGURE_DATA = Path("results/theory/figure_data.npz")
FIGURE_DIR = Path("figures/theory")


def run(params_path: str, root: str) -> int:
    params = load_params(params_path)
    settings = verify.stage_settings(profile_settings(params, "theory"))
    root = Path(root)
    dims = settings["findings_dims"]
    report = verify.verify(
        cases=int(settings["seeds"]),
        base_seed=int(settings["base_seed"]),
        findings_cases=int(settings["findings_cases"]),
        findings_dims=[tuple(d) for d in dims] if dims else verify.FINDING_DIMS,
        log=lambda line: print(line, file=sys.stderr),
    )
    verify.write_report(report, root / VERIFY_JSON)
    metrics = verify.flat_metrics(report)
    verify.write_report(metrics, root / METRICS_JSON)

    fig = settings["figures"]
    data = figures.compute_figure_data(
        int(fig["seed"]), int(fig["fig3_dim"]), int(fig["fig3_depth"]), int(fig["fig3_networks"])
    )
    figures.save_figure_data(data, root / FIGURE_DATA)
    # Draw from the saved file, so the figures are exactly what the data file holds.
    paths = figures.make_figures(figures.load_figure_data(root / FIGURE_DATA), root / FIGURE_DIR)

    run_id = log_summary_run(
        (params.get("mlflow") or {}).get("tracking_uri"),
        "theory",
        "theory",
        params={
            "seeds": settings["seeds"],
            "base_seed": settings["base_seed"],
            "findings_cases": settings["findings_cases"],
            **{f"figures.{k}": v for k, v in fig.items()},
        },
        metrics=metrics,
        artifacts=[(root / VERIFY_JSON, "results"), (root / METRICS_JSON, "results")]
        + [(p, "figures") for p in paths],
    )
    failed = [name for name, claim in report["claims"].items() if not claim["passed"]]
    print(f"mlflow run {run_id}; {len(report['claims'])} claims, failed: {failed or 'none'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: run(args.params, args.root), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
