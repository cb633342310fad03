"""Hydra callbacks (run in the launching process, not in the jobs)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

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
