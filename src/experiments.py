"""Grids of training runs with results keyed by the resolved config.

A run's result is written atomically to `<results_dir>/<key>.json`, where the key hashes the
resolved training config. A grid that is killed and restarted therefore skips the runs it
already finished, and a half-written result is never read as finished.

Grids run in this process by default (imports, data loading and CUDA start-up paid once), or
through any Hydra launcher (e.g. `submitit_slurm`) as a Hydra multirun whose jobs write to the
same results directory.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from src.config import ConfigValueError, validate

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Keys that do not change what is trained, so they do not enter the result key.
_NOT_IN_KEY = ("logger", "output_dir", "results_dir", "hydra")


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra's compose API (outside of @hydra.main)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# The code that produces a result: changing it must not let an old result be reused.
_RESULT_CODE = (
    "train.py",
    "training.py",
    "steps.py",
    "batched.py",
    "models.py",
    "data.py",
    "callbacks.py",
    "analysis",
)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of the source files that determine a training result (see _RESULT_CODE)."""
    src = Path(__file__).resolve().parent
    digest = hashlib.sha1()
    for name in _RESULT_CODE:
        for path in sorted((src / name).rglob("*.py")) if (src / name).is_dir() else [src / name]:
            digest.update(path.relative_to(src).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def config_key(resolved: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit key of everything that determines a training run: the resolved
    config (minus logging and output locations) and the code fingerprint."""
    trainer = dict(resolved.get("trainer", {}))
    for cosmetic in ("enable_progress_bar", "enable_model_summary", "log_every_n_steps"):
        trainer.pop(cosmetic, None)
    content = {k: v for k, v in resolved.items() if k not in _NOT_IN_KEY}
    content["trainer"] = trainer
    content["code"] = code_fingerprint()
    blob = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, default=float)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _stored_file_exists(result: Mapping, field: str) -> bool:
    """Does the path stored under `field` ("a.b" for nested fields) exist?"""
    node: Any = result
    for part in field.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return bool(node) and Path(node).is_file()


def cached_result(
    resolved: Mapping[str, Any], results_dir: str | Path, require_files: Sequence[str] = ()
) -> dict | None:
    """The stored result of a run, if it exists and the files it names still do."""
    cached = load_result(Path(results_dir) / f"{config_key(resolved)}.json")
    if cached is not None and all(_stored_file_exists(cached, f) for f in require_files):
        return cached
    return None


def store_result(resolved: Mapping[str, Any], result, results_dir: str | Path) -> dict:
    key = config_key(resolved)
    payload = {"key": key, "config": resolved, **result.to_dict()}
    write_json_atomic(Path(results_dir) / f"{key}.json", payload)
    return payload


def run_output_dir(resolved, results_dir, output_root) -> Path:
    return Path(output_root or Path(results_dir).parent / "outputs") / config_key(resolved)


def train_cached(
    cfg: DictConfig | Mapping,
    results_dir: str | Path,
    output_root: str | Path | None = None,
    data=None,
    tags: Mapping[str, Any] | None = None,
    require_files: Sequence[str] = (),
) -> dict:
    """Train unless `<results_dir>/<key>.json` exists; return the stored result.

    `require_files` names result fields holding paths (e.g. "checkpoint_path",
    "analysis.eigenvector_path") that must still exist for a stored result to count; otherwise
    the run is trained again.
    """
    from src.train import train

    resolved = validate(cfg)
    cached = cached_result(resolved, results_dir, require_files)
    if cached is not None:
        return cached
    key = config_key(resolved)
    output_dir = run_output_dir(resolved, results_dir, output_root)
    result = train(cfg, output_dir=output_dir, tags={"config_key": key, **(tags or {})}, data=data)
    return store_result(resolved, result, results_dir)


def use_batches(batch_models: str | bool) -> bool:
    """ "auto": batch when a GPU is present (on CPUs K nets cost K times one); or true/false."""
    value = str(batch_models).lower()
    if value not in ("auto", "true", "false"):
        raise ConfigValueError("compute.batch_models", "must be auto, true or false", batch_models)
    if value == "auto":
        import torch

        return torch.cuda.is_available()
    return value == "true"


def train_pending_in_batches(
    pending: Sequence[tuple[DictConfig, dict]],
    results_dir: Path,
    output_root: str | Path | None,
    data_for,
    max_models: int,
) -> None:
    """Train runs that differ only in seed / lr as batched models (src.batched), storing each
    member's result as train_cached would. Runs that cannot be batched are left to the caller."""
    from src.batched import batch_key, batchable, train_batched

    groups: dict[str, list[tuple[DictConfig, dict]]] = {}
    for cfg, resolved in pending:
        if batchable(resolved) is None:
            groups.setdefault(batch_key(resolved), []).append((cfg, resolved))
    for group in groups.values():
        if len(group) < 2:
            continue
        for start in range(0, len(group), max_models):
            chunk = group[start : start + max_models]
            resolved = [r for _, r in chunk]
            results = train_batched(
                [c for c, _ in chunk],
                output_dirs=[run_output_dir(r, results_dir, output_root) for r in resolved],
                tags=[{"config_key": config_key(r)} for r in resolved],
                data=data_for(resolved[0]),
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
    batched models of up to `max_models_per_batch` members (src.batched). Any
    other value is a Hydra launcher option (`submitit_slurm`, `submitit_local`, `joblib`,
    `basic`): the grid becomes one Hydra multirun whose jobs write their results to
    `results_dir`; runs already there are skipped by the jobs themselves.
    """
    from src.data import load_dataset

    results_dir = Path(results_dir)
    for partial in results_dir.glob(".*.tmp"):  # left by a process killed mid-write
        partial.unlink()
    jobs = expand_grid(axes)
    if launcher != "inprocess":
        _launch_multirun(
            base_overrides, axes, results_dir, output_root, launcher, launcher_overrides
        )
    data_cache: dict[str, Any] = {}

    def data_for(resolved: Mapping[str, Any]):
        data_key = json.dumps(resolved["dataset"], sort_keys=True)
        if data_key not in data_cache:
            data_cache[data_key] = load_dataset(resolved["dataset"])
        return data_cache[data_key]

    configs = [compose_config([*base_overrides, *job]) for job in jobs]
    resolved_configs = [validate(cfg) for cfg in configs]
    if launcher == "inprocess" and use_batches(batch_models):
        pending = [
            (cfg, resolved)
            for cfg, resolved in zip(configs, resolved_configs)
            if cached_result(resolved, results_dir, require_files) is None
        ]
        train_pending_in_batches(
            pending, results_dir, output_root, data_for, int(max_models_per_batch)
        )
    results: list[dict] = []
    for job, cfg, resolved in zip(jobs, configs, resolved_configs):
        if launcher != "inprocess":
            result = load_result(results_dir / f"{config_key(resolved)}.json")
            if result is None:
                raise RuntimeError(f"grid job {' '.join(job)} wrote no result to {results_dir}")
        else:
            result = train_cached(
                cfg, results_dir, output_root, data=data_for(resolved), require_files=require_files
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


def prune_results(results_dir: str | Path, keep: Iterable[str]) -> list[Path]:
    """Delete result files whose key is not in `keep` (settings that are no longer asked for)."""
    keep = set(keep)
    removed = []
    for path in Path(results_dir).glob("*.json"):
        if path.stem not in keep:
            path.unlink()
            removed.append(path)
    return removed
