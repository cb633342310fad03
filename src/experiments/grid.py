"""Grids of training runs over the result store (src.experiments.store).

Grids run in this process by default (imports, data loading and CUDA start-up paid once), in a
pool of single-thread worker processes (`launcher="processes"`: on a CPU, N one-thread trainings
side by side beat one N-thread training of these small nets), or through any Hydra launcher
(e.g. `submitit_slurm`) as a Hydra multirun whose jobs write to the same results directory.
Every stored result records the command line that retrains it alone.

No process outlives the grid: worker processes get SIGTERM when this process ends, whatever ends
it (SIGKILL included: src.core.signals.die_with), close their open MLflow run as KILLED and
exit; a Hydra multirun started here ends with this process in the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from src.core.errors import UserError
from src.core.signals import (
    Terminated,
    die_with,
    exit_now,
    exit_on_signals,
    orphan_cause,
    owner_env,
)
from src.domain.config import ConfigValueError, RunConfig, batching_enabled, validate
from src.domain.data import TensorData, load_dataset
from src.experiments.progress import GridProgress, run_cost
from src.experiments.store import (
    adopt_result,
    cached_result,
    config_key,
    load_result,
    result_path,
    run_output_dir,
    store_result,
)
from src.runtime.console import quiet_notices
from src.runtime.params import ParamsError
from src.runtime.tracking import prepare_store
from src.training.batched import batch_key, batchable
from src.training.run import train, train_batched

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
IN_PROCESS = "inprocess"
PROCESSES = "processes"  # a pool of single-thread worker processes (`train_in_processes`)
WORKER_STOP_TIMEOUT_S = 60.0  # how long a stopped worker may take to close its MLflow run

GRID_PROGRESS = ["progress.mode=off"]  # overrides of every grid run (see run_points)
Job = tuple[RunConfig, str]  # a validated config and the command that retrains it alone


def retrain_command(overrides: Sequence[str]) -> str:
    """The command line that trains one run alone, from its Hydra overrides."""
    return shlex.join(["python", "-m", "src.train", *overrides])


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra's compose API (outside of @hydra.main)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def sweep_axes(overrides: Sequence[str] = ()) -> dict[str, list[str]]:
    """The sweep a composed config defines in `hydra.sweeper.params` (e.g. the depths and step
    sizes of `+experiment=fig4_grid`), as {key: [value, ...]} in Hydra's override syntax."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    parser = OverridesParser.create()
    axes = {}
    for key, value in (cfg.hydra.sweeper.params or {}).items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            axes[key] = list(override.sweep_string_iterator())
        else:
            axes[key] = [override.get_value_element_as_str()]
    return axes


def grid_axes(settings: Mapping[str, Any], base_overrides: Sequence[str]) -> dict[str, list]:
    """A grid stage's axes: its `depths` and `lrs` in params.yaml, or, where it leaves one
    out, the sweep of the experiment preset its overrides name (the paper profile's Fig. 4
    grid is `+experiment=fig4_grid`'s); and its `seeds`, when given."""
    preset = None
    axes: dict[str, list] = {}
    for name, key in (("depth", "depths"), ("lr", "lrs")):
        values = settings.get(key)
        if values is None:
            preset = sweep_axes(base_overrides) if preset is None else preset
            values = preset.get(name)
        if not values:
            raise ParamsError(
                f"params.yaml: the grid needs `{key}` (or an experiment preset sweeping {name})"
            )
        axes[name] = list(values)
    if settings.get("seeds"):
        axes["seed"] = list(settings["seeds"])
    return axes


def train_cached(
    cfg: DictConfig | Mapping,
    results_dir: str | Path,
    output_root: str | Path | None = None,
    data: TensorData | None = None,
    tags: Mapping[str, Any] | None = None,
    require_files: Sequence[str] = (),
    command: str | None = None,
) -> dict:
    """Train unless `<results_dir>/<key>.json` exists; return the stored result.

    `require_files` names result fields holding paths (e.g. "checkpoint_path",
    "analysis.eigenvector_path") that must still exist for a stored result to count; otherwise
    the run is trained again.
    """
    resolved = validate(cfg)
    cached = cached_result(resolved, results_dir, require_files)
    if cached is not None:
        return cached
    key = config_key(resolved)
    output_dir = run_output_dir(resolved, results_dir, output_root)
    tags = {"config_key": key, **(tags or {})}
    result = train(resolved, output_dir=output_dir, tags=tags, data=data, command=command)
    return store_result(resolved, result, results_dir)


