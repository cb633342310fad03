"""Command line: train one denoiser / regression net per Hydra job. The work is done by
`src.training.run.train(cfg)`; this module only wires Hydra to it.

python -m src.train depth=12 lr=0.5 -m          # one job, Hydra multirun
python -m src.train -m depth=2,4 lr=0.1,0.5     # four jobs, one MLflow run each

Every run ends with a summary (status, losses, sharpness, MLflow run, `mlflow ui` command); a
multirun ends with a table of its jobs (src.runtime.hydra_callbacks.JobTable). Third-party notices are
silenced (src.runtime.console); `hydra.verbose=true` or FLATMINIMA_VERBOSE=1 keeps them.

A multirun stopped by SIGTERM / Ctrl-C exits 143 / 130 with its parent run KILLED and the table
of the jobs it started (the stopped one included); a job whose launching process has ended
(killed with SIGKILL) closes its run KILLED and exits (src.core.signals.follow_owner).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.core.errors import UserError
from src.core.signals import exit_now, exit_on_signals, follow_owner, orphan_cause
from src.experiments.grid import retrain_command, train_cached
from src.runtime.console import format_summary, quiet_notices, remember_summary, run_summary
from src.runtime.hydra_callbacks import (
    end_stopped_multiruns,
    failed_jobs_exit_status,
    read_parent_run,
    record_stopped_job,
)
from src.runtime.tracking import PARENT_TAG
from src.training.run import train
from src.training.status import stability_limit


def hydra_tags() -> dict[str, Any]:
    """Tags that tie a run to its Hydra job (the sweep id for multirun jobs)."""
    hc = HydraConfig.get()
    tags: dict[str, Any] = {"hydra.output_dir": hc.runtime.output_dir}
    if hc.mode == RunMode.MULTIRUN:
        tags.update({"sweep_id": hc.sweep.dir, "hydra.job_num": hc.job.num})
        if hc.overrides.task:
            tags["hydra.overrides"] = " ".join(hc.overrides.task)
        parent = read_parent_run(hc.sweep.dir)
        if parent is not None:  # nested under the multirun's parent run in the MLflow UI
            tags[PARENT_TAG] = parent["run_id"]
    return tags


def job_overrides() -> list[str]:
    """This job's own overrides (a sweep's values resolved), without where it writes results."""
    return [o for o in HydraConfig.get().overrides.task if not o.startswith("results_dir=")]


def summary_title() -> str:
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return "run summary:"
    return f"run summary, job #{hc.job.num} ({' '.join(job_overrides()) or 'no overrides'}):"


def train_job(cfg: DictConfig) -> dict[str, Any]:
    """Train this Hydra job's run (or read it from a pipeline's result store); its result."""
    output_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    command = retrain_command(job_overrides())
    if cfg.get("results_dir"):  # a pipeline grid sent through a Hydra launcher
        return train_cached(
            cfg, cfg.results_dir, output_root=output_dir, tags=hydra_tags(), command=command
        )
    return train(cfg, output_dir=output_dir, tags=hydra_tags(), command=command).to_dict()


def report_job(cfg: DictConfig, result: Mapping[str, Any], wall_s: float) -> float:
    """Print the job's summary and keep it for the multirun's job table; return its final
    training loss (what a sweeper minimizing it reads)."""
    summary = run_summary(
        result, logger=cfg.logger, wall_s=wall_s, stability_limit=stability_limit(cfg)
    )
    remember_summary(summary)
    print(f"\n{summary_title()}\n{format_summary(summary)}", flush=True)
    return result["final_train_loss"]


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train one run; print its summary; return its final training loss. The summary is also
    kept for the multirun's job table (src.runtime.hydra_callbacks.JobTable). Under
    `hydra/launcher=batched` the launcher trains batchable jobs together (src.launcher) and
    calls `report_job` for each."""
    started = time.perf_counter()
    exit_on_signals()
    follow_owner()  # a job in a launcher's worker process ends with the launching process
    quiet_notices(verbose=bool(HydraConfig.get().verbose))  # $FLATMINIMA_VERBOSE also keeps them
    try:
        try:
            result = train_job(cfg)
        except UserError as err:
            raise SystemExit(f"error: {err}") from None
    except (SystemExit, KeyboardInterrupt) as err:  # Hydra's on_job_end sees no BaseException
        record_stopped_job(HydraConfig.get(), err)
        if orphan_cause() is not None:  # no one waits for this process: a launcher's worker
            exit_now(err.code if isinstance(getattr(err, "code", None), int) else 1)
        raise
    return report_job(cfg, result, time.perf_counter() - started)


def cli() -> None:
    """`python -m src.train`: `main` through Hydra, ending with the process that started this
    one if it asked ($FLATMINIMA_OWNER_PID: a pipeline grid sent through a Hydra launcher), and
    closing the multiruns a signal stops (Hydra runs no callback then). Exits 1 when a job of a
    multirun failed and the launcher went on (hydra/launcher=batched)."""
    exit_on_signals()
    follow_owner()
    try:
        main()
    except BaseException as err:
        end_stopped_multiruns(err)
        raise
    if status := failed_jobs_exit_status():
        sys.exit(status)


if __name__ == "__main__":
    cli()
