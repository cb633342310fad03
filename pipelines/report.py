"""DVC stage `report`: reports/REPORT.md and reports/claims.json from the saved results, and one
MLflow summary run holding the figures and the report.

Reads the grids, Table S1 with its run statuses, the gain profiles (also at other input radii:
gains_by_radius.json), the pairs of minima, the bisection of the stability boundary
(results/boundary/boundary.json, when that stage has run), and beyond the paper the further
methods' pairs (pairs_others.csv) and every minimum's trace and spectrum (spectra.json).

    python -m pipelines.report [--params params.yaml] [--root .]
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from pipelines.common import load_params, profile_settings, stage_main
from src import tracking
from src.paper.report import (
    boundary_depths,
    check_beyond_claims,
    check_claims,
    render_report,
)
from src.paper.tables import load_json, read_csv, write_json

FIGURES = [
    ("Fig. 4a: sharpness over depth and step size, identity init", "fig4a_sharpness_identity.png"),
    (
        "Fig. 4d: the stability boundary lr_max(m) by bisection, and the flattest minimum vs 2/lr_max",
        "fig4d_lr_max_boundary.png",
    ),
    ("Fig. 4b: flattest minimum vs depth, identity init", "fig4b_flattest_vs_depth.png"),
    ("Sharpness vs the stability limit 2/η, identity init", "fig4c_stability_identity.png"),
    ("Fig. 5a: sharpness over depth and step size, He init", "fig5a_sharpness_he.png"),
    ("Fig. 5b: training curves, identity vs He init", "fig5b_training_curves.png"),
    ("Fig. 6: gain profiles, flat (SGD), sharp (Adam) and SAM", "fig6_gains.png"),
    (
        "Fig. 7: loss cross-sections between and around flat and sharp minima",
        "fig7_cross_sections.png",
    ),
    (
        "Fig. 7 for SAM: cross-sections between SAM's and Adam's minima",
        "fig7_cross_sections_sam.png",
    ),
    (
        "Hessian eigenvalue densities (stochastic Lanczos quadrature) of SGD's, Adam's and SAM's "
        "minima, λ_max marked",
        "fig_hessian_density.png",
    ),
    ("Linear nets: measured sharpness vs Thm 1, and η·λ_max", "linear_check.png"),
    ("Fig. 1 (theory): two-layer scalar valley and GD", "theory/fig1_scalar_valley.png"),
    ("Fig. 2 (theory): interpolation between scalar minima", "theory/fig2_interpolation.png"),
    ("Fig. 3 (theory): gains of arbitrary vs flattest linear minima", "theory/fig3_gains.png"),
]


def load_optional(path: Path):
    """A result another stage may not have written (e.g. the bisection in an old checkout)."""
    return load_json(path) if path.exists() else None


def stage_rows(table: dict, boundary: dict | None, identity: list, he: list) -> dict:
    """(status, reason) of every run per stage, for the report's status table."""
    stages = {
        "grid_identity": identity,
        "grid_he": he,
        "flat_vs_sharp": [
            run for row in table.values() if isinstance(row, dict) for run in row.get("runs", [])
        ],
    }
    if boundary:
        stages["boundary (probes)"] = [
            probe
            for entry in boundary_depths(boundary).values()
            for probe in entry.get("probes", [])
        ]
    return stages


def run(params_path: str, root: str) -> Path:
    params = load_params(params_path)
    profile = params["profile"]
    root = Path(root)
    results, reports = root / "results", root / "reports"
    identity = read_csv(results / "grid_identity" / "grid.csv")
    he = read_csv(results / "grid_he" / "grid.csv")
    pairs_path = results / "flat_vs_sharp" / "pairs.csv"
    pairs = [p for p in read_csv(pairs_path) if "flat_looks_sharper_on_line" in p]
    table = load_json(results / "flat_vs_sharp" / "table_s1.json")
    flat_summary = load_optional(results / "flat_vs_sharp" / "summary.json") or {}
    boundary = load_optional(results / "boundary" / "boundary.json")
    gains = load_json(results / "flat_vs_sharp" / "gains.json")
    other_pairs_path = results / "flat_vs_sharp" / "pairs_others.csv"
    other_pairs = [
        p
        for p in (read_csv(other_pairs_path) if other_pairs_path.exists() else [])
        if "flat_looks_sharper_on_line" in p
    ]
    beyond = check_beyond_claims(table, gains, other_pairs, flat_summary.get("others"))
    claims = check_claims(
        identity,
        he,
        table,
        gains,
        pairs,
        boundary=boundary,
        gains_radius=load_optional(results / "flat_vs_sharp" / "gains_by_radius.json"),
        skipped_pairs=flat_summary.get("pairs_skipped", []),
    )
    theory_metrics = results / "theory" / "metrics.json"
    text = render_report(
        profile,
        profile_settings(params, "report").get("notes", ""),
        claims,
        table,
        [(caption, f"../figures/{path}") for caption, path in FIGURES],
        {name: load_json(results / name / "summary.json") for name in ("grid_identity", "grid_he")},
        load_json(results / "linear_check" / "summary.json"),
        load_json(theory_metrics) if theory_metrics.exists() else None,
        stage_rows=stage_rows(table, boundary, identity, he),
        boundary=boundary,
        beyond=beyond,
        spectra=load_optional(results / "flat_vs_sharp" / "spectra.json"),
    )
    reports.mkdir(parents=True, exist_ok=True)
    report_path = reports / "REPORT.md"
    report_path.write_text(text)
    verdicts = Counter(c.verdict for c in claims)
    write_json(
        reports / "claims.json",
        {
            "profile": profile,
            "claims_holding": verdicts["holds"],
            "claims_not_holding": verdicts["does not hold"],
            "claims_undecided": verdicts["undecided"],
            "claims": {c.name: c.to_dict() for c in claims},
            "beyond_the_paper": {c.name: c.to_dict() for c in beyond},
        },
    )
    log_summary_run(params, root, report_path, [c.to_dict() for c in [*claims, *beyond]])
    return report_path


def log_summary_run(params: dict, root: Path, report_path: Path, claims: list[dict]) -> None:
    """One MLflow run (experiment "report") with the report, the claims and every figure."""
    import mlflow

    uri = tracking.environment_first_uri(params.get("mlflow", {}).get("tracking_uri"))
    tracking.prepare_store(uri, "report")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("report")
    with mlflow.start_run(run_name=f"pipeline-{params['profile']}", tags=tracking.process_tags()):
        mlflow.set_tag("profile", params["profile"])
        mlflow.log_metrics(
            {f"claim.{c['name']}": float(c["holds"]) for c in claims if c["holds"] is not None}
        )
        mlflow.log_artifact(str(report_path))
        mlflow.log_dict({"claims": claims}, "claims.json")
        for figure in sorted((root / "figures").rglob("*.png")):
            mlflow.log_artifact(str(figure), artifact_path=str(figure.parent.relative_to(root)))


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: print(run(args.params, args.root)), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
