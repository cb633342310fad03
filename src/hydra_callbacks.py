"""Hydra callbacks (run in the launching process, not in the jobs)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.tracking import check_reachable, resolve_tracking_uri


class PrepareTrackingStore(Callback):
    """Create the MLflow store and experiment once, before parallel jobs start.

    Jobs launched side by side (joblib, submitit) would otherwise race to create the sqlite
    schema and the experiment, and all but one would fail.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logger = config.get("logger", {})
        if logger.get("name") != "mlflow":
            return
        import mlflow  # heavy: only when a multirun tracks to MLflow

        uri = resolve_tracking_uri(logger.tracking_uri)
        check_reachable(uri)
        client = mlflow.MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(logger.experiment_name) is None:
            client.create_experiment(logger.experiment_name)
