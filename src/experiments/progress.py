"""Progress of a grid of training runs: "run k of N" with an estimate of the time left, one log
line per finished run (or batched model).

The estimate weighs each run by `run_cost` (depth x gradients per step, the same weight the
worker pool schedules by) and extrapolates the throughput so far, which already
includes how many runs train side by side. Epoch counts are unknown in advance (the stopping
rule ends runs early), so the estimate is rough by nature, and says so ("about").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from src.experiments.store import config_key
from src.training.optim import gradients_per_step
from src.training.progress import format_duration

log = logging.getLogger(__name__)


def run_cost(resolved: Mapping[str, Any]) -> float:
    """A run's relative cost: depth (the per-step cost of equally wide nets) x the gradients
    per optimizer step (2 for SAM)."""
    return float(resolved["model"]["depth"]) * gradients_per_step(resolved["optimizer"])


def run_label(config: Mapping[str, Any]) -> str:
    """depth=6 init=identity sgd lr=0.5 seed=0, from a run's resolved config."""
    return (
        f"depth={config['model']['depth']} init={config['init']['name']} "
        f"{config['optimizer']['name']} lr={config['optimizer']['lr']:g} seed={config['seed']}"
    )


class GridProgress:
    """Counts the pending runs of a grid as they finish and logs each with k of N, elapsed time
    and about how long the rest will take."""

    def __init__(self, pending: Sequence[Mapping[str, Any]], stored: int = 0, name: str = "grid"):
        self.name = name
        self.costs = {config_key(r): run_cost(r) for r in pending}
        self.total = len(self.costs)
        self.total_cost = sum(self.costs.values())
        self.done: set[str] = set()
        self.done_cost = 0.0
        self.t0 = time.perf_counter()
        if self.total:
            log.info(
                "%s: %d runs to train%s",
                name,
                self.total,
                f" ({stored} already in the result store)" if stored else "",
            )

    def remaining_s(self, elapsed: float) -> float | None:
        """The time the rest takes at the throughput so far (None before the first and after
        the last run)."""
        if not self.done_cost or self.done_cost >= self.total_cost:
            return None
        return elapsed / self.done_cost * (self.total_cost - self.done_cost)

    def finished(self, results: Iterable[Mapping[str, Any]]) -> None:
        """Report stored results of runs that just finished together (one run, or the members
        of a batched model); ones not pending are ignored. The time left is estimated once all
        of them are counted, and shown on the last line."""
        new = []
        for result in results:
            key = result.get("key")
            if key in self.costs and key not in self.done:
                self.done.add(key)
                self.done_cost += self.costs[key]
                new.append(result)
        if not new:
            return
        seconds = time.perf_counter() - self.t0
        elapsed, left = format_duration(seconds), self.remaining_s(seconds)
        first = len(self.done) - len(new)
        for i, result in enumerate(new, 1):
            last = i == len(new) and left is not None
            log.info(
                "%s: run %d of %d done (%s: %s), %s elapsed%s",
                self.name,
                first + i,
                self.total,
                run_label(result["config"]),
                result.get("status"),
                elapsed,
                f", about {format_duration(left)} left" if last else "",
            )
