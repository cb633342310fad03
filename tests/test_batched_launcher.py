"""`hydra/launcher=batched`: a command-line multirun whose compatible jobs train as one batched
model, each job still its own Hydra job, output folder and MLflow run, compared with the basic
launcher on the same sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from support import REPO, job_runs, parent_runs, run_cli

from src.launcher import SweepJob, plan_groups

pytestmark = pytest.mark.slow  # end to end: see `make test-fast`

# Tiny and tracked: 7x7 digits, 3 epochs, the sharpness measured at the end (no gains).
SMALL = [
    "+debug=fast",
    "logger=mlflow",
    "analysis=default",
    "analysis.gains.enabled=false",
    "analysis.sharpness.tol=1e-6",
    "dataset.resolution=7",
    "trainer.max_epochs=3",
]
# Batched and single runs differ by float rounding only (baddbmm vs mm; tests/test_fast_paths):
# losses after 3 epochs agree to 1e-5 relative, lambda_max (a Lanczos solve to 1e-6) to 1e-4.
LOSS_RTOL = 1e-5
LAMBDA_RTOL = 1e-4


def _by_job(uri):
    return {int(r.data.tags["hydra.job_num"]): r for r in job_runs(uri)}


def _jobs_file(sweep):
    return [json.loads(line) for line in (sweep / "multirun_jobs.jsonl").read_text().splitlines()]


def test_plan_groups_keeps_order_and_splits_at_the_limit():
    def job(num, key):
        return SweepJob(num, [], None, key=key)  # type: ignore[arg-type]

    jobs = [job(0, "a"), job(1, "b"), job(2, "a"), job(3, None), job(4, "a"), job(5, "b")]
    groups = [[j.num for j in g] for g in plan_groups(jobs, max_models=2)]
    assert groups == [[0, 2], [1, 5], [3], [4]]
    assert [[j.num for j in g] for g in plan_groups(jobs, 16)] == [[0, 2, 4], [1, 5], [3]]


def test_four_jobs_match_the_basic_launcher(tmp_path, monkeypatch, new_mlflow_store):
    sweep = ["-m", "depth=2", "lr=0.1,0.5", "seed=0,1", *SMALL]
    results = {}
    for launcher in ("basic", "batched"):
        uri = new_mlflow_store(tmp_path / launcher / "mlflow.db")
        proc = run_cli(
            *sweep,
            f"hydra/launcher={launcher}",
            f"hydra.sweep.dir={tmp_path / launcher / 'sweep'}",
            env={"MLFLOW_TRACKING_URI": uri},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[launcher] = (uri, proc.stdout)
    (basic_uri, _), (batched_uri, stdout) = results["basic"], results["batched"]
    basic, batched = _by_job(basic_uri), _by_job(batched_uri)
    assert sorted(basic) == sorted(batched) == [0, 1, 2, 3]
    (parent,) = parent_runs(batched_uri)
    assert len(parent_runs(basic_uri)) == 1
    for num, one in basic.items():
        other = batched[num]
        assert other.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert other.data.tags["batched_models"] == "4"
        for tag in ("hydra.job_num", "hydra.overrides", "status", "reason", "init", "dataset"):
            assert other.data.tags.get(tag) == one.data.tags.get(tag), tag
        # the command that retrains the job alone: the same but for the launcher and sweep dir
        assert other.data.tags["command"].split()[-2:] == one.data.tags["command"].split()[-2:]
        store = "logger.tracking_uri"  # each launcher's sweep went to its own store
        assert {k: v for k, v in other.data.params.items() if k != store} == {
            k: v for k, v in one.data.params.items() if k != store
        }
        assert other.info.status == one.info.status == "FINISHED"
        for metric, rtol in (("final_train_loss", LOSS_RTOL), ("lambda_max", LAMBDA_RTOL)):
            assert other.data.metrics[metric] == pytest.approx(one.data.metrics[metric], rel=rtol)
        folder = tmp_path / "batched" / "sweep" / str(num)
        assert (folder / "model.pt").stat().st_size > 0
        assert (folder / ".hydra" / "overrides.yaml").exists()
        assert "batched model" in (folder / "train.log").read_text()
    assert [row["job_num"] for row in _jobs_file(tmp_path / "batched" / "sweep")] == [0, 1, 2, 3]
    assert "multirun: 4 jobs" in stdout and stdout.count("run summary, job #") == 4
    assert "trained with jobs #0-#3 as one batched model (4 models)" in stdout


def test_two_depths_batch_apart_and_a_bad_value_is_one_line(tmp_path, mlflow_uri):
    """Depth 1 and 2 cannot share a batch: two groups. lr=1e4 diverges, the others finish;
    a bad value (a negative step size) is one line naming its key, and no run."""
    proc = run_cli(
        "-m",
        "depth=1,2",
        "lr=0.1,1e4,-1",
        *SMALL,
        "hydra/launcher=batched",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("lr=-1" in e and "optimizer.lr" in e for e in errors)
    assert "Traceback" not in proc.stderr
    assert "trained with jobs #0-#1 as one batched model (2 models)" in proc.stdout
    assert "trained with jobs #3-#4 as one batched model (2 models)" in proc.stdout
    runs = _by_job(mlflow_uri)
    assert sorted(runs) == [0, 1, 3, 4]  # no run for the bad values (jobs 2 and 5)
    assert {runs[n].data.tags["status"] for n in (1, 4)} == {"diverged"}
    assert all(runs[n].info.status == "FINISHED" for n in runs)
    rows = {row["job_num"]: row for row in _jobs_file(tmp_path)}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    assert rows[2]["status"] == rows[5]["status"] == "failed"
    assert "optimizer.lr" in rows[2]["reason"]
    (parent,) = parent_runs(mlflow_uri)
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_failed"] == 2


def test_sigterm_during_a_group_exits_143_with_its_runs_killed(tmp_path, mlflow_uri):
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.train", "-m", "hydra/launcher=batched", "depth=2",
         "lr=0.1,0.2", "+debug=fast", "logger=mlflow", "trainer.max_epochs=100000",
         "progress.mode=lines", "progress.every_n_epochs=1", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:  # the group is training once an epoch is reported
            if "epoch 2/" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
        proc.stdout.close()
    runs = _by_job(mlflow_uri)
    assert sorted(runs) == [0, 1]
    assert {r.info.status for r in runs.values()} == {"KILLED"}
    (parent,) = parent_runs(mlflow_uri)
    assert parent.info.status == "KILLED"
    rows = _jobs_file(tmp_path)
    assert sorted(r["job_num"] for r in rows) == [0, 1]
    assert {r["status"] for r in rows} == {"killed"}
