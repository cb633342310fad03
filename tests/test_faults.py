"""Faults injected one by one, as in the README's table "What happens when ...": kill -9,
SIGTERM, Ctrl-C, concurrent first use of a store, unwritable stores, full disk, corrupt data
and result files. Each test reproduces the fault and checks what the user sees."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from support import REPO, all_runs, write_idx

from src.core import files
from src.domain.data import DataError, load_dataset
from src.experiments import store
from src.experiments.grid import run_grid, train_cached
from src.runtime import tracking
from src.runtime.tracking import TrackingError
from src.training.run import train

# A run that trains for minutes unless stopped: the signal tests stop it.
LONG_RUN = [
    "dataset.limit_train=200",
    "dataset.resolution=7",
    "depth=2",
    "trainer.max_epochs=100000",
    "callbacks.convergence.tol=1e-12",
    "analysis=off",
    "logger.log_checkpoint=false",
]
TINY = ["dataset.limit_train=100", "dataset.resolution=7", "depth=2", "trainer.max_epochs=1",
        "analysis=off"]  # fmt: skip


def start_cli(uri: str, *overrides: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "src.train",
            *overrides,
            f"logger.tracking_uri={uri}",
            f"hydra.run.dir={cwd}",
        ],  # fmt: skip
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_running_run(uri: str, proc: subprocess.Popen, timeout: float = 120):
    """The MLflow run of `proc` once it exists and training has begun (train_loss logged)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if Path(uri[len("sqlite:///") :]).exists():
            # read under the store's lock: this reader must not race the job's schema migration
            with tracking.store_lock(uri):
                runs = [r for r in all_runs(uri) if r.info.status == "RUNNING"]
            if runs and "train_loss" in runs[0].data.metrics:
                return runs[0]
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the run never started")


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"]
)
def test_a_signal_ends_the_run_killed_with_a_conventional_exit_status(tmp_path, signum, status):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = start_cli(uri, *LONG_RUN, cwd=tmp_path / "run")
    run = wait_for_running_run(uri, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr[-2000:]
    (after,) = [r for r in all_runs(uri) if r.info.run_id == run.info.run_id]
    assert after.info.status == "KILLED"
    assert signal.Signals(signum).name in after.data.tags["failure_reason"]


@pytest.mark.slow
def test_kill_9_leaves_a_run_that_the_next_open_closes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = start_cli(uri, *LONG_RUN, cwd=tmp_path / "run")
    run = wait_for_running_run(uri, proc)
    assert run.data.tags["host"] == socket.gethostname()
    assert run.data.tags["pid"] == str(proc.pid)
    proc.kill()
    proc.wait()
    (still,) = all_runs(uri)
    assert still.info.status == "RUNNING"  # nothing could mark it
    tracking.prepare_store(uri, "flatminima")  # what every entry point does first
    (closed,) = all_runs(uri)
    assert closed.info.status == "FAILED"
    assert f"process {proc.pid}" in closed.data.tags["failure_reason"]


def test_close_stale_command(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dead = subprocess.Popen(["true"])
    dead.wait()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("e")
    tags = {"host": socket.gethostname()}
    stale = client.create_run(experiment, tags={**tags, "pid": str(dead.pid)})
    alive = client.create_run(experiment, tags={**tags, "pid": str(os.getpid())})
    other_host = client.create_run(experiment, tags={"host": "elsewhere", "pid": str(dead.pid)})
    done = subprocess.run(
        [sys.executable, "-m", "src.runtime.tracking", "close-stale", "--uri", uri],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "closed 1 stale run" in done.stdout and stale.info.run_id in done.stdout
    status = {r: client.get_run(r).info.status for r in
              (stale.info.run_id, alive.info.run_id, other_host.info.run_id)}  # fmt: skip
    assert status == {
        stale.info.run_id: "FAILED",
        alive.info.run_id: "RUNNING",
        other_host.info.run_id: "RUNNING",
    }


def _load_worker(uri: str, name: str) -> None:
    """One process's first use of the store, by the path training takes (make_mlflow_logger)."""
    try:
        logger = tracking.make_mlflow_logger(uri, "load", name, {})
        logger.log_metrics({"x": 1.0}, step=0)
        tracking.end_run(logger, None)
    except BaseException:
        os._exit(1)
    os._exit(0)


@pytest.mark.slow
def test_load_eight_processes_start_at_once_on_a_new_store(tmp_path):
    """8 processes open a new sqlite store at the same moment, 5 times over: every run is
    recorded FINISHED and the store stays usable (without the lock, MLflow's migration races
    and can leave the schema half-migrated for good). The processes are forked from this one,
    with MLflow and Lightning already imported, so they start at the same instant."""
    import pytorch_lightning.loggers  # noqa: F401  (imported before the fork, not in each child)

    fork = multiprocessing.get_context("fork")
    for trial in range(5):
        uri = f"sqlite:///{tmp_path / f'trial{trial}.db'}"
        procs = [fork.Process(target=_load_worker, args=(uri, f"w{i}")) for i in range(8)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=300)
        assert [proc.exitcode for proc in procs] == [0] * 8
        runs = all_runs(uri)
        assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
        mlflow.MlflowClient(tracking_uri=uri).create_experiment("still usable")


@pytest.mark.slow
def test_two_training_jobs_start_at_once_on_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [start_cli(uri, *TINY, f"seed={s}", cwd=tmp_path / str(s)) for s in (0, 1)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    runs = all_runs(uri)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.parametrize(
    "make_store,cause",
    [
        (lambda d: f"sqlite:///{d / 'missing' / 'mlflow.db'}", "does not exist"),
        (
            lambda d: (d / "x.db").write_bytes(os.urandom(4096)) and f"sqlite:///{d / 'x.db'}",
            "file is not a database",
        ),
        (
            lambda d: (d / "file").write_text("") or f"sqlite:///{d / 'file' / 'mlflow.db'}",
            "does not exist",
        ),
    ],
    ids=["missing-folder", "not-a-database", "folder-is-a-file"],
)
def test_unusable_store_is_one_line_within_seconds(compose_cfg, tmp_path, make_store, cause):
    uri = make_store(tmp_path)
    start = time.monotonic()
    with pytest.raises(TrackingError) as err:
        train(
            compose_cfg(*TINY, "logger=mlflow", f"logger.tracking_uri={uri}"), output_dir=tmp_path
        )
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message and message.startswith("logger.tracking_uri: cannot use")
    assert uri.removeprefix("sqlite:///") in message and cause in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files and folders")
def test_read_only_store_folder_is_one_line(compose_cfg, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.raises(TrackingError, match="cannot use .*ro/mlflow.db"):
        train(
            compose_cfg(*TINY, "logger=mlflow", f"logger.tracking_uri={uri}"), output_dir=tmp_path
        )


def test_unusable_store_from_the_command_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"
    proc = start_cli(uri, *TINY, cwd=tmp_path / "run")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: logger.tracking_uri: cannot use")


def test_full_disk_while_storing_a_result_leaves_no_partial_file(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    target = tmp_path / "results" / "abc.json"
    with pytest.raises(OSError, match="No space left"):
        files.write_json(target, {"a": 1})
    assert list(target.parent.iterdir()) == []  # neither the result nor a temporary file


@pytest.mark.parametrize("kind", ["random-bytes", "truncated"])
def test_corrupt_mnist_file_is_one_line_naming_it(tmp_path, kind):
    raw = write_idx(tmp_path, "MNIST") / "MNIST" / "raw"
    bad = raw / "train-images-idx3-ubyte"
    if kind == "random-bytes":
        bad.write_bytes(os.urandom(100))
        expected = "is not an IDX file"
    else:
        bad.write_bytes(bad.read_bytes()[:-500])
        expected = "is truncated: its header says 120x28x28 bytes"
    cfg = {"name": "mnist", "data_dir": str(tmp_path), "download": False, "resolution": 28,
           "noise_std": 1.25, "noise_seed": 0, "resample_noise": False, "limit_train": None}  # fmt: skip
    with pytest.raises(DataError) as err:
        load_dataset(cfg)
    assert str(bad) in str(err.value) and expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_text("{}"),
        lambda p: p.write_text(p.read_text()[:50]),
        lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),
    ],
    ids=["empty-object", "truncated", "binary"],
)
def test_invalid_result_file_is_reported_moved_aside_and_retrained(
    compose_cfg, tmp_path, caplog, damage
):
    results = tmp_path / "runs"
    cfg = compose_cfg(*TINY)
    first = train_cached(cfg, results)
    path = results / f"{first['key']}.json"
    damage(path)
    with caplog.at_level("WARNING"):
        again = train_cached(cfg, results)
    assert again["key"] == first["key"] and path.is_file()
    assert json.loads(path.read_text())["schema"] == store.SCHEMA_VERSION
    (aside,) = (results / "invalid").iterdir()
    assert aside.name.startswith(path.name)
    assert str(path) in caplog.text and "trained again" in caplog.text


def test_stored_paths_are_relative_so_a_copied_checkout_uses_its_own_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = [*TINY, "analysis=default", "analysis.gains.enabled=false", "logger=none"]
    (result,) = run_grid(base, {"seed": [0]}, tmp_path / "a" / "results" / "runs",
                         output_root=tmp_path / "a" / "outputs")  # fmt: skip
    stored = json.loads((tmp_path / "a" / "results" / "runs" / f"{result['key']}.json").read_text())
    for field in ("checkpoint_path", "output_dir"):
        assert not Path(stored[field]).is_absolute()
    assert not Path(stored["analysis"]["eigenvector_path"]).is_absolute()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    loaded = store.load_result(tmp_path / "b" / "results" / "runs" / f"{result['key']}.json")
    assert Path(loaded["checkpoint_path"]).is_file()
    assert Path(loaded["checkpoint_path"]).is_relative_to(tmp_path / "b")
    assert Path(loaded["analysis"]["eigenvector_path"]).is_relative_to(tmp_path / "b")


def test_a_pipeline_stage_killed_by_sigterm_exits_143(tmp_path):
    """stage_main (every DVC stage's entry) turns SIGTERM into exit status 143, so DVC marks
    the stage failed instead of taking a killed stage for a finished one."""
    from src.runtime.stage import stage_main

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    reached = []

    def run(args):
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the signal")  # never: the handler raises

    try:
        with pytest.raises(SystemExit) as exit_info:
            stage_main(run, "a stage", argv=["--root", str(tmp_path)])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert exit_info.value.code == 143 and reached == []
