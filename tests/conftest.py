"""Shared fixtures: composing the real Hydra configs and temporary MLflow stores; and the
check that no process a test started outlives the suite."""

from __future__ import annotations

import os

# Under pytest-xdist the workers share the cores: each gets its share of OpenMP threads (torch,
# numpy), set before either is imported and inherited by the commands the tests start. Two
# workers of 2 threads each on 2 cores spin in each other's barriers: `make test` took 533 s of
# pytest against 418 s with one thread per worker.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault(
        "OMP_NUM_THREADS",
        str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))),
    )

import shutil
import signal
from multiprocessing import resource_tracker
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from support import (
    CONF,
    FAST,
    PROC,
    become_subreaper,
    command_line,
    descendants,
    reap_children,
    wait_until_gone,
)

# How long processes still closing at the end may take. A pool worker spawned just before its
# stage was SIGKILLed ends only once it has imported torch and run its initializer (which
# sees the parent gone): on 2 busy cores that took over 20 s once.
LEFTOVER_GRACE_S = 60.0


# The modules that take minutes, longest first, put at the head of the collection: `make test`
# hands whole files to its two pytest-xdist workers in collection order (--dist loadfile
# --no-loadscope-reorder), so both start on a long one and end together, instead of one
# finishing the pipeline test alone while the other idles.
LONGEST_FIRST = ("test_pipeline.py", "test_faults.py", "test_sweeps.py", "test_sharpness.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable for the rest


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite():
    """At the end of the session (of each pytest-xdist worker: its own tests), every process
    its tests started has ended. This process adopts the orphans of its descendants
    (become_subreaper), so a worker whose parent was killed still counts. The one exception:
    this process's own multiprocessing resource tracker, which ends when this process does.
    What is left is listed, killed (they are this suite's), and fails the session."""
    if not PROC.is_dir() or not become_subreaper():
        yield
        return
    yield
    own_tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    left = [pid for pid in descendants(os.getpid()) if pid != own_tracker]
    left = wait_until_gone(left, LEFTOVER_GRACE_S)
    described = [f"{pid}: {command_line(pid)[:200]}" for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until_gone(left, 5)
    reap_children()
    assert not described, "processes left behind by the tests:\n" + "\n".join(described)


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> DictConfig from conf/ (Hydra's own compose API)."""

    def _compose(*overrides: str, fast: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*(FAST if fast else []), *overrides])

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An empty sqlite MLflow store, created once per worker: MLflow's schema migrations take
    ~2 s per new store, a copy of the migrated file milliseconds. (The tests of how a new store
    is created, concurrently or not, make their own.)"""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def new_mlflow_store(empty_mlflow_store):
    """new_mlflow_store(path) -> the URI of a fresh, empty sqlite MLflow store at `path` (a
    copy of `empty_mlflow_store`)."""

    def make(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_mlflow_store, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch, new_mlflow_store):
    """A fresh, empty sqlite MLflow store; MLFLOW_TRACKING_URI points at it."""
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
