"""Grids of training runs over the result store (src.experiments.store).

Grids run in this process by default (imports, data loading and CUDA start-up paid once), or
through any Hydra launcher (e.g. `submitit_slurm`) as a Hydra multirun whose jobs write to the
same results directory. Every stored result records the command line that retrains it alone.
"""

from __future__ import annotations

import itertools
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from src.config import RunConfig, batching_enabled, validate
from src.data import TensorData, load_dataset
from src.experiments.store import (
    cached_result,
    config_key,
    load_result,
    result_path,
    run_output_dir,
    store_result,
)
from src.training.batched import batch_key, batchable
from src.training.run import train, train_batched

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def retrain_command(overrides: Sequence[str]) -> str:
    """The command line that trains one run alone, from its Hydra overrides."""
    return shlex.join(["python", "-m", "src.train", *overrides])


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra's compose API (outside of @hydra.main)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


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


def train_pending_in_batches(
    pending: Sequence[tuple[RunConfig, str]],
    results_dir: Path,
    output_root: str | Path | None,
    data_for,
    max_models: int,
) -> None:
    """Train runs (validated config, retrain command) that differ only in seed / lr as batched
    models (src.training.batched), storing each member's result as train_cached would. Runs
    that cannot be batched are left to the caller."""
    groups: dict[str, list[tuple[RunConfig, str]]] = {}
    for resolved, command in pending:
        if batchable(resolved) is None:
            groups.setdefault(batch_key(resolved), []).append((resolved, command))
    for group in groups.values():
        if len(group) < 2:
            continue
        for start in range(0, len(group), max_models):
            chunk = group[start : start + max_models]
            resolved = [r for r, _ in chunk]
            results = train_batched(
                resolved,
                output_dirs=[run_output_dir(r, results_dir, output_root) for r in resolved],
                tags=[{"config_key": config_key(r)} for r in resolved],
                data=data_for(resolved[0]),
                commands=[c for _, c in chunk],
            )
            for r, result in zip(resolved, results):
                store_result(r, result, results_dir)


def expand_grid(axes: Mapping[str, Iterable[Any]]) -> list[list[str]]:
    """{'depth': [2, 4], 'lr': [0.1]} -> [['depth=2', 'lr=0.1'], ['depth=4', 'lr=0.1']]."""
    names = list(axes)
    return [
        [f"{name}={value}" for name, value in zip(names, values)]
        for values in itertools.product(*(list(axes[n]) for n in names))
    ]


def run_grid(
    base_overrides: Sequence[str],
    axes: Mapping[str, Sequence[Any]],
    results_dir: str | Path,
    output_root: str | Path | None = None,
    launcher: str = "inprocess",
    launcher_overrides: Sequence[str] = (),
    require_files: Sequence[str] = (),
    batch_models: str | bool = "auto",
    max_models_per_batch: int = 16,
) -> list[dict]:
    """Train every combination of `axes` on top of `base_overrides`; return results in grid order.

    launcher="inprocess" trains here, loading each data set once; with `batch_models` (auto:
    when a GPU is present) the runs that differ only in seed or lr are trained together as
    batched models of up to `max_models_per_batch` members (src.training.batched). Any
    other value is a Hydra launcher option (`submitit_slurm`, `submitit_local`, `joblib`,
    `basic`): the grid becomes one Hydra multirun whose jobs write their results to
    `results_dir`; runs already there are skipped by the jobs themselves.
    """
    results_dir = Path(results_dir)
    for partial in results_dir.glob(".*.tmp"):  # left by a process killed mid-write
        partial.unlink()
    jobs = expand_grid(axes)
    if launcher != "inprocess":
        _launch_multirun(
            base_overrides, axes, results_dir, output_root, launcher, launcher_overrides
        )
    data_cache: dict[str, TensorData] = {}

    def data_for(resolved: Mapping[str, Any]) -> TensorData:
        data_key = json.dumps(resolved["dataset"], sort_keys=True)
        if data_key not in data_cache:
            data_cache[data_key] = load_dataset(resolved["dataset"])
        return data_cache[data_key]

    resolved_configs = [validate(compose_config([*base_overrides, *job])) for job in jobs]
    commands = [retrain_command([*base_overrides, *job]) for job in jobs]
    if launcher == "inprocess" and batching_enabled(batch_models):
        pending = [
            (resolved, command)
            for resolved, command in zip(resolved_configs, commands)
            if cached_result(resolved, results_dir, require_files) is None
        ]
        train_pending_in_batches(
            pending, results_dir, output_root, data_for, int(max_models_per_batch)
        )
    results: list[dict] = []
    for job, resolved, command in zip(jobs, resolved_configs, commands):
        if launcher != "inprocess":
            result = load_result(result_path(resolved, results_dir))
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
        results.append(result)
        log.info("%s: %s", " ".join(job), result["status"])
    return results


def _launch_multirun(base_overrides, axes, results_dir, output_root, launcher, launcher_overrides):
    sweep = [f"{name}={','.join(str(v) for v in values)}" for name, values in axes.items()]
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
    subprocess.run(cmd, check=True, cwd=CONF_DIR.parent)