def batch_chunks(pending: Sequence[Job], max_models: int) -> list[list[Job]]:
    """The pending runs that can share a batched model (src.training.batched): groups of equal
    `batch_key` of at least two runs, cut into chunks of at most `max_models`, in the order of
    `pending`. Runs in no chunk are trained alone."""
    groups: dict[str, list[Job]] = {}
    for resolved, command in pending:
        if batchable(resolved) is None:
            groups.setdefault(batch_key(resolved), []).append((resolved, command))
    return [
        group[start : start + max_models]
        for group in groups.values()
        if len(group) >= 2
        for start in range(0, len(group), max_models)
    ]


def train_chunk(
    chunk: Sequence[Job], results_dir: Path, output_root: str | Path | None, data: TensorData
) -> list[dict]:
    """Train one chunk as a batched model; store and return each member's result as
    train_cached would."""
    resolved = [r for r, _ in chunk]
    results = train_batched(
        resolved,
        output_dirs=[run_output_dir(r, results_dir, output_root) for r in resolved],
        tags=[{"config_key": config_key(r)} for r in resolved],
        data=data,
        commands=[c for _, c in chunk],
    )
    return [store_result(r, result, results_dir) for r, result in zip(resolved, results)]


def train_pending_in_batches(
    pending: Sequence[Job],
    results_dir: Path,
    output_root: str | Path | None,
    data_for,
    max_models: int,
    progress: GridProgress | None = None,
) -> None:
    """Train runs (validated config, retrain command) that differ only in seed / lr as batched
    models (src.training.batched), storing each member's result as train_cached would. Runs
    that cannot be batched are left to the caller."""
    for chunk in batch_chunks(pending, max_models):
        results = train_chunk(chunk, results_dir, output_root, data_for(chunk[0][0]))
        if progress is not None:
            progress.finished(results)


def data_key(resolved: Mapping[str, Any]) -> str:
    return json.dumps(resolved["dataset"], sort_keys=True)


def cached_data(resolved: Mapping[str, Any], cache: dict[str, TensorData]) -> TensorData:
    """The run's data set, loaded once per process and data config."""
    key = data_key(resolved)
    if key not in cache:
        cache[key] = load_dataset(resolved["dataset"])
    return cache[key]


# --- worker processes -------------------------------------------------------------------------

_WORKER_DATA: dict[str, TensorData] = {}  # a worker's data sets, loaded once per worker


def _start_worker(parent: int) -> None:
    """A worker trains with one thread (the pool is the parallelism) and ends on SIGTERM /
    SIGINT through Python's exception path, so its open MLflow run is closed as KILLED; it gets
    that SIGTERM when its `parent` ends, however it ends (the pool starts its workers from the
    parent's main thread, which lives as long as the parent: `die_with(parent=True)`). It
    prints what its parent would (src.runtime.console: quiet unless $FLATMINIMA_VERBOSE)."""
    torch.set_num_threads(1)
    exit_on_signals()
    die_with(parent, parent=True)
    quiet_notices()


class WorkerLost(UserError, RuntimeError):
    """A worker process ended without a result (killed from outside, out of memory)."""


