"""What a run prints: third-party notices silenced at their source (real warnings still shown,
a switch restores them), a summary at the end of every run that agrees with its MLflow record,
and a table at the end of a multirun."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import warnings

import pytest
from support import REPO, all_runs, run_cli

from src.core.status import STATUSES
from src.runtime.console import (
    LEAFSPEC_WARNING,
    NOTICE_LOGGERS,
    VERBOSE_ENV,
    format_job_table,
    format_summary,
    quiet_notices,
    run_summary,
)
from src.runtime.stage import setup_logging, stage_parser

# The notices, as Lightning and torch print them (issue 13).
NOTICES = [
    "💡 Tip: For seamless cloud logging",
    "GPU available:",
    "TPU available:",
    "`Trainer(limit_train_batches=1.0)` was configured",
    "`isinstance(treespec, LeafSpec)` is deprecated",
]
TINY = ["dataset.limit_train=200", "dataset.resolution=7", "trainer.max_epochs=2", "analysis=off"]


@pytest.fixture
def notices_restored(monkeypatch):
    """Each test starts and ends with nothing silenced in this (pytest's) process."""
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    quiet_notices(verbose=True)
    yield
    quiet_notices(verbose=True)


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def lightning_notices() -> list[str]:
    """What Lightning's rank-zero logger lets through while a Trainer is built (the GPU, TPU,
    limit_train_batches and litlogger notices are all logged there)."""
    import pytorch_lightning as pl

    capture = Capture()
    rank_zero = logging.getLogger(NOTICE_LOGGERS[0])
    rank_zero.addHandler(capture)
    level = rank_zero.level
    rank_zero.setLevel(logging.INFO)
    try:
        pl.Trainer(accelerator="cpu", logger=False, limit_train_batches=1.0, max_epochs=1)
        rank_zero.info("a message of this run")  # anything else passes
    finally:
        rank_zero.removeHandler(capture)
        rank_zero.setLevel(level)
    return capture.messages


def shown(*messages: tuple[str, type[Warning]]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        for message, category in messages:
            warnings.warn(message, category, stacklevel=1)
    return [str(w.message) for w in caught]


def test_notices_are_silenced_and_the_switches_restore_them(notices_restored, monkeypatch):
    heard = lightning_notices()
    assert any(m.startswith("GPU available:") for m in heard)  # Lightning says them at all
    assert quiet_notices() is True
    assert lightning_notices() == ["a message of this run"]
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert quiet_notices() is False
    assert lightning_notices() == heard
    monkeypatch.setenv(VERBOSE_ENV, "0")
    assert quiet_notices() is True and quiet_notices(verbose=True) is False  # hydra.verbose
    assert lightning_notices() == heard


def test_real_warnings_are_still_shown(notices_restored):
    leafspec = LEAFSPEC_WARNING.replace("\\", "") + ", use `isinstance(...)` instead."
    with warnings.catch_warnings():
        warnings.resetwarnings()  # not pytest's filters (pyproject.toml ignores this one too)
        quiet_notices()
        assert quiet_notices() is True  # idempotent
        assert shown(
            ("x: a real warning", UserWarning),
            (leafspec, FutureWarning),
            ("another deprecation", FutureWarning),
        ) == ["x: a real warning", "another deprecation"]
        quiet_notices(verbose=True)
        assert shown((leafspec, FutureWarning)) == [leafspec]


def test_pipeline_stages_take_a_verbose_flag(notices_restored, monkeypatch):
    assert stage_parser("a stage").parse_args(["--verbose"]).verbose
    assert not stage_parser("a stage").parse_args([]).verbose
    monkeypatch.setenv(VERBOSE_ENV, "")  # restored after the test
    setup_logging(verbose=True)  # also for the workers and launchers it starts: the environment
    assert quiet_notices() is False


def test_summary_names_the_store_the_run_used(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    cfg = compose_cfg("logger=mlflow", "logger.experiment_name=exp")
    result = {
        "status": "converged",
        "reason": "stationary_below_affine",
        "final_train_loss": 0.03,
        "final_val_loss": 0.04,
        "loss_vs_affine": 0.75,
        "affine_baseline_loss": 0.04,
        "analysis": {"lambda_max": 3.5, "lr_times_lambda_max": 1.75},
        "epochs": 12,
        "run_id": "abc123",
        "output_dir": str(tmp_path),
    }
    summary = run_summary(result, logger=cfg.logger, wall_s=2.5, stability_limit=2.0)
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path}/env.db"
    text = format_summary(summary)
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/env.db" in text
    assert "abc123 (experiment exp)" in text and "1.75 (linearly stable at most 2)" in text
    cfg = compose_cfg("logger=none")
    text = format_summary(run_summary(result, logger=cfg.logger, wall_s=1.0))
    assert "tracking off" in text and "mlflow ui" not in text and "abc123" not in text
    table = format_job_table(
        [
            {**summary, "job_num": 1, "overrides": ["depth=2", "seed=0"]},
            {**summary, "job_num": 0, "overrides": ["depth=1", "seed=0"]},
        ]
    )
    lines = table.splitlines()
    assert lines[0] == "every job: seed=0" and lines[2].split()[:2] == ["0", "depth=1"]


def summary_fields(output: str) -> dict[str, str]:
    """The `label  value` lines of the (last) run summary printed."""
    block = output.rsplit("run summary", 1)[1].splitlines()[1:]
    fields = {}
    for line in block:
        match = re.match(r"^  (\S.*?)\s{2,}(.*)$", line)
        if not match:
            break
        fields[match[1]] = match[2]
    return fields


@pytest.mark.slow
def test_cli_run_is_quiet_and_its_summary_is_its_mlflow_record(tmp_path, mlflow_uri):
    import mlflow

    uri = mlflow_uri
    proc = run_cli(
        *TINY,
        "logger=mlflow",
        f"logger.tracking_uri={uri}",
        "logger.experiment_name=console",
        f"hydra.run.dir={tmp_path}/run",
        env={VERBOSE_ENV: ""},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert [n for n in NOTICES if n in output] == []
    fields = summary_fields(proc.stdout)
    (run,) = all_runs(uri)
    experiment = mlflow.MlflowClient(uri).get_experiment(run.info.experiment_id).name
    tags, metrics = run.data.tags, run.data.metrics
    assert fields["status"] == f"{tags['status']} ({tags['stop_reason']})"
    assert float(fields["train loss"]) == pytest.approx(metrics["final_train_loss"], rel=1e-5)
    assert float(fields["val loss"]) == pytest.approx(metrics["final_val_loss"], rel=1e-5)
    ratio = float(fields["loss / affine"].split()[0])
    assert ratio == pytest.approx(metrics["loss_vs_affine"], rel=1e-3)
    assert fields["MLflow run"] == f"{run.info.run_id} (experiment {experiment})"
    assert experiment == "console"
    assert fields["view it"] == f"mlflow ui --backend-store-uri {uri}"
    assert fields["outputs"] == f"{tmp_path}/run"
    assert fields["wall time"].endswith(f"s, {int(metrics['epochs'])} epochs")
    # Sortable and chartable, not only a tag: the status as a param and a metric.
    assert run.data.params["status"] == tags["status"]
    assert run.data.params["stop_reason"] == tags["stop_reason"]
    assert run.data.metrics["status_code"] == STATUSES.index(tags["status"])
    # The data set, as an MLflow dataset input with its resolution, noise and size.
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert dataset.name == "mnist5k 7x7 noise 1.25 n=200"
    profile = json.loads(dataset.profile)
    assert profile["resolution"] == "7x7" and profile["noise_std"] == 1.25
    assert (profile["n_train"], profile["d_in"]) == (200, 49)
    # Output is not a terminal: progress comes as log lines (first and last epoch here).
    assert re.search(r"epoch 1/2, train [\d.e-]+, val [\d.e-]+, .* elapsed", proc.stdout)
    assert "epoch 2/2" in proc.stdout and "\r" not in proc.stdout


@pytest.mark.slow
def test_progress_is_live_on_a_terminal_without_the_notices(tmp_path):
    """In a pseudo-terminal a run draws a progress bar that advances while it trains (not only
    at the end), and the silenced notices never appear."""
    master, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    epochs = 40
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.train", *TINY[:2], f"trainer.max_epochs={epochs}",
         "analysis=off", "logger=none", "callbacks.convergence.window=100",
         f"hydra.run.dir={tmp_path}/run"],
        cwd=REPO, stdin=replica, stdout=replica, stderr=replica,
        env={**os.environ, VERBOSE_ENV: "", "TERM": "xterm", "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    os.close(replica)
    seen_while_running, output = set(), b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        output += data
        if proc.poll() is None:
            seen_while_running |= set(re.findall(rb"\| *(\d+)/%d \[" % epochs, output))
    os.close(master)
    assert proc.wait(timeout=60) == 0, output.decode(errors="replace")[-3000:]
    text = output.decode(errors="replace")
    assert len(seen_while_running) >= 3, text[-3000:]  # the bar moved while training ran
    assert f"{epochs}/{epochs} [" in text and "epoch/s, train " in text
    assert [n for n in NOTICES if n in text] == []


@pytest.mark.slow
def test_multirun_ends_with_a_table_of_its_jobs_and_verbose_restores_notices(tmp_path, mlflow_uri):
    import mlflow

    uri = mlflow_uri
    proc = run_cli(
        "-m",
        "depth=1,2",
        "lr=0.5,0.25",
        *TINY,
        f"logger.tracking_uri={uri}",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "hydra.verbose=true",
        env={VERBOSE_ENV: ""},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert [n for n in NOTICES if n not in output] == []  # hydra.verbose: nothing silenced
    table = proc.stdout.split("multirun: 4 jobs", 1)[1].splitlines()
    rows = [line.split() for line in table if re.match(r"^\d+ ", line)]
    jobs = [["depth=1", "lr=0.5"], ["depth=1", "lr=0.25"], ["depth=2", "lr=0.5"],
            ["depth=2", "lr=0.25"]]  # fmt: skip
    assert [row[:3] for row in rows] == [[str(i), *job] for i, job in enumerate(jobs)]
    runs = all_runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("multirun") == "parent"]
    children = [r for r in runs if r is not parent]
    # One parent run named after the sweep, its four jobs nested under it, all closed.
    assert parent.info.run_name == f"sweep {tmp_path.name}/sweep: depth=1,2 lr=0.5,0.25"
    assert parent.data.tags["sweep_id"] == f"{tmp_path}/sweep"
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 4
    assert len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)
    by_job = {(r.data.params["model.depth"], r.data.params["optimizer.lr"]): r for r in children}
    ordered = [by_job[(d[6:], lr[3:])] for d, lr in jobs]
    assert [row[-1] for row in rows] == [r.info.run_id for r in ordered]
    assert [row[3] for row in rows] == [r.data.tags["status"] for r in ordered]
    # Each child's status sorts and filters as a param, and charts as a metric.
    client = mlflow.MlflowClient(uri)
    for status in {r.data.params["status"] for r in children}:
        found = client.search_runs(
            [parent.info.experiment_id], f"params.status = '{status}'", order_by=["params.status"]
        )
        assert {r.info.run_id for r in found} == {
            r.info.run_id for r in children if r.data.tags["status"] == status
        }
    assert all(r.data.metrics["status_code"] == STATUSES.index(r.data.params["status"])
               for r in children)  # fmt: skip
    assert f"view them: mlflow ui --backend-store-uri {uri}" in table
