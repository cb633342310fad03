"""DVC stage `report`: reports/REPORT.md and reports/claims.json from the saved results, and one
MLflow summary run holding the figures and the report.

Reads the grids, Table S1 with its run statuses, the gain profiles (also at other input radii),
the pairs of minima, the bisection of the stability boundary, and beyond the paper the further
methods' pairs and every minimum's trace and spectrum (src.report.inputs); judges each claim
(src.report.claims) and writes the report (src.report.render).

    python -m pipelines.report [--params params.yaml] [--root .]
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.core.files import write_json
from src.report.claims import check_beyond_claims, check_claims
from src.report.inputs import load_report_inputs
from src.report.render import claims_payload, render_report
from src.runtime.params import load_params, profile_settings
from src.runtime.stage import stage_main
from src.runtime.tracking import log_summary_run


def run(params_path: str, root: str) -> Path:
    params = load_params(params_path)
    profile = params["profile"]
    root = Path(root)
    notes = profile_settings(params, "report").get("notes", "")
    inputs = load_report_inputs(root / "results", profile, notes)
    claims, beyond = check_claims(inputs), check_beyond_claims(inputs)
    report = root / "reports" / "REPORT.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(inputs, claims, beyond))
    payload = claims_payload(profile, claims, beyond)
    write_json(root / "reports" / "claims.json", payload)
    every = [c.to_dict() for c in [*claims, *beyond]]
    log_summary_run(
        (params.get("mlflow") or {}).get("tracking_uri"),
        "report",
        f"pipeline-{profile}",
        tags={"profile": profile},
        metrics={f"claim.{c['name']}": float(c["holds"]) for c in every if c["holds"] is not None},
        artifacts=[(report, None)]
        + [(f, str(f.parent.relative_to(root))) for f in sorted((root / "figures").rglob("*.png"))],
        dicts={"claims.json": {"claims": every}},
    )
    return report


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: print(run(args.params, args.root)), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
