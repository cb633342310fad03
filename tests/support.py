"""Helpers shared by the tests (imported as `support`; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Small and fast on 2 CPU cores: few examples, few epochs, no analysis, no tracking.
FAST = [
    "dataset.limit_train=200",
    "trainer.max_epochs=2",
    "analysis=off",
    "logger=none",
]


# A whitened linear regression that full-batch GD solves within a few hundred epochs.
CONVERGING_LINEAR_RUN = (
    "dataset=synthetic",
    "model=linear",
    "depth=2",
    "lr=2.0",
    "batch_size=200",  # full-batch GD on the 200 examples FAST keeps
    "trainer.max_epochs=500",
    "callbacks.convergence.tol=1e-5",
    "callbacks.convergence.window=3",
)


def all_runs(uri: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def job_runs(uri: str):
    """The training runs of a store, without the parent runs Hydra multiruns create
    (src.hydra_callbacks.ParentRun)."""
    return [r for r in all_runs(uri) if r.data.tags.get("multirun") != "parent"]


def parent_runs(uri: str):
    return [r for r in all_runs(uri) if r.data.tags.get("multirun") == "parent"]


def write_idx(root: Path, folder: str, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """Write the four MNIST IDX files (uint8 28x28 images, labels) under root/folder/raw."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, n) + labels.tobytes()
        )
    return root


def run_cli(*args: str, env: dict | None = None, timeout: int = 600):
    """Run `python -m src.train ...` in a subprocess from the repo root."""
    import subprocess

    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
