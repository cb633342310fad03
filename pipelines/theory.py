"""DVC stage `theory`: verify the paper's claims, draw Figures 1-3, log everything to MLflow.

    python -m pipelines.theory [--params params.yaml] [--root .]

Reads the ``theory:`` section of the params file, writes (relative to ``--root``)
  results/theory/verify.json        full report (claims, findings), as src.theory.verify writes it
  results/theory/metrics.json       flat metrics: worst error per claim, all_passed, findings gap
  results/theory/figure_data.npz    all data behind Figures 1-3
  figures/theory/{fig1_scalar_valley,fig2_interpolation,fig3_gains}.{png,pdf}
and logs them as one MLflow run in experiment "theory" (tracking URI: $MLFLOW_TRACKING_URI, else
``mlflow.tracking_uri`` of the params file, else sqlite:///mlflow.db in the current directory).
Exits with status 1 if any claim fails (after writing and logging everything).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from src.signals import exit_on_signals
from src.theory import figures, verify
from src.tracking import TrackingError, environment_first_uri, prepare_store, process_tags

VERIFY_JSON = Path("results/theory/verify.json")
METRICS_JSON = Path("results/theory/metrics.json")
FIGURE_DATA = Path("results/theory/figure_data.npz")
FIGURE_DIR = Path("figures/theory")

DEFAULTS = {
    "seeds": verify.DEFAULT_CASES,
    "base_seed": 0,
    "findings_cases": 2,
    "findings_dims": None,  # None: verify.FINDING_DIMS
    "figures": {"seed": 0, "fig3_dim": 4, "fig3_depth": 6, "fig3_networks": 4},
}


def load_settings(params_path: str | Path) -> dict:
    """The ``theory:`` section of the params file, with defaults for missing keys.

    If the file has a top-level ``profile`` key and ``theory`` has a sub-section of that name
    (e.g. ``theory: {cpu: {...}, full: {...}}``), that sub-section is used. A top-level
    ``mlflow.tracking_uri`` is kept as ``tracking_uri``.
    """
    with open(params_path) as handle:
        params = yaml.safe_load(handle) or {}
    section = params.get("theory") or {}
    profile = params.get("profile")
    if profile is not None and isinstance(section.get(profile), dict):
        section = section[profile]
    settings = {**DEFAULTS, **section}
    settings["figures"] = {**DEFAULTS["figures"], **(section.get("figures") or {})}
    settings["tracking_uri"] = (params.get("mlflow") or {}).get("tracking_uri")
    return settings


def flat_metrics(report: dict) -> dict[str, float]:
    """One number per claim (its worst error), all_passed, and the findings' relative gaps."""
    metrics = {}
    for name, claim in report["claims"].items():
        value = claim["worst_error"]
        metrics[f"{name}.worst_error"] = float(value) if not isinstance(value, str) else math.inf
    metrics["all_passed"] = float(report["all_passed"])
    finding = report.get("findings", {}).get("nonwhite_minimax_conjecture")
    if finding:
        for key in ("relative_gap_max", "relative_gap_median", "white_control_relative_gap_max"):
            metrics[f"nonwhite_minimax.{key}"] = finding[key]
    return metrics


def log_to_mlflow(
    settings: dict, metrics: dict[str, float], artifacts: list[tuple[Path, str]]
) -> str:
    """Log one run to experiment "theory" (artifacts: (file, artifact folder)); returns its id."""
    import mlflow

    uri = prepare_store(environment_first_uri(settings.get("tracking_uri")), "theory")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("theory")
    with mlflow.start_run(run_name="theory", tags=process_tags()) as run:
        mlflow.log_params(
            {
                "seeds": settings["seeds"],
                "base_seed": settings["base_seed"],
                "findings_cases": settings["findings_cases"],
                **{f"figures.{k}": v for k, v in settings["figures"].items()},
            }
        )
        # MLflow rejects non-finite metric values; a failed computation is visible as 1e300.
        mlflow.log_metrics({k: (v if math.isfinite(v) else 1e300) for k, v in metrics.items()})
        for path, folder in artifacts:
            mlflow.log_artifact(str(path), artifact_path=folder)
        return run.info.run_id


def run(params_path: str | Path, root: str | Path = ".") -> int:
    settings = load_settings(params_path)
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
    metrics = flat_metrics(report)
    (root / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n")

    fig = settings["figures"]
    data = figures.compute_figure_data(
        int(fig["seed"]), int(fig["fig3_dim"]), int(fig["fig3_depth"]), int(fig["fig3_networks"])
    )
    figures.save_figure_data(data, root / FIGURE_DATA)
    # Draw from the saved file, so the figures are exactly what the data file holds.
    paths = figures.make_figures(figures.load_figure_data(root / FIGURE_DATA), root / FIGURE_DIR)

    artifacts = [(root / VERIFY_JSON, "results"), (root / METRICS_JSON, "results")]
    run_id = log_to_mlflow(settings, metrics, artifacts + [(p, "figures") for p in paths])
    failed = [name for name, claim in report["claims"].items() if not claim["passed"]]
    print(f"mlflow run {run_id}; {len(report['claims'])} claims, failed: {failed or 'none'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DVC stage: theory verification and figures")
    parser.add_argument("--params", default="params.yaml", help="YAML file with a theory: section")
    parser.add_argument("--root", default=".", help="directory the fixed output paths are under")
    args = parser.parse_args(argv)
    exit_on_signals()
    try:
        return run(args.params, args.root)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
