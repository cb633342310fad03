"""Helpers shared by the DVC stage scripts: reading params.yaml and the stage's profile."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from src.console import VERBOSE_ENV, quiet_notices
from src.errors import USER_ERRORS
from src.signals import exit_on_signals

REPO = Path(__file__).resolve().parents[1]


class ParamsError(ValueError):
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
    the stage.
    """
    shared = profile_settings(params, "training").get("overrides", []) if shared else []
    tracking = params.get("mlflow", {})
    overrides = [*shared, *settings.get("overrides", []), f"logger.experiment_name={stage}"]
    if tracking.get("tracking_uri") and not os.environ.get("MLFLOW_TRACKING_URI"):
        overrides.append(f"logger.tracking_uri={tracking['tracking_uri']}")
    return overrides


def launcher_settings(params: dict[str, Any]) -> tuple[str, list[str]]:
    compute = params.get("compute", {}) or {}
    return compute.get("launcher", "inprocess"), list(compute.get("launcher_overrides", []) or [])


def batching_settings(params: dict[str, Any]) -> dict[str, Any]:
    """run_grid's batching arguments from params.yaml's `compute` section."""
    compute = params.get("compute", {}) or {}
    return {
        "batch_models": compute.get("batch_models", "auto"),
        "max_models_per_batch": compute.get("max_models_per_batch", 16),
    }


def grid_settings(params: dict[str, Any]) -> dict[str, Any]:
    """run_grid's launcher, worker and batching arguments from params.yaml's `compute` section
    (`workers`: how many single-thread processes `launcher: processes` trains in)."""
    launcher, launcher_overrides = launcher_settings(params)
    compute = params.get("compute", {}) or {}
    return {
        "launcher": launcher,
        "launcher_overrides": launcher_overrides,
        "workers": int(compute.get("workers", 2)),
        **batching_settings(params),
    }


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument("--root", default=".", help="where results/ and figures/ are written")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help=f"show every third-party message (as {VERBOSE_ENV}=1 does)",
    )
    return parser


def setup_logging(verbose: bool = False) -> None:
    """INFO lines of this project; Lightning, MLflow and alembic at WARNING, and a few notices
    silenced (src.console.quiet_notices). `verbose` (or $FLATMINIMA_VERBOSE) keeps them all, in
    this process and in the processes it starts (worker pools, Hydra launchers)."""
    import pytorch_lightning  # noqa: F401  (it sets its own log level on import: import it first)

    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not quiet_notices(verbose):
        return
    for noisy in (
        "pytorch_lightning",
        "lightning_fabric",
        "lightning.pytorch",
        "alembic",
        "mlflow",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage_main(
    run: Callable[[argparse.Namespace], Any],
    description: str,
    argv: list[str] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse the stage's arguments and run it; a settings error is one line and exit status 1."""
    parser = stage_parser(description.strip().splitlines()[0])
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    exit_on_signals()
    try:
        run(args)
    except (ParamsError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
