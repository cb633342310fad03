"""Helpers shared by the tests (imported as `support`; fixtures live in conftest.py)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Small and fast on 2 CPU cores: few examples, few epochs, no analysis, no tracking
# (conf/debug/fast.yaml; command-line overrides win over its values).
FAST = ["+debug=fast"]


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
    (src.runtime.hydra_callbacks.ParentRun)."""
    return [r for r in all_runs(uri) if r.data.tags.get("multirun") != "parent"]


def parent_runs(uri: str):
    return [r for r in all_runs(uri) if r.data.tags.get("multirun") == "parent"]


def write_idx(
    root: Path, folder: str, n_train: int = 120, n_test: int = 40, seed: int = 0, size: int = 28
) -> Path:
    """Write the four MNIST IDX files (uint8 size x size images, labels) under
    root/folder/raw."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, n, size, size) + images.tobytes()
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


# dvc.yaml's stages as `dvc repro` names them (a foreach stage per item).
ALL_STAGES = {
    "theory",
    "grid@identity",
    "grid@he",
    "boundary",
    "curves",
    "flat_vs_sharp",
    "linear_check",
    "figures",
    "report",
}

# What a copy of the repository for a pipeline test leaves out (outputs, stores, caches).
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    "mlflow.db",
    "mlruns",
    "outputs",
    "multirun",
    "results",
    "figures",
    "reports",
    "data",
    "cache",
    "tmp",
    "dvc.lock",
    ".whl",
)


def stage_env(tmp: Path) -> dict:
    """The environment a DVC stage runs in: this venv's `python`, an MLflow store under tmp."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ['PATH']}",  # stage commands call `python`
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def run_ok(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    """Run a command that must succeed; its stdout and stderr."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout + proc.stderr


def stages_ran(output: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


# --- processes (Linux /proc) ---------------------------------------------------------------------

PROC = Path("/proc")
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process; None if it does not exist."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    state = process_state(pid)
    return state is not None and state[0] not in ("Z", "X")


def command_line(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """The living processes below `pid` (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (state := process_state(int(entry.name))) is not None:
            if state[0] not in ("Z", "X"):
                children.setdefault(state[1], []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return sorted(found)


def wait_until_gone(pids, timeout: float) -> list[int]:
    """Wait up to `timeout` s for every process of `pids` to end; those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def become_subreaper() -> bool:
    """Make this process adopt the orphans of its descendants (Linux), so that a process a
    test starts cannot escape the suite's check by losing its parent; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_children() -> None:
    """Collect the exit status of this process's ended children (adopted orphans included)."""
    for pid in [int(e.name) for e in PROC.iterdir() if e.name.isdigit()]:
        state = process_state(pid)
        if state is not None and state[1] == os.getpid() and state[0] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
