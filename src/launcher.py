"""`hydra/launcher=batched`: a multirun whose compatible jobs train together as one batched model
(src.training.run.train_batched), each job still its own Hydra job and MLflow run.

    python -m src.train -m hydra/launcher=batched lr=0.25,0.5,1,2 seed=0,1,2,3

Every job of the sweep is composed and validated first. Jobs whose configs differ only in the
members' settings (step size, seed: `src.training.batched.batch_key`) and that can share a batch
(`batchable`) form a group, split at `max_models_per_batch`; each group trains as one batched
model, then each member goes through Hydra's `run_job` (its output folder, `.hydra/`, `train.log`,
the job callbacks) with its result, so the job table, the parent run and the return values are
what the basic launcher gives. Any other job (not batchable, or a pipeline grid's `results_dir`
job) runs alone through the ordinary task function.

A job with a bad value is one line (`error: job #k (overrides): key: ...`) and a `failed` row in
the job table; it creates no run and the others go on. A group that crashes is recorded the
same way for its members; groups already done keep their runs and files. SIGTERM / Ctrl-C end
the sweep with 143 / 130, the training group's runs KILLED. The command exits 1 when a job
failed (src.train).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

from src.core.errors import UserError
from src.core.signals import exit_on_signals
from src.domain.config import validate
from src.experiments.grid import retrain_command
from src.runtime.console import remember_summary
from src.runtime.hydra_callbacks import record_stopped_job
from src.train import hydra_tags, job_overrides, report_job
from src.training.batched import batch_key, batchable
from src.training.run import train_batched

log = logging.getLogger(__name__)


@dataclass
class SweepJob:
    """One job of the sweep, composed: its Hydra config, its task config, and either its
    batch key or why it trains alone (or the error that stops it)."""

    num: int
    overrides: list[str]
    config: DictConfig  # with the `hydra` node, as run_job takes it
    task: DictConfig | None = None  # without it, as the task function gets it
    key: str | None = None  # batch key; None: the job trains alone
    error: UserError | None = None

    @property
    def label(self) -> str:
        return f"job #{self.num} ({' '.join(filter_overrides(self.overrides)) or 'no overrides'})"


def compose_job(
    hydra_context: HydraContext, sweep: DictConfig, num: int, overrides: Sequence[str]
) -> SweepJob:
    """Compose and validate a job as run_job will run it (its number and output folder set)."""
    config = hydra_context.config_loader.load_sweep_config(sweep, list(overrides))
    with open_dict(config):
        config.hydra.job.id = num
        config.hydra.job.num = num
    job = SweepJob(num, list(overrides), config)
    HydraConfig.instance().set_config(config)  # what run_job does first: the same output folder
    output_dir = os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    HydraConfig.instance().set_config(config)
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    job.task = task
    try:
        resolved = validate(task)
    except UserError as err:
        job.error = err
        return job
    if not task.get("results_dir") and batchable(resolved) is None:
        job.key = batch_key(resolved)
    return job


def plan_groups(jobs: Sequence[SweepJob], max_models: int) -> list[list[SweepJob]]:
    """Jobs with equal batch keys together, in chunks of at most `max_models`, in the order of
    their first job; every other job alone."""
    by_key: dict[str, list[SweepJob]] = {}
    groups: list[list[SweepJob]] = []
    for job in jobs:
        if job.key is None:
            groups.append([job])
            continue
        members = by_key.get(job.key)
        if members is None or len(members) >= max(1, max_models):
            members = by_key[job.key] = []
            groups.append(members)
        members.append(job)
    return groups


class BatchedLauncher:
    """The launcher's work (hydra_plugins/flatminima_launcher holds the Hydra plugin class
    that delegates here)."""

    def __init__(
        self,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
        max_models_per_batch: int,
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.max_models = int(max_models_per_batch)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        setup_globals()
        exit_on_signals()  # SIGTERM mid-group: 143 and the group's runs KILLED
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        original = HydraConfig.instance().cfg
        try:
            jobs = [
                compose_job(self.hydra_context, self.config, initial_job_idx + i, overrides)
                for i, overrides in enumerate(job_overrides)
            ]
        finally:
            HydraConfig.instance().cfg = original
        groups = plan_groups(jobs, self.max_models)
        batched = sum(len(g) for g in groups if len(g) > 1)
        log.info(
            "Launching %d jobs: %d in %d batched groups, %d alone",
            len(jobs),
            batched,
            sum(len(g) > 1 for g in groups),
            len(jobs) - batched,
        )
        returns: dict[int, JobReturn] = {}
        for group in groups:
            job = group[0]
            if job.error is not None:
                returns[job.num] = self._fail(job, job.error)
            elif len(group) == 1:  # alone: exactly what the basic launcher does
                returns[job.num] = self._run(job, self.task_function)
            else:
                returns.update(self._train_group(group))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[job.num] for job in jobs]

    def _run(self, job: SweepJob, task_function: Callable[[DictConfig], Any]) -> JobReturn:
        return run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=job.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def _fail(self, job: SweepJob, error: BaseException) -> JobReturn:
        """A job that cannot train: one line, a `failed` row in the job table, no run."""
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0] if lines else ''}"
        print(f"error: {job.label}: {lines[0] if lines else error}", file=sys.stderr, flush=True)

        def failed(cfg: DictConfig) -> None:
            remember_summary({"status": "failed", "reason": reason})
            log.error("%s: %s", job.label, reason)

        return self._run(job, failed)

    def _train_group(self, group: list[SweepJob]) -> dict[int, JobReturn]:
        """Train the group as one batched model, then complete each member as a Hydra job."""
        first, last = group[0].num, group[-1].num
        log.info(
            "group of %d jobs (#%d-#%d): training as one batched model", len(group), first, last
        )
        original = HydraConfig.instance().cfg
        tags, commands, output_dirs = [], [], []
        try:
            for job in group:  # each member's tags and command, as its own job would see them
                HydraConfig.instance().set_config(job.config)
                tags.append({**hydra_tags(), "batched_jobs": f"#{first}-#{last}"})
                commands.append(retrain_command(job_overrides()))
                output_dirs.append(job.task.output_dir or job.config.hydra.runtime.output_dir)
        finally:
            HydraConfig.instance().cfg = original
        started = time.perf_counter()
        try:
            results = train_batched(
                [job.task for job in group], output_dirs, tags, commands=commands
            )
        except Exception as err:  # a user error or a crash: recorded per member, sweep goes on
            if not isinstance(err, UserError):
                log.exception("group #%d-#%d crashed", first, last)
            return {job.num: self._fail(job, err) for job in group}
        except BaseException as err:  # a signal: the members' rows, then the sweep ends
            for job in group:
                record_stopped_job(job.config.hydra, err)
            raise
        wall = time.perf_counter() - started
        returns = {}
        for job, result in zip(group, results):
            summary = result.to_dict()

            def member(cfg: DictConfig, summary: dict = summary) -> float:
                log.info(
                    "trained with jobs #%d-#%d as one batched model (%d models)",
                    first,
                    last,
                    len(group),
                )
                return report_job(cfg, summary, wall)

            returns[job.num] = self._run(job, member)
        return returns
