"""Progress at the console: durations, the progress mode, and a grid's run k of N with the time
left estimated once per batch of runs that finish together."""

from __future__ import annotations

import io
import logging

import pytest

from src.experiments import progress as grid_progress
from src.experiments.progress import GridProgress
from src.training.progress import format_duration, resolve_mode


def test_durations_and_modes():
    assert [format_duration(s) for s in (4.25, 65, 3725)] == ["4.2 s", "1m05s", "1h02m"]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert resolve_mode("auto", Terminal()) == "bar"
    assert resolve_mode("auto", io.StringIO()) == "lines"
    assert resolve_mode("off", Terminal()) == "off"
    with pytest.raises(ValueError, match="^progress.mode: must be one of"):
        resolve_mode("fancy", io.StringIO())


def config(depth, lr):
    return {
        "model": {"depth": depth},
        "init": {"name": "identity"},
        "optimizer": {"name": "sgd", "lr": lr},
        "seed": 0,
    }


def test_grid_reports_k_of_n_and_the_time_left_by_depth(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="src.experiments.progress")
    clock = iter([0.0, 10.0, 30.0])  # start, the batch of two depth-2 runs, the depth-4 run
    monkeypatch.setattr(grid_progress.time, "perf_counter", lambda: next(clock))
    pending = [config(2, 0.5), config(2, 1.0), config(4, 0.5)]
    keys = {id(c): f"k{i}" for i, c in enumerate(pending)}
    monkeypatch.setattr(grid_progress, "config_key", lambda c: keys[id(c)])
    grid = GridProgress(pending, stored=5)
    batch = [{"key": "k0", "config": pending[0], "status": "converged"},
             {"key": "k1", "config": pending[1], "status": "unstable"}]  # fmt: skip
    grid.finished(batch)
    grid.finished(batch)  # reported once
    grid.finished([{"key": "k2", "config": pending[2], "status": "converged"}])
    grid.finished([{"key": "other", "config": pending[2], "status": "converged"}])  # not pending
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "grid: 3 runs to train (5 already in the result store)",
        "grid: run 1 of 3 done (depth=2 init=identity sgd lr=0.5 seed=0: converged), 10.0 s elapsed",
        # cost 4 of 8 (depths) done in 10 s: 4 more take about 10 s
        "grid: run 2 of 3 done (depth=2 init=identity sgd lr=1 seed=0: unstable), 10.0 s elapsed, "
        "about 10.0 s left",
        "grid: run 3 of 3 done (depth=4 init=identity sgd lr=0.5 seed=0: converged), 30.0 s elapsed",
    ]
