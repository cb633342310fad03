"""Hydra callbacks (`on_multirun_*` run in the launching process; `on_job_end` in the job's own
process, which a parallel launcher makes another process or machine)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from src.runtime.console import format_job_table, take_summary
from src.runtime.tracking import (
    PARENT_RUN_FILE,
    end_parent_run,
    prepare_store,
    resolve_tracking_uri,
    start_parent_run,
)


class PrepareTrackingStore(Callback):
    """Prepare the MLflow store and experiment once, before parallel jobs start (each job
    prepares it too, under a lock: this only saves them the wait), and fail the sweep in one
    line if the store cannot be used."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logger = config.get("logger", {})
        if logger.get("name") != "mlflow":
            return
        prepare_store(logger.tracking_uri, logger.experiment_name)


class ParentRun(Callback):
    """Groups a multirun's MLflow runs under one parent run named after the sweep (nested runs
    in the MLflow UI). The launching process creates it and writes its id to
    `<sweep dir>/mlflow_parent_run.json`; each job, in whatever process or machine the launcher
    puts it, reads the id there and tags its run `mlflow.parentRunId` (src.train.hydra_tags).
    When the multirun ends the parent gets the count of jobs per status (from JobTable's file)
    and is closed: FAILED if a job failed, FINISHED otherwise."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        path = sweep_dir / PARENT_RUN_FILE
        path.unlink(missing_ok=True)
        logger = config.get("logger", {})
        if logger.get("name") != "mlflow":
            return
        overrides = " ".join(config.hydra.overrides.task)
        swept = " ".join(o for o in config.hydra.overrides.task if "," in o)  # the sweep's axes
        name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}" + (f": {swept}" if swept else "")
        uri = resolve_tracking_uri(logger.tracking_uri)
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
        parent = read_parent_run(sweep_dir)
        if parent is None:
            return
        jobs_file = sweep_dir / JOBS_FILE
        jobs = [json.loads(line) for line in jobs_file.read_text().splitlines() if line.strip()] \
            if jobs_file.exists() else []  # fmt: skip
        statuses = [str(job.get("status")) for job in jobs]
        metrics = {"jobs": len(jobs)}
        metrics.update({f"jobs_{s}": statuses.count(s) for s in sorted(set(statuses))})
        end_parent_run(parent["tracking_uri"], parent["run_id"], metrics, "failed" in statuses)


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


class JobTable(Callback):
    """A multirun ends with a table of its jobs (src.runtime.console.format_job_table).

    Each job appends its row (the summary `src.train.main` kept, its overrides and number) to
    `<sweep dir>/multirun_jobs.jsonl` when it ends, in its own process: the sweep directory is
    the one place every launcher's jobs share with the launching process, which prints the
    table once they are all done."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(config.hydra.sweep.dir), JOBS_FILE)
        path.unlink(missing_ok=True)  # a sweep directory reused by a new multirun

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
            job_num=int(config.hydra.job.num),
            overrides=[o for o in job_return.overrides or [] if not o.startswith("results_dir=")],
        )
        path = Path(str(config.hydra.sweep.dir), JOBS_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, default=str) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:  # one write of one line with O_APPEND: jobs ending together do not interleave
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(config.hydra.sweep.dir), JOBS_FILE)
        if not path.exists():
            return
        global _FAILED_JOBS
        jobs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        _FAILED_JOBS = sum(job.get("status") == "failed" for job in jobs)
        if jobs:
            print(f"\nmultirun: {len(jobs)} jobs in {path.parent}\n{format_job_table(jobs)}")
