"""MLflow plumbing shared by training, analysis and the pipeline stages."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class TrackingError(RuntimeError):
    """The tracking server cannot be used (one-line message naming the URI)."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Make a relative sqlite/file store absolute, so a changed working directory cannot move it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    if "://" not in uri:  # a plain directory path: MLflow's file store
        return Path(uri).resolve().as_uri()
    return uri


def environment_first_uri(configured: str | None) -> str:
    """$MLFLOW_TRACKING_URI if set, else `configured` (e.g. params.yaml's), else the default;
    made absolute. The pipeline stages log where the training runs they start log."""
    return resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or configured)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (instead of MLflow's minutes of retries) when an HTTP server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            if reply.status != 200:
                raise TrackingError(
                    f"logger.tracking_uri: MLflow server at {uri} answered {reply.status}"
                )
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"logger.tracking_uri: cannot reach MLflow server at {uri} ({reason})"
        ) from err


def make_mlflow_logger(
    tracking_uri: str, experiment_name: str, run_name: str, tags: dict[str, Any]
):
    """A Lightning MLFlowLogger whose run exists once this returns (reachability checked first)."""
    from pytorch_lightning.loggers import MLFlowLogger

    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    logger = MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        tags={k: str(v) for k, v in tags.items()},
        log_model=False,
    )
    _ = logger.run_id  # create the run now, so errors surface before training starts
    return logger


def _mlflow(logger):
    from pytorch_lightning.loggers import MLFlowLogger

    return logger if isinstance(logger, MLFlowLogger) else None


def set_tags(logger, tags: dict[str, Any]) -> None:
    if (ml := _mlflow(logger)) is not None:
        for key, value in tags.items():
            ml.experiment.set_tag(ml.run_id, key, str(value))


def log_metrics(logger, metrics: dict[str, float], step: int | None = None) -> None:
    if logger:
        logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(logger, path: str | Path, artifact_path: str | None = None) -> None:
    if (ml := _mlflow(logger)) is not None:
        ml.experiment.log_artifact(ml.run_id, str(path), artifact_path)


def run_id(logger) -> str | None:
    ml = _mlflow(logger)
    return None if ml is None else ml.run_id
