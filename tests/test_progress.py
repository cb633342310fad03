"""Progress at the console: durations, the progress mode, and a grid's run k of N with the time
left estimated once per batch of runs that finish together."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import select
import struct
import termios

import pytest

from src.experiments import progress as grid_progress
from src.experiments.progress import GridProgress
from src.training.progress import (
    DEFAULT_BAR_WIDTH,
    EpochProgress,
    format_duration,
    resolve_mode,
    terminal_width,
)


@pytest.fixture
def terminal():
    """A pseudo-terminal: (the stream a run writes to, the fd its output is read from). A new
    one reports 0 columns, as `script` without a size does, until it is given a size."""
    leader, follower = pty.openpty()
    stream = os.fdopen(follower, "w")
    yield stream, leader
    stream.close()
    os.close(leader)


def set_columns(stream, columns: int) -> None:
    fcntl.ioctl(stream.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


def test_durations_and_modes(terminal):
    stream, _ = terminal
    set_columns(stream, 100)
    assert [format_duration(s) for s in (4.25, 65, 3725)] == ["4.2 s", "1m05s", "1h02m"]
    assert resolve_mode("auto", stream) == "bar"
    assert resolve_mode("auto", io.StringIO()) == "lines"
    assert resolve_mode("off", stream) == "off"
    with pytest.raises(ValueError, match="^progress.mode: must be one of"):
        resolve_mode("fancy", io.StringIO())


def test_a_terminal_of_width_0_gets_log_lines_or_a_bar_of_default_width(terminal):
    """tqdm sized to a terminal of 0 columns draws nothing: `auto` gives log lines there, and
    a bar asked for is drawn at a default width."""
    stream, leader = terminal
    assert terminal_width(stream) is None
    assert resolve_mode("auto", stream) == "lines"
    progress = EpochProgress(max_epochs=10, mode="bar", label="m2-run", stream=stream)
    progress.on_train_start(None, None)
    progress._bar.update(3)
    progress._bar.refresh()
    stream.flush()
    drawn = ""
    while select.select([leader], [], [], 1.0)[0] and "3/10" not in drawn:
        drawn += os.read(leader, 4096).decode()
    assert progress._bar.ncols == DEFAULT_BAR_WIDTH
    assert "m2-run" in drawn and "3/10" in drawn
    progress._bar.close()


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
