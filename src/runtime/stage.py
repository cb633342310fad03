"""What every DVC stage script (pipelines/) shares: its command line (--params, --root,
--verbose), its logging, and its exit: a user error is one line and exit status 1 (params.yaml
itself is read by src.runtime.params)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from src.core.errors import UserError
from src.core.signals import exit_on_signals
from src.runtime.console import VERBOSE_ENV, quiet_notices


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
    silenced (src.runtime.console.quiet_notices). `verbose` (or $FLATMINIMA_VERBOSE) keeps them
    all, in this process and in the processes it starts (worker pools, Hydra launchers). Lightning
    sets its own log level when it is imported: a stage that trains has imported it with its
    modules, before this runs; the others never import it."""
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
    """Parse the stage's arguments and run it; a user error (a bad setting, a missing file, an
    unusable store) is one line and exit status 1. `run` may return the exit status."""
    parser = stage_parser(description.strip().splitlines()[0])
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    exit_on_signals()
    try:
        status = run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0
