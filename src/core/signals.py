"""SIGTERM and SIGINT end a command with the conventional status (143, 130), through Python's
exception path, so every open MLflow run is closed as KILLED with the reason on the way out.

Lightning's own SIGTERM handling raises a SystemExit without a code (exit status 0): under SLURM,
make or `&&` a killed run would look like a success. Entry points call `exit_on_signals()`;
Lightning composes its handler with ours while it trains.
"""

from __future__ import annotations

import signal


class Terminated(SystemExit):
    """Raised by the handlers below: exit status 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.reason = signal.Signals(signum).name


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def exit_on_signals() -> None:
    """Install the handlers (main thread only, as Python requires)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_terminated)