class WorkerConfigError(ConfigValueError):
    """A ConfigValueError raised in a worker, carried back to the parent with the same one-line
    message (ConfigValueError itself does not survive pickling: its __init__ takes the key and
    the reason apart, while unpickling passes the message alone)."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.key = message.split(":", 1)[0]


def _train_task(
    task: Sequence[Job],
    batched: bool,
    results_dir: str,
    output_root: str | None,
    require_files: Sequence[str],
) -> list[dict]:
    """In a worker: a chunk as one batched model, or one run alone (train_cached); the stored
    results. A signal ends the worker once its run is closed: the pool would otherwise hand it
    the next task, or leave it waiting for one from a parent that is gone."""
    try:
        data = cached_data(task[0][0], _WORKER_DATA)
        if batched:
            return train_chunk(task, Path(results_dir), output_root, data)
        (resolved, command), *_ = task
        return [
            train_cached(
                resolved,
                results_dir,
                output_root,
                data=data,
                require_files=require_files,
                command=command,
            )
        ]
    except ConfigValueError as err:
        raise WorkerConfigError(str(err)) from None
    except Terminated as err:
        log.warning("worker %d stopped: %s", os.getpid(), err.reason)
        exit_now(err.code)
    except BaseException:
        if orphan_cause() is not None:  # whatever went wrong, no one is left to tell
            exit_now(128 + signal.SIGTERM)
        raise


def prepare_tracking(pending: Iterable[Job]) -> None:
    """Create and migrate the MLflow stores and experiments the workers will log to, once,
    here, before they start (src.runtime.tracking takes an inter-process lock for it anyway)."""
    for target in {
        (lg["tracking_uri"], lg["experiment_name"], lg.get("artifact_location"))
        for lg in (r["logger"] for r, _ in pending)
        if lg["name"] == "mlflow"
    }:
        prepare_store(*target)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM every worker (each closes its MLflow run as KILLED), wait for them, drop the
    queued tasks. The pool keeps its processes in a private dict: no public handle exists."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(WORKER_STOP_TIMEOUT_S)
    pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` spawned processes (fork after torch has started threads can
    deadlock), stopped at once if this process is interrupted or a task fails."""
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def train_in_processes(
    pending: Sequence[Job],
    results_dir: Path,
    output_root: str | Path | None,
    require_files: Sequence[str],
    workers: int,
    batch: bool,
    max_models: int,
    progress: GridProgress | None = None,
) -> dict[str, dict]:
    """Train the pending runs in a pool of single-thread worker processes, as chunks of
    batched models when `batch`; return the stored results by key. Every worker writes to the
    same result store (one file per run, written atomically), so the caller reads the results
    back in its own (grid) order whatever order the workers finish in."""
    if workers < 1:
        raise ConfigValueError("compute.workers", "must be >= 1", workers)
    chunks = batch_chunks(pending, max_models) if batch else []
    in_chunks = {config_key(r) for chunk in chunks for r, _ in chunk}
    tasks = [(chunk, True) for chunk in chunks] + [
        ([job], False) for job in pending if config_key(job[0]) not in in_chunks
    ]
    if not tasks:
        return {}
    # Longest first (a greedy schedule that keeps every worker busy to the end): a task's cost
    # is the sum of its runs' `run_cost` (depth x gradients per step: a SAM run costs twice).
    tasks.sort(key=lambda task: -sum(run_cost(r) for r, _ in task[0]))
    prepare_tracking(pending)
    stored: dict[str, dict] = {}
    out = None if output_root is None else str(output_root)
    with worker_pool(min(workers, len(tasks))) as pool:
        futures = [
            pool.submit(_train_task, task, batched, str(results_dir), out, tuple(require_files))
            for task, batched in tasks
        ]
        for future in as_completed(futures):  # as they finish: progress, and a failure at once
            try:
                results = future.result()
            except BrokenProcessPool:
                raise WorkerLost(
                    "grid: a worker process ended without its result (killed from outside or "
                    "out of memory); runs not stored yet are trained on the next start"
                ) from None
            stored.update({result["key"]: result for result in results})
            if progress is not None:
                progress.finished(results)
    return stored


def expand_grid(axes: Mapping[str, Iterable[Any]]) -> list[list[str]]:
    """{'depth': [2, 4], 'lr': [0.1]} -> [['depth=2', 'lr=0.1'], ['depth=4', 'lr=0.1']]."""
    names = list(axes)
    return [
        [f"{name}={value}" for name, value in zip(names, values)]
        for values in itertools.product(*(list(axes[n]) for n in names))
    ]


