"""params.yaml, the one source of the pipeline's settings: its active profile, each stage's
settings under that profile, and what they mean for training (Hydra overrides, how runs are
launched and batched). Read by the DVC stage scripts in pipelines/.

Every stage's section holds one sub-section per profile (`grid_identity: {cpu: ..., paper:
...}`); `compute` and `training` too, so that editing one profile changes nothing the others
track.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from src.core.errors import UserError


class ParamsError(UserError, ValueError):
    """params.yaml lacks a key or has a bad value (message names the key)."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    with path.open() as handle:
        params = yaml.safe_load(handle) or {}
    if params.get("profile") is None:
        raise ParamsError(f"{path}: missing key 'profile'")
    return params


def profile_settings(params: dict[str, Any], section: str) -> dict[str, Any]:
    """params[section][profile], e.g. the `cpu` settings of `grid_identity`."""
    profile = params["profile"]
    try:
        settings = params[section][profile]
    except (KeyError, TypeError) as err:
        raise ParamsError(f"params.yaml: missing key '{section}.{profile}'") from err
    return dict(settings or {})


def training_overrides(
    params: dict[str, Any], stage: str, settings: dict[str, Any], shared: bool = True
) -> list[str]:
    """Hydra overrides of a stage: the profile's shared training settings (the ReLU denoiser
    experiments), then the stage's own. Runs are tracked in the MLflow experiment named after
    the stage."""
    shared = profile_settings(params, "training").get("overrides", []) if shared else []
    tracking = params.get("mlflow", {})
    overrides = [*shared, *settings.get("overrides", []), f"logger.experiment_name={stage}"]
    if tracking.get("tracking_uri") and not os.environ.get("MLFLOW_TRACKING_URI"):
        overrides.append(f"logger.tracking_uri={tracking['tracking_uri']}")
    return overrides


def grid_settings(params: dict[str, Any]) -> dict[str, Any]:
    """run_points' launcher, worker and batching arguments from the profile's `compute`
    settings: `launcher` (processes, inprocess, or a Hydra launcher with its
    `launcher_overrides`), `workers` (how many single-thread processes `processes` trains in),
    `batch_models` and `max_models_per_batch`."""
    compute = profile_settings(params, "compute")
    return {
        "launcher": compute.get("launcher", "inprocess"),
        "launcher_overrides": list(compute.get("launcher_overrides") or []),
        "workers": int(compute.get("workers", 2)),
        "batch_models": compute.get("batch_models", "auto"),
        "max_models_per_batch": int(compute.get("max_models_per_batch", 16)),
    }
