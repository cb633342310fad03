"""Wall time of one command-line sweep under the basic and the batched launcher (not a test).

The same 16-job multirun (4 step sizes x 4 seeds, depth 6, width 196 = 14x14 digits, a fixed
number of epochs, the sharpness measured at the end of every run, each job tracked in MLflow)
is run end to end as `python -m src.train -m ...` under `hydra/launcher=basic` (jobs one after
another) and `hydra/launcher=batched` (the 16 jobs trained as one batched model), each into a
fresh MLflow store; the times include start-up, data loading and the per-run analysis. Prints
both times and their ratio (and writes them as JSON with --out).

    python benchmarks/sweep_throughput.py                      # CPU, 20 epochs
    python benchmarks/sweep_throughput.py --device gpu --logger none --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep_command(args: argparse.Namespace, launcher: str, sweep_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        f"hydra/launcher={launcher}",
        f"depth={args.depth}",
        "lr=" + ",".join(str(lr) for lr in args.lrs),
        "seed=" + ",".join(str(s) for s in range(args.seeds)),
        "dataset=mnist5k",
        f"dataset.resolution={args.resolution}",
        f"dataset.limit_train={args.n_train}",
        f"trainer={args.device}",
        f"trainer.max_epochs={args.epochs}",
        "callbacks.convergence.window=1000000",  # fixed epochs: no early stop
        "analysis.gains.enabled=false",
        "analysis.sharpness.save_eigenvector=false",
        "progress.mode=off",
        f"logger={args.logger}",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def time_sweep(args: argparse.Namespace, launcher: str, work: Path) -> float:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / launcher / 'mlflow.db'}"}
    (work / launcher).mkdir(parents=True)
    cmd = sweep_command(args, launcher, work / launcher / "sweep")
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{launcher} sweep failed:\n{done.stderr[-3000:]}")
    jobs = (work / launcher / "sweep" / "multirun_jobs.jsonl").read_text().splitlines()
    if len(jobs) != len(args.lrs) * args.seeds:
        sys.exit(f"{launcher} sweep: {len(jobs)} jobs in its table")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=14, help="14: width 196; 28: 784")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument(
        "--logger", choices=["mlflow", "none"], default="mlflow", help="none: no MLflow (GPU image)"
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {
            launcher: time_sweep(args, launcher, Path(tmp)) for launcher in ("basic", "batched")
        }
    jobs = len(args.lrs) * args.seeds
    ratio = seconds["basic"] / seconds["batched"]
    print(
        f"{jobs}-job sweep (depth {args.depth}, width {args.resolution**2}, {args.epochs} "
        f"epochs, {args.n_train} digits, {args.device}), end to end:"
    )
    print(f"  basic launcher    {seconds['basic']:8.1f} s")
    print(f"  batched launcher  {seconds['batched']:8.1f} s")
    print(f"  batched is {ratio:.2f}x faster")
    if args.out:
        args.out.write_text(json.dumps({**vars(args), "out": None, **seconds, "ratio": ratio}))


if __name__ == "__main__":
    main()
