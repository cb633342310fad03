"""Faults injected one by one, as in the README's table "What happens when ...": kill -9,
SIGTERM, Ctrl-C (of a run, a grid stage and its workers, a multirun), concurrent first use of a
store, unwritable stores, full disk, corrupt data and result files, a terminal without a width,
file modes. Each test reproduces the fault and checks what the user sees."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from support import (
    REPO,
    all_runs,
    command_line,
    descendants,
    job_runs,
    parent_runs,
    stage_env,
    wait_until_gone,
    write_idx,
)

from src.core import files
from src.domain.data import DataError, load_dataset
from src.experiments import store
from src.experiments.grid import run_grid, train_cached
from src.runtime import tracking
from src.runtime.hydra_callbacks import JOBS_FILE
from src.runtime.tracking import TrackingError
from src.training.checkpoint import save_checkpoint
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


def wait_for_running_runs(
    uri: str, proc: subprocess.Popen, count: int = 1, timeout: float = 180, where=None
) -> list:
    """The `count` MLflow runs of `proc` (those for which `where(run)` holds) once they exist
    and training has begun in each (train_loss logged)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (proc.communicate()[1] or "")[-2000:]
        if Path(uri[len("sqlite:///") :]).exists():
            # read under the store's lock: this reader must not race the job's schema migration
            with tracking.store_lock(uri):
                runs = [r for r in all_runs(uri) if r.info.status == "RUNNING"]
            runs = [r for r in runs if "train_loss" in r.data.metrics and (not where or where(r))]
            if len(runs) >= count:
                return runs
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the runs never started")