def sweeps_of(jobs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Hydra sweeps that cover `jobs` (lists of `name=value`): jobs equal but in their last
    override share one sweep, e.g. [depth=2 lr=1], [depth=2 lr=2] -> [depth=2, lr=1,2]."""
    grouped: dict[tuple[str, ...], list[str]] = {}
    for job in jobs:
        *head, last = job
        name, value = last.split("=", 1)
        grouped.setdefault((*head, name), []).append(value)
    return [[*head, f"{name}={','.join(values)}"] for (*head, name), values in grouped.items()]


def run_grid(
    base_overrides: Sequence[str],
    axes: Mapping[str, Sequence[Any]],
    results_dir: str | Path,
    **options: Any,
) -> list[dict]:
    """Train every combination of `axes` on top of `base_overrides`; return results in grid order.

    `options` are run_points' (launcher, workers, batching, reuse_from, ...): launcher="inprocess"
    trains here, loading each data set once; with `batch_models` (auto: when a GPU is present)
    the runs that differ only in seed or lr are trained together as batched models of up to
    `max_models_per_batch` members (src.training.batched). launcher="processes" trains the same
    runs (or batches) in `workers` single-thread worker processes. Any other value is a Hydra
    launcher option (`submitit_slurm`, `submitit_local`, `joblib`, `basic`): the grid becomes
    one Hydra multirun whose jobs write their results to `results_dir`; runs already there are
    skipped by the jobs themselves.
    """
    sweep = [f"{name}={','.join(str(v) for v in values)}" for name, values in axes.items()]
    return run_points(base_overrides, expand_grid(axes), results_dir, sweeps=[sweep], **options)


def run_points(
    base_overrides: Sequence[str],
    jobs: Sequence[Sequence[str]],
    results_dir: str | Path,
    output_root: str | Path | None = None,
    launcher: str = IN_PROCESS,
    launcher_overrides: Sequence[str] = (),
    require_files: Sequence[str] = (),
    batch_models: str | bool = "auto",
    max_models_per_batch: int = 16,
    workers: int = 2,
    sweeps: Sequence[Sequence[str]] | None = None,
    reuse_from: Sequence[str | Path] = (),
) -> list[dict]:
    """Train the runs `jobs` (each a list of overrides, e.g. ['depth=2', 'lr=1.41']) on top of
    `base_overrides`, as `run_grid` does; return their results in the order of `jobs`.

    Unlike a grid the jobs need not form a product (the bisection of the stability boundary
    trains one step size per depth per round). A Hydra launcher gets `sweeps` (default
    `sweeps_of(jobs)`), one multirun each. Runs stored in one of the `reuse_from` result
    stores (other stages') are copied from there instead of trained.
    """
    results_dir = Path(results_dir)
    for partial in results_dir.glob(".*.tmp"):  # left by a process killed mid-write
        partial.unlink()
    jobs = [list(job) for job in jobs]
    # Each run's own progress is off in a grid (GridProgress reports run k of N instead),
    # unless the caller set it; it is not part of a result's key.
    quiet = [] if any(o.startswith("progress.") for o in base_overrides) else GRID_PROGRESS
    resolved_configs = [validate(compose_config([*base_overrides, *quiet, *job])) for job in jobs]
    commands = [retrain_command([*base_overrides, *job]) for job in jobs]
    for resolved in resolved_configs if reuse_from else ():
        if cached_result(resolved, results_dir, require_files) is None:
            adopt_result(resolved, results_dir, reuse_from, require_files)
    hydra_launcher = launcher not in (IN_PROCESS, PROCESSES)
    if hydra_launcher:
        for sweep in sweeps if sweeps is not None else sweeps_of(jobs):
            _launch_multirun(
                base_overrides, sweep, results_dir, output_root, launcher, launcher_overrides
            )
    data_cache: dict[str, TensorData] = {}

    def data_for(resolved: Mapping[str, Any]) -> TensorData:
        return cached_data(resolved, data_cache)

    batch = not hydra_launcher and batching_enabled(batch_models)
    stored: dict[str, dict] = {}
    pending: list[Job] = []
    if not hydra_launcher:  # a Hydra launcher's jobs report themselves
        pending = _unique_pending(zip(resolved_configs, commands), results_dir, require_files)
    unique = len({config_key(r) for r in resolved_configs})
    progress = GridProgress([r for r, _ in pending], stored=unique - len(pending))
    if launcher == PROCESSES or batch:
        if launcher == PROCESSES:
            stored = train_in_processes(
                pending,
                results_dir,
                output_root,
                require_files,
                int(workers),
                batch,
                int(max_models_per_batch),
                progress,
            )
        else:
            train_pending_in_batches(
                pending, results_dir, output_root, data_for, int(max_models_per_batch), progress
            )
    results: list[dict] = []
    for job, resolved, command in zip(jobs, resolved_configs, commands):
        if hydra_launcher or launcher == PROCESSES:
            result = stored.get(config_key(resolved)) or load_result(
                result_path(resolved, results_dir)
            )
            if result is None:
                raise RuntimeError(f"grid job {' '.join(job)} wrote no result to {results_dir}")
        else:
            result = train_cached(
                resolved,
                results_dir,
                output_root,
                data=data_for(resolved),
                require_files=require_files,
                command=command,
            )
            progress.finished([result])
        results.append(result)
        log.debug("%s: %s", " ".join(job), result["status"])
    return results


def _unique_pending(
    jobs: Iterable[Job], results_dir: Path, require_files: Sequence[str]
) -> list[Job]:
    """The jobs without a usable stored result, each run once (two jobs may be one run)."""
    pending: dict[str, Job] = {}
    for resolved, command in jobs:
        key = config_key(resolved)
        if key not in pending and cached_result(resolved, results_dir, require_files) is None:
            pending[key] = (resolved, command)
    return list(pending.values())


def _launch_multirun(base_overrides, sweep, results_dir, output_root, launcher, launcher_overrides):
    cmd = [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        *base_overrides,
        *sweep,
        f"results_dir={Path(results_dir).resolve()}",
        f"hydra/launcher={launcher}",
        *launcher_overrides,
    ]
    if output_root is not None:
        cmd.append(f"hydra.sweep.dir={Path(output_root).resolve() / 'multirun'}")
    log.info("launching: %s", " ".join(cmd))
    # The multirun ends with this process (it follows our pid: src.core.signals.follow_owner);
    # stopped here, it is asked to stop (SIGTERM: it closes its runs) rather than killed.
    proc = subprocess.Popen(cmd, cwd=CONF_DIR.parent, env=owner_env())
    try:
        status = proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if status:
        raise subprocess.CalledProcessError(status, cmd)
