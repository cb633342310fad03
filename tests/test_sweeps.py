"""Real Hydra multiruns in subprocesses: one MLflow run per job, for each launcher."""

from __future__ import annotations

import pytest
from support import job_runs, parent_runs, run_cli

pytestmark = pytest.mark.slow  # end to end: see `make test-fast`

# conf/debug/fast.yaml, tracked (each job is an MLflow run) and shorter still
FAST = ["+debug=fast", "logger=mlflow", "dataset.limit_train=100", "trainer.max_epochs=1"]


def _runs_by_params(uri):
    runs = job_runs(uri)
    return {(r.data.params["model.depth"], r.data.params["optimizer.lr"]): r for r in runs}


def test_single_job_multirun_flag_after_overrides(tmp_path, mlflow_uri):
    proc = run_cli("depth=12", "lr=0.5", *FAST, f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = job_runs(mlflow_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.depth"] == "12" and run.data.params["optimizer.lr"] == "0.5"
    assert run.data.tags["sweep_id"] == str(tmp_path)
    assert (tmp_path / "0" / "model.pt").exists()


def test_four_job_grid_one_run_each(tmp_path, mlflow_uri):
    proc = run_cli("-m", "depth=2,4", "lr=0.1,0.5", *FAST, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs_by_params(mlflow_uri)
    assert set(runs) == {("2", "0.1"), ("2", "0.5"), ("4", "0.1"), ("4", "0.5")}
    assert {r.data.tags["sweep_id"] for r in runs.values()} == {str(tmp_path)}
    assert sorted(r.data.tags["hydra.job_num"] for r in runs.values()) == ["0", "1", "2", "3"]
    # each job records the command that retrains it alone: its own values, not the sweep's
    command = runs[("4", "0.1")].data.tags["command"].split()
    assert command[:3] == ["python", "-m", "src.train"]
    assert "depth=4" in command and "lr=0.1" in command and "depth=2,4" not in command
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert all(
        "train_loss" in r.data.metrics and "val_loss" in r.data.metrics for r in runs.values()
    )


def test_sweep_with_a_diverging_member_completes(tmp_path, mlflow_uri):
    proc = run_cli(
        "-m",
        "dataset=synthetic",
        "model=linear",
        "depth=3",
        "lr=0.5,200",
        "trainer.max_epochs=3",
        "analysis=off",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = {r.data.params["optimizer.lr"]: r.data.tags["status"] for r in job_runs(mlflow_uri)}
    assert status["200"] == "diverged"
    assert status["0.5"] != "diverged"


@pytest.mark.parametrize(
    "launcher",
    [
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "hydra.launcher.cpus_per_task=1",
        ],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ],
    ids=["submitit_local", "joblib"],
)
def test_parallel_launchers(tmp_path, mlflow_uri, launcher):
    proc = run_cli("-m", "depth=1,2", *FAST, *launcher, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = job_runs(mlflow_uri)
    assert sorted(r.data.params["model.depth"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["sweep_id"] for r in runs} == {str(tmp_path)}
    # jobs in other processes find the multirun's parent run through the sweep directory
    (parent,) = parent_runs(mlflow_uri)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 2


def test_pipeline_grid_through_a_hydra_launcher(tmp_path, mlflow_uri, monkeypatch):
    """compute.launcher: the grid becomes a Hydra multirun whose jobs write the results."""
    from src.experiments.grid import run_grid

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = [
        "dataset.limit_train=100",
        "dataset.resolution=7",
        "trainer.max_epochs=1",
        "analysis=off",
    ]
    results = run_grid(
        base,
        {"depth": [1, 2]},
        tmp_path / "runs",
        output_root=tmp_path / "out",
        launcher="submitit_local",
        launcher_overrides=["hydra.launcher.timeout_min=10"],
    )
    assert [r["config"]["model"]["depth"] for r in results] == [1, 2]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert {r.data.tags["config_key"] for r in job_runs(mlflow_uri)} == {r["key"] for r in results}
    # a second pass finds every result and trains nothing
    again = run_grid(base, {"depth": [1, 2]}, tmp_path / "runs", launcher="inprocess")
    assert [r["key"] for r in again] == [r["key"] for r in results]
    assert len(job_runs(mlflow_uri)) == 2