def wait_for_running_run(uri: str, proc: subprocess.Popen, timeout: float = 180):
    """The MLflow run of `proc` once it exists and training has begun (train_loss logged)."""
    return wait_for_running_runs(uri, proc, 1, timeout)[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"]
)
def test_a_signal_ends_the_run_killed_with_a_conventional_exit_status(
    tmp_path, mlflow_uri, signum, status
):
    uri = mlflow_uri
    proc = start_cli(uri, *LONG_RUN, cwd=tmp_path / "run")
    run = wait_for_running_run(uri, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr[-2000:]
    (after,) = [r for r in all_runs(uri) if r.info.run_id == run.info.run_id]
    assert after.info.status == "KILLED"
    assert signal.Signals(signum).name in after.data.tags["failure_reason"]


@pytest.mark.slow
def test_kill_9_leaves_a_run_that_the_next_open_closes(tmp_path, mlflow_uri):
    uri = mlflow_uri
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


def long_grid_params(tmp_path: Path) -> Path:
    """params.yaml of a tiny grid stage whose two runs train until stopped, one per worker
    process, each alone (not batched: each has its own MLflow run while it trains)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    params["compute"]["tiny"].update(launcher="processes", workers=2, batch_models=False)
    params["training"]["tiny"]["overrides"] += [
        "trainer.max_epochs=100000",
        "callbacks.convergence.tol=1e-12",
    ]
    params["grid_identity"]["tiny"].update(depths=[2], lrs=[0.1, 0.2])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_stopped_grid_stage_leaves_no_worker_and_no_running_run(tmp_path, signum):
    """What DVC, a CI runner or SLURM does to a stage: its worker processes and the resource
    tracker end with it within 10 s, whatever signal (SIGKILL runs no code in the stage), and
    close their MLflow runs KILLED; none is left RUNNING once the next start has looked."""
    env = stage_env(tmp_path)
    uri = env["MLFLOW_TRACKING_URI"]
    cmd = [sys.executable, "-m", "pipelines.grid", "--stage", "grid_identity",
           "--params", str(long_grid_params(tmp_path)), "--root", str(tmp_path)]  # fmt: skip
    with (tmp_path / "stage.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        runs = wait_for_running_runs(uri, proc, count=2)
        children = descendants(proc.pid)
        commands = [command_line(pid) for pid in children]
        assert sum("spawn_main" in c for c in commands) == 2, commands  # the two workers
        assert any("resource_tracker" in c for c in commands), commands
        proc.send_signal(signum)
        assert wait_until_gone(children, 10) == [], [command_line(p) for p in children]
        assert proc.wait(60) == (-signal.SIGKILL if signum == signal.SIGKILL else 143)
    tracking.open_store(tracking.resolve_tracking_uri(uri))  # what the next start does
    after = {r.info.run_id: r for r in all_runs(uri)}
    assert {r.info.run_id for r in runs} == set(after)
    assert {r.info.status for r in after.values()} == {"KILLED"}
    reasons = {r.data.tags["failure_reason"] for r in after.values()}
    expected = (
        f"terminated (SIGTERM: process {proc.pid} that started this one ended)"
        if signum == signal.SIGKILL
        else "terminated (SIGTERM)"
    )
    assert reasons == {expected}, (tmp_path / "stage.log").read_text()[-3000:]


@pytest.mark.slow
def test_a_stopped_multirun_closes_its_parent_run_killed_and_lists_its_jobs(tmp_path, mlflow_uri):
    """SIGTERM during job 2 of 3: exit 143, job 1 FINISHED, job 2 and the sweep's parent run
    KILLED with the reason, the job table and multirun_jobs.jsonl with both jobs."""
    uri = mlflow_uri
    sweep = tmp_path / "sweep"
    overrides = [o for o in LONG_RUN if not o.startswith("trainer.max_epochs")]
    proc = start_cli(uri, "-m", *overrides, "trainer.max_epochs=1,100000,100001",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path / "run")  # fmt: skip
    wait_for_running_runs(uri, proc, where=lambda r: r.data.tags.get("hydra.job_num") == "1")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    jobs = {r.data.tags["hydra.job_num"]: r for r in job_runs(uri)}
    assert {n: r.info.status for n, r in jobs.items()} == {"0": "FINISHED", "1": "KILLED"}
    (parent,) = parent_runs(uri)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["failure_reason"] == "terminated (SIGTERM)"
    assert parent.data.metrics["jobs"] == 2 and parent.data.metrics["jobs_killed"] == 1
    rows = [json.loads(line) for line in (sweep / JOBS_FILE).read_text().splitlines()]
    assert [(row["job_num"], row["status"]) for row in rows] == [
        (0, "budget_exhausted"),
        (1, "killed"),
    ]
    table = stdout[stdout.index("multirun stopped (terminated (SIGTERM)): 2 jobs") :]
    assert "trainer.max_epochs=100000" in table and "killed" in table


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
     ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]],
    ids=["joblib", "submitit_local"],
)  # fmt: skip
def test_jobs_of_a_killed_multirun_end_with_it(tmp_path, mlflow_uri, launcher):
    """kill -9 of the launching process: the jobs a parallel launcher runs in other
    processes (joblib's workers; submitit_local's controllers and tasks) close their runs
    KILLED and end within 10 s, as does every helper process of the launcher."""
    uri = mlflow_uri
    overrides = [o for o in LONG_RUN if not o.startswith("depth=")]
    proc = start_cli(uri, "-m", *overrides, "depth=1,2", *launcher,
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path / "run")  # fmt: skip
    runs = wait_for_running_runs(uri, proc, count=2, where=lambda r: "multirun" not in r.data.tags)
    children = descendants(proc.pid)
    proc.kill()
    proc.communicate()
    assert wait_until_gone(children, 10) == [], [command_line(p) for p in children]
    after = {r.info.run_id: r for r in job_runs(uri)}
    assert {r.info.run_id for r in runs} == set(after)
    assert {r.info.status for r in after.values()} == {"KILLED"}
    reason = f"terminated (SIGTERM: process {proc.pid} that started this one ended)"
    assert {r.data.tags["failure_reason"] for r in after.values()} == {reason}


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


def _close_when_told(uri: str, run_file: Path, go: Path) -> None:
    """The owner of the run named in `run_file`: closes it (FINISHED) the way training does,
    once `go` exists."""
    try:
        while not run_file.exists():
            time.sleep(0.02)
        from pytorch_lightning.loggers import MLFlowLogger

        logger = MLFlowLogger(tracking_uri=uri, run_id=run_file.read_text())
        _ = logger.experiment
        Path(f"{go}.ready").touch()
        while not go.exists():
            time.sleep(0.02)
        tracking.end_run(logger, None)
    except BaseException:
        os._exit(1)
    os._exit(0)


def test_a_run_closed_during_the_stale_check_stays_finished(tmp_path, monkeypatch):
    """A process that closes its run and exits between the stale check's search and its look
    at the process: its run stays FINISHED (it was marked FAILED once, 1 trial in ~20 of 8
    processes starting at once). The look at the process is where the owner is let go. The
    owner is forked before this process opens the store (no shared sqlite connection)."""
    import pytorch_lightning.loggers  # noqa: F401  (imported before the fork, not in the child)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_file, go = tmp_path / "run_id", tmp_path / "go"
    owner = multiprocessing.get_context("fork").Process(
        target=_close_when_told, args=(uri, run_file, go)
    )
    owner.start()
    try:
        tracking.open_store(uri, "e")
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("e").experiment_id
        tags = {"host": socket.gethostname(), "pid": str(owner.pid)}
        run = client.create_run(experiment, tags=tags).info.run_id
        files.write_bytes(run_file, run.encode())  # atomic: the owner never reads half of it
        deadline = time.monotonic() + 120
        while not Path(f"{go}.ready").exists():
            assert owner.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)

        def owner_finishes_now(pid: int) -> bool:
            if pid != owner.pid:
                return True
            go.touch()
            owner.join(timeout=3)  # it closes its run and exits, unless the lock holds it
            return owner.is_alive()

        monkeypatch.setattr(tracking, "_process_exists", owner_finishes_now)
        assert tracking.open_store(uri, "e") == []
        owner.join(timeout=120)
        assert owner.exitcode == 0
    finally:
        owner.kill()
        owner.join()
    closed = client.get_run(run)
    assert closed.info.status == "FINISHED" and "failure_reason" not in closed.data.tags


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


# Root writes read-only files and folders: the command runs with every capability dropped.
UNPRIVILEGED = (
    [shutil.which("setpriv"), "--bounding-set=-all", "--inh-caps=-all"]
    if os.geteuid() == 0 and shutil.which("setpriv")
    else []
    if os.geteuid() != 0
    else None
)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.skipif(UNPRIVILEGED is None, reason="root without setpriv to drop capabilities")
@pytest.mark.parametrize("part", ["file", "folder"])
def test_read_only_store_is_one_line_before_anything_is_created(tmp_path, part):
    """A real check (chmod, no capabilities): one line naming the store and what is read-only,
    exit 1, before any training, and nothing created or changed beside the store."""
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracking.open_store(uri, "flatminima")  # a store in use, then made read-only
    (folder / "mlflow.db.lock").unlink()
    target = db if part == "file" else folder
    target.chmod(0o444 if part == "file" else 0o555)
    before = snapshot(folder)
    try:
        proc = subprocess.run(
            [*UNPRIVILEGED, sys.executable, "-m", "src.train", *TINY, "logger=mlflow",
             f"logger.tracking_uri={uri}", f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        after = snapshot(folder)
    finally:
        target.chmod(0o644 if part == "file" else 0o755)
    expected = {
        "file": f"the database file {db} is read-only",
        "folder": f"its folder {folder} is read-only",
    }[part]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: logger.tracking_uri: cannot use {uri}: {expected}")
    assert after == before  # no lock file, no journal, the database untouched
    assert not (tmp_path / "run" / "model.pt").exists()


def test_read_only_file_system_under_the_store_is_one_line(tmp_path, monkeypatch):
    """A store on a file system mounted read-only (statvfs reports it; mounting one needs
    privileges a test does not have): the same one line, naming the file system."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    statvfs = os.statvfs

    def read_only(path):
        result = statvfs(path)
        return type("StatVFS", (), {"f_flag": result.f_flag | os.ST_RDONLY})()

    monkeypatch.setattr(tracking.os, "statvfs", read_only)
    with pytest.raises(TrackingError) as err:
        tracking.check_writable(uri)
    assert str(err.value) == (
        f"logger.tracking_uri: cannot use {uri}: the file system of {tmp_path} is mounted read-only"
    )
    assert list(tmp_path.iterdir()) == []  # not even an empty database file


def test_unusable_store_from_the_command_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"
    proc = start_cli(uri, *TINY, cwd=tmp_path / "run")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: logger.tracking_uri: cannot use")


def fail_writes_to(monkeypatch, name: str) -> None:
    """Make the disk full for the file `name`: a write to its temporary file puts half of the
    bytes on the disk, then fails with ENOSPC, as a full disk does."""
    real_write = os.write

    def write(fd, data):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", write)


def test_full_disk_while_storing_a_result_leaves_no_partial_file(tmp_path, monkeypatch):
    fail_writes_to(monkeypatch, "abc.json")
    target = tmp_path / "results" / "abc.json"
    with pytest.raises(files.FileWriteError) as err:
        files.write_json(target, {"a": 1})
    assert str(err.value) == f"{target}: cannot write: no space left on device"
    assert err.value.errno == errno.ENOSPC  # still an OSError for those who catch one
    assert list(target.parent.iterdir()) == []  # neither the result nor a temporary file


@pytest.mark.parametrize(
    "name", ["model.pt", "hessian_eigenvector.pt", "gains.json", "gains.png"]
)  # fmt: skip
def test_full_disk_while_writing_a_run_file_is_one_line_and_fails_the_run(
    compose_cfg, tmp_path, mlflow_uri, monkeypatch, name
):
    """Every file a run writes is written to a temporary name and renamed: a full disk gives
    one line naming the file and "no space left", leaves no partial file, and the MLflow run
    is FAILED with that line as its reason."""
    fail_writes_to(monkeypatch, name)
    cfg = compose_cfg(*TINY, "analysis=default", "analysis.gains.restarts=2",
                      "analysis.gains.steps=3", "logger=mlflow")  # fmt: skip
    out = tmp_path / "out"
    with pytest.raises(files.FileWriteError) as err:
        train(cfg, output_dir=out)
    message = f"{out / name}: cannot write: no space left on device"
    assert str(err.value) == message
    assert not [p for p in out.iterdir() if p.name.startswith((name, f".{name}."))]
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == message


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_are_as_readable_as_the_umask_allows(tmp_path, mask, mode):
    """Results and a run's files get the mode a plain open() gives (0666 less the umask): a
    group sharing a results folder can read them where the umask allows."""
    previous = os.umask(mask)
    try:
        files.write_json(tmp_path / "result.json", {"a": 1})
        save_checkpoint(tmp_path / "model.pt", torch.nn.Linear(2, 2))
    finally:
        os.umask(previous)
    for name in ("result.json", "model.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_artifacts_of_a_sqlite_store_are_kept_beside_it(compose_cfg, tmp_path, monkeypatch):
    """Not in ./mlruns of whatever directory a run started in (MLflow's default), unless the
    user names a place (logger.artifact_location)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    cfg = [*TINY, "logger=mlflow", f"logger.tracking_uri={uri}"]
    train(compose_cfg(*cfg), output_dir=tmp_path / "a")
    (copy,) = (tmp_path / "store" / "mlartifacts" / "flatminima").rglob("model.pt")
    assert copy.read_bytes() == (tmp_path / "a" / "model.pt").read_bytes()
    chosen = tmp_path / "chosen"
    train(
        compose_cfg(*cfg, "logger.experiment_name=other", f"logger.artifact_location={chosen}"),
        output_dir=tmp_path / "b",
    )
    assert len(list(chosen.rglob("model.pt"))) == 1
    assert list(elsewhere.iterdir()) == []  # no ./mlruns


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


def test_idx_file_of_another_image_size_is_one_line_naming_it(tmp_path):
    """Well-formed IDX files of 5x5 images pass the header check: their size is checked
    against the digits' 28x28 before anything is reshaped."""
    raw = write_idx(tmp_path, "MNIST", size=5) / "MNIST" / "raw"
    cfg = {"name": "mnist", "data_dir": str(tmp_path), "download": False, "resolution": 7,
           "noise_std": 1.25, "noise_seed": 0, "resample_noise": False, "limit_train": None}  # fmt: skip
    with pytest.raises(DataError) as err:
        load_dataset(cfg)
    assert str(err.value).startswith(
        f"dataset.data_dir: {raw / 'train-images-idx3-ubyte'} holds 5x5 images; "
        "the digits must be 28x28"
    )
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
