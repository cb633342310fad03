"""Hydra callbacks (`on_multirun_*` run in the launching process; `on_job_end` in the job's own
process, which a parallel launcher makes another process or machine).

Hydra calls no callback when a signal (a SystemExit) stops a multirun: the command line
(src.train) then writes the interrupted job's row (`record_stopped_job`) and closes what the
callbacks opened (`end_stopped_multiruns`): the parent run KILLED with the reason, and the job
table of the jobs started so far.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from src.core.signals import OWNER_ENV
from src.runtime.console import format_job_table, take_summary
from src.runtime.tracking import (
    PARENT_RUN_FILE,
    closed_status,
    end_parent_run,
    failure_reason,
    prepare_store,
    start_parent_run,
)

# The sweep directories of the multiruns this process launched and has not closed yet.
_OPEN_SWEEPS: set[Path] = set()


class JobsEndWithLauncher(Callback):
    """Jobs that a launcher runs in other processes on this machine (joblib's workers,
    submitit_local's tasks) end when the launching process does, even if it is killed with
    SIGKILL: each job follows the pid set here (src.core.signals.follow_owner, in
    src.train.main). The launching process itself follows whoever started it, if that one
    asked (a pipeline grid sent through a Hydra launcher)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[OWNER_ENV] = str(os.getpid())


class PrepareTrackingStore(Callback):
    """Prepare the MLflow store and experiment once, before parallel jobs start (each job
    prepares it too, under a lock: this only saves them the wait), and fail the sweep in one
    line if the store cannot be used."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logger = config.get("logger", {})
        if logger.get("name") != "mlflow":
            return
        prepare_store(logger.tracking_uri, logger.experiment_name, logger.get("artifact_location"))


class ParentRun(Callback):
    """Groups a multirun's MLflow runs under one parent run named after the sweep (nested runs
    in the MLflow UI). The launching process creates it and writes its id to
    `<sweep dir>/mlflow_parent_run.json`; each job, in whatever process or machine the launcher
    puts it, reads the id there and tags its run `mlflow.parentRunId` (src.train.hydra_tags).
    When the multirun ends the parent gets the count of jobs per status (from JobTable's file)
    and is closed: FAILED if a job failed, FINISHED otherwise (KILLED, with the reason, when a
    signal stops it: `end_stopped_multiruns`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _OPEN_SWEEPS.add(sweep_dir)
        path = sweep_dir / PARENT_RUN_FILE
        path.unlink(missing_ok=True)
        logger = config.get("logger", {})
        if logger.get("name") != "mlflow":
            return
        overrides = " ".join(config.hydra.overrides.task)
        swept = " ".join(o for o in config.hydra.overrides.task if "," in o)  # the sweep's axes
        name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}" + (f": {swept}" if swept else "")
        uri = prepare_store(
            logger.tracking_uri, logger.experiment_name, logger.get("artifact_location")
        )
        run = start_parent_run(
            uri,
            logger.experiment_name,
            name[:250],
            {"sweep_id": str(sweep_dir), "hydra.overrides": overrides, "multirun": "parent"},
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run_id": run, "tracking_uri": uri}))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _OPEN_SWEEPS.discard(sweep_dir)
        close_parent_run(sweep_dir, read_jobs(sweep_dir))


def close_parent_run(
    sweep_dir: Path, jobs: list[dict[str, Any]], error: BaseException | None = None
) -> None:
    """Close the multirun's parent run, if it has one, with its count of jobs per status:
    KILLED / FAILED with `error` as the reason when `error` stopped the multirun; else FAILED
    if a job failed, FINISHED otherwise."""
    parent = read_parent_run(sweep_dir)
    if parent is None:
        return
    statuses = [str(job.get("status")) for job in jobs]
    metrics = {"jobs": len(jobs)}
    metrics.update({f"jobs_{s}": statuses.count(s) for s in sorted(set(statuses))})
    status = closed_status(error)
    if error is None and "failed" in statuses:
        status = "FAILED"
    reason = None if error is None else failure_reason(error)
    end_parent_run(parent["tracking_uri"], parent["run_id"], metrics, status, reason)


def read_parent_run(sweep_dir: str | Path) -> dict[str, str] | None:
    """The multirun's parent run ({run_id, tracking_uri}), None if it has none."""
    path = Path(sweep_dir, PARENT_RUN_FILE)
    return json.loads(path.read_text()) if path.exists() else None


JOBS_FILE = "multirun_jobs.jsonl"  # in the sweep directory: one JSON line per finished job
_FAILED_JOBS = 0  # jobs of the last multirun whose row says `failed` (src.train's exit status)


def failed_jobs_exit_status() -> int:
    """1 when a job of the multirun that just ended failed (the batched launcher records a
    job's bad value and goes on with the others), else 0."""
    return 1 if _FAILED_JOBS else 0


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The rows of `<sweep dir>/multirun_jobs.jsonl` (none if it does not exist)."""
    path = sweep_dir / JOBS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_job_row(sweep_dir: Path, row: dict[str, Any]) -> None:
    """Append one job's row to the sweep's jobs file."""
    path = sweep_dir / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:  # one write of one line with O_APPEND: jobs ending together do not interleave
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def print_job_table(sweep_dir: Path, jobs: list[dict[str, Any]], how: str = "") -> None:
    if jobs:
        print(f"\nmultirun{how}: {len(jobs)} jobs in {sweep_dir}\n{format_job_table(jobs)}")


def _job_overrides(overrides) -> list[str]:
    return [o for o in overrides or [] if not o.startswith("results_dir=")]


def record_stopped_job(hydra_config: DictConfig, error: BaseException) -> None:
    """The row of a multirun job that `error` (a signal, an exit) stopped, which Hydra's
    `on_job_end` never sees: status `killed` (a signal) or `failed`, the reason, the job's
    number and overrides. Nothing for a single run."""
    if hydra_config.mode != RunMode.MULTIRUN:
        return
    take_summary()  # nothing of this job is to be kept for the next one
    row = {
        "status": "killed" if closed_status(error) == "KILLED" else "failed",
        "reason": failure_reason(error),
        "job_num": int(hydra_config.job.num),
        "overrides": _job_overrides(hydra_config.overrides.task),
    }
    write_job_row(Path(str(hydra_config.sweep.dir)), row)


def end_stopped_multiruns(error: BaseException) -> None:
    """Close every multirun this process launched and `error` (a signal, an exit) stopped:
    its parent run KILLED (FAILED for an error) with the reason, and its job table printed
    with every job started (the jobs file keeps them)."""
    for sweep_dir in sorted(_OPEN_SWEEPS):
        _OPEN_SWEEPS.discard(sweep_dir)
        jobs = read_jobs(sweep_dir)
        close_parent_run(sweep_dir, jobs, error)
        print_job_table(sweep_dir, jobs, f" stopped ({failure_reason(error)})")


class JobTable(Callback):
    """A multirun ends with a table of its jobs (src.runtime.console.format_job_table).

    Each job appends its row (the summary `src.train.main` kept, its overrides and number) to
    `<sweep dir>/multirun_jobs.jsonl` when it ends, in its own process: the sweep directory is
    the one place every launcher's jobs share with the launching process, which prints the
    table once they are all done."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _OPEN_SWEEPS.add(sweep_dir)
        (sweep_dir / JOBS_FILE).unlink(missing_ok=True)  # a sweep directory reused

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        summary = take_summary()
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        row: dict[str, Any] = dict(summary or {})
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the exception (return_value would raise it)
            row.update(status="failed", reason=f"{type(error).__name__}: {error}")
        elif summary is None:
            row.update(status="done", final_train_loss=job_return.return_value)
        row.update(
            job_num=int(config.hydra.job.num), overrides=_job_overrides(job_return.overrides)
        )
        write_job_row(Path(str(config.hydra.sweep.dir)), row)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _FAILED_JOBS
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _OPEN_SWEEPS.discard(sweep_dir)
        jobs = read_jobs(sweep_dir)
        _FAILED_JOBS = sum(job.get("status") == "failed" for job in jobs)
        print_job_table(sweep_dir, jobs)
