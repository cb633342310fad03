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

from src.console import format_job_table, take_summary
from src.tracking import prepare_store


class PrepareTrackingStore(Callback):
    """Prepare the MLflow store and experiment once, before parallel jobs start (each job
    prepares it too, under a lock: this only saves them the wait), and fail the sweep in one
    line if the store cannot be used."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logger = config.get("logger", {})
        if logger.get("name") != "mlflow":
            return
        prepare_store(logger.tracking_uri, logger.experiment_name)


JOBS_FILE = "multirun_jobs.jsonl"  # in the sweep directory: one JSON line per finished job


class JobTable(Callback):
    """A multirun ends with a table of its jobs (src.console.format_job_table).

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
        jobs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if jobs:
            print(f"\nmultirun: {len(jobs)} jobs in {path.parent}\n{format_job_table(jobs)}")
