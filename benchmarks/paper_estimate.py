"""Wall time of the paper profile's training grids from measured per-step and per-HVP costs.

The grids (params.yaml, profile `paper`: depths x step sizes x inits, plus curves and
flat_vs_sharp) are counted from params.yaml. Costs are given per depth, as measured by
benchmarks/train_throughput.py (ms per model-step of the path that will run them, e.g. the
batched one) and benchmarks/hessian_benchmark.py (ms per full-data HVP); each is fitted as
a + b * depth (a straight line through the measurements: both are sums of per-layer work) and
evaluated at every depth of the grid.

    python benchmarks/paper_estimate.py --step-ms 2:0.10 6:0.24 18:0.70 --hvp-ms 6:98 12:203

Two totals are printed: every run trains to max_epochs (an upper bound), and every run
stops after --typical-epochs. A diverging run stops after an epoch or two, so the truth lies
below the bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def costs(pairs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    depths, values = zip(*((int(p.split(":")[0]), float(p.split(":")[1])) for p in pairs))
    return np.array(depths, float), np.array(values, float)


def linear_in_depth(pairs: list[str]):
    depths, values = costs(pairs)
    if len(depths) == 1:
        return lambda m: values[0] * m / depths[0]  # proportional to depth
    slope, intercept = np.polyfit(depths, values, 1)
    return lambda m: max(intercept + slope * m, 0.0)


def paper_runs(params: dict) -> list[tuple[str, int, int]]:
    """(stage, depth, max_epochs) of every training run of the paper profile."""
    shared = params["training"]["paper"]["overrides"]
    max_epochs = next(int(o.split("=")[1]) for o in shared if o.startswith("trainer.max_epochs="))
    runs = []
    for stage in ("grid_identity", "grid_he"):
        grid = params[stage]["paper"]
        runs += [(stage, d, max_epochs) for d in grid["depths"] for _ in grid["lrs"]]
    curves = params["curves"]["paper"]
    runs += [("curves", curves["depth"], max_epochs) for _ in curves["inits"]]
    fvs = params["flat_vs_sharp"]["paper"]
    runs += [
        ("flat_vs_sharp", fvs["depth"], max_epochs) for _ in fvs["methods"] for _ in fvs["seeds"]
    ]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--step-ms", nargs="+", required=True, help="depth:ms per model-step")
    parser.add_argument("--hvp-ms", nargs="+", required=True, help="depth:ms per full-data HVP")
    parser.add_argument("--hvps", type=int, default=40, help="HVPs per lambda_max (Lanczos)")
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--typical-epochs", type=int, default=20)
    args = parser.parse_args()

    params = yaml.safe_load(args.params.read_text())
    step_ms, hvp_ms = linear_in_depth(args.step_ms), linear_in_depth(args.hvp_ms)
    steps_per_epoch = -(-args.n_train // args.batch_size)
    runs = paper_runs(params)
    rows = {}
    for stage, depth, max_epochs in runs:
        row = rows.setdefault(stage, {"runs": 0, "bound_s": 0.0, "typical_s": 0.0, "hess_s": 0.0})
        row["runs"] += 1
        step_seconds = steps_per_epoch * step_ms(depth) / 1e3
        row["bound_s"] += max_epochs * step_seconds
        row["typical_s"] += min(args.typical_epochs, max_epochs) * step_seconds
        row["hess_s"] += args.hvps * hvp_ms(depth) / 1e3
    print(
        f"| stage | runs | training, max_epochs (min) | training, {args.typical_epochs} epochs "
        "(min) | lambda_max (min) |"
    )
    print("|---|---|---|---|---|")
    total = {"runs": 0, "bound_s": 0.0, "typical_s": 0.0, "hess_s": 0.0}
    for stage, row in rows.items():
        for key in total:
            total[key] += row[key]
        print(
            f"| {stage} | {row['runs']} | {row['bound_s'] / 60:.1f} | "
            f"{row['typical_s'] / 60:.1f} | {row['hess_s'] / 60:.1f} |"
        )
    print(
        f"| **total** | {total['runs']} | {total['bound_s'] / 60:.1f} | "
        f"{total['typical_s'] / 60:.1f} | {total['hess_s'] / 60:.1f} |"
    )
    print(
        f"\nwhole profile: {(total['typical_s'] + total['hess_s']) / 60:.0f} min with "
        f"{args.typical_epochs} epochs per run, at most "
        f"{(total['bound_s'] + total['hess_s']) / 60:.0f} min"
    )


if __name__ == "__main__":
    sys.exit(main())
