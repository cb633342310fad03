"""Command line: train one denoiser / regression net per Hydra job. The work is done by
`src.training.run.train(cfg)`; this module only wires Hydra to it.

python -m src.train depth=12 lr=0.5 -m          # one job, Hydra multirun
python -m src.train -m depth=2,4 lr=0.1,0.5     # four jobs, one MLflow run each
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.errors import USER_ERRORS
from src.experiments.grid import retrain_command, train_cached
from src.signals import exit_on_signals
from src.training.run import train

log = logging.getLogger(__name__)


def hydra_tags() -> dict[str, Any]:
    """Tags that tie a run to its Hydra job (the sweep id for multirun jobs)."""
    hc = HydraConfig.get()
    tags: dict[str, Any] = {"hydra.output_dir": hc.runtime.output_dir}
    if hc.mode == RunMode.MULTIRUN:
        tags.update({"sweep_id": hc.sweep.dir, "hydra.job_num": hc.job.num})
        if hc.overrides.task:
            tags["hydra.overrides"] = " ".join(hc.overrides.task)
    return tags


def job_overrides() -> list[str]:
    """This job's own overrides (a sweep's values resolved), without where it writes results."""
    return [o for o in HydraConfig.get().overrides.task if not o.startswith("results_dir=")]


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    exit_on_signals()
    output_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    command = retrain_command(job_overrides())
    try:
        if cfg.get("results_dir"):  # a pipeline grid sent through a Hydra launcher
            result = train_cached(
                cfg, cfg.results_dir, output_root=output_dir, tags=hydra_tags(), command=command
            )
        else:
            result = train(cfg, output_dir=output_dir, tags=hydra_tags(), command=command)
            result = result.to_dict()
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")
    log.info(
        "status=%s (%s) final_train_loss=%.6g",
        result["status"],
        result.get("reason"),
        result["final_train_loss"],
    )
    return result["final_train_loss"]


if __name__ == "__main__":
    main()
