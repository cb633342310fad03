"""Verdict stability (issue 23 item 7; not a DVC stage: it runs the whole pipeline): `dvc repro`
again in a copy of the project with a rounding-only change, its verdicts written to
stability/rounding_variant.json; then the report stage is rerun here, and REPORT.md puts the
two verdict tables side by side (`undecided (sensitive)` where they differ).

    python -m pipelines.verdict_stability [--override compute.cpu.batch_models=false ...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from src.experiments.verdict_stability import VariantError, default_overrides, run_variant
from src.runtime.params import load_params
from src.runtime.stage import stage_main


def configure(parser) -> None:
    parser.add_argument(
        "--override",
        action="append",
        default=None,
        help="params.yaml key=value for the variant (default: compute.<profile>.batch_models=false)",
    )
    parser.add_argument("--workdir", default=None, help="where the copy runs (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the copy (to inspect it)")


def run(args) -> int:
    root = Path(args.root)
    profile = load_params(args.params)["profile"]
    overrides = args.override or default_overrides(profile)
    variant = run_variant(root, overrides, args.workdir and Path(args.workdir), args.keep)
    print(f"variant {overrides}: {variant['seconds']:.0f} s; verdicts in stability/")
    done = subprocess.run(["dvc", "repro", "report"], cwd=root)
    if done.returncode != 0:
        raise VariantError(f"dvc repro report failed (exit {done.returncode})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, __doc__, argv, configure)


if __name__ == "__main__":
    sys.exit(main())
