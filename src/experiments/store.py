"""The result store: one JSON file per finished training run, keyed by what determines it.

A run's result is written atomically to `<results_dir>/<key>.json`, where the key hashes the
resolved training config and the training code (src.experiments.code). A grid that is killed
and restarted therefore skips the runs it already finished, a half-written result is never
read as finished, and a result of changed code is never reused.

A result file carries a schema version; one that cannot be read, is truncated, or is not a
valid result is reported by name, moved to `<results_dir>/invalid/`, and its run trained again.
Paths inside a result (checkpoint, output folder, eigenvector) are stored relative to the
results directory, so a copied or moved checkout never reads the original's files; they are
made absolute again when a result is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from src.core.files import write_json
from src.core.status import STATUSES
from src.experiments.code import code_fingerprint

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: relative paths, `reason` and `command`
REQUIRED_FIELDS = ("schema", "key", "config", "status", "final_train_loss", "epochs", "history")
PATH_FIELDS = (
    "checkpoint_path",
    "output_dir",
    "analysis.eigenvector_path",
    "analysis.density_path",
)

# Keys that do not change what is trained, so they do not enter the result key.
_NOT_IN_KEY = ("logger", "output_dir", "results_dir", "hydra", "progress")


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


def result_problem(payload: Any, key: str) -> str | None:
    """What makes `payload` no valid result stored under `key` (None: nothing)."""
    if not isinstance(payload, dict):
        return f"not a JSON object but {type(payload).__name__}"
    if payload.get("schema") != SCHEMA_VERSION:
        return f"schema version {payload.get('schema')!r}, expected {SCHEMA_VERSION}"
    missing = [name for name in REQUIRED_FIELDS if name not in payload]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if payload["key"] != key:
        return f"its key {payload['key']!r} is not its file name"
    if payload["status"] not in STATUSES:
        return f"unknown status {payload['status']!r}"
    return None


def set_aside(path: Path, problem: str) -> Path:
    """Move an invalid result file to `invalid/` beside it, saying so in the log."""
    target = path.parent / "invalid" / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    log.warning("%s: %s; moved to %s, the run will be trained again", path, problem, target)
    return target


def _map_paths(payload: dict, convert) -> dict:
    payload = {**payload, "analysis": dict(payload.get("analysis") or {})}
    for field in PATH_FIELDS:
        *parents, leaf = field.split(".")
        node = payload
        for part in parents:
            node = node.get(part) or {}
        if isinstance(node, dict) and node.get(leaf):
            node[leaf] = convert(node[leaf])
    return payload


def load_result(path: Path) -> dict | None:
    """The result stored at `path`, paths made absolute; None if there is none. An invalid
    file is set aside (see the module docstring) and counts as none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        set_aside(path, f"unreadable ({err})")
        return None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        set_aside(path, f"not valid JSON, truncated or corrupt ({err})")
        return None
    problem = result_problem(payload, path.stem)
    if problem is not None:
        set_aside(path, problem)
        return None
    root = path.parent
    return _map_paths(payload, lambda p: str((root / p).resolve()))


def result_path(resolved: Mapping[str, Any], results_dir: str | Path) -> Path:
    return Path(results_dir) / f"{config_key(resolved)}.json"


def _stored_file_exists(result: Mapping, field: str) -> bool:
    """Does the path stored under `field` ("a.b" for nested fields) still exist? A result
    without the field requires no file: its run made none (no density asked of this seed, no
    eigenvector of a diverged run), and the same key would make none again."""
    node: Any = result
    for part in field.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node is None or Path(node).is_file()


def cached_result(
    resolved: Mapping[str, Any], results_dir: str | Path, require_files: Sequence[str] = ()
) -> dict | None:
    """The stored result of a run, if it exists and the files it names under `require_files`
    still do."""
    cached = load_result(result_path(resolved, results_dir))
    if cached is not None and all(_stored_file_exists(cached, f) for f in require_files):
        return cached
    return None


def adopt_result(
    resolved: Mapping[str, Any],
    results_dir: str | Path,
    sources: Sequence[str | Path],
    require_files: Sequence[str] = (),
) -> dict | None:
    """Copy the run's result from another stage's store into `results_dir`, if one of
    `sources` holds it (same config key: the same config and training code, so the same run)
    with its files; return it, or None. A stage whose runs another stage already trained reads
    them instead of training them again (e.g. the training curves of runs in the grids)."""
    root = Path(results_dir).resolve()
    for source in sources:
        found = cached_result(resolved, source, require_files)
        if found is not None:
            root.mkdir(parents=True, exist_ok=True)
            stored = _map_paths(found, lambda p: os.path.relpath(Path(p).resolve(), root))
            write_json(result_path(resolved, results_dir), stored)
            return found
    return None


def store_result(resolved: Mapping[str, Any], result, results_dir: str | Path) -> dict:
    """Store a TrainResult (paths relative to `results_dir`); return it as `load_result` would."""
    payload = {
        "schema": SCHEMA_VERSION,
        "key": config_key(resolved),
        "config": dict(resolved),
        **result.to_dict(),
    }
    root = Path(results_dir).resolve()
    stored = _map_paths(payload, lambda p: os.path.relpath(Path(p).resolve(), root))
    write_json(result_path(resolved, results_dir), stored)
    return _map_paths(stored, lambda p: str((root / p).resolve()))


def run_output_dir(resolved, results_dir, output_root) -> Path:
    return Path(output_root or Path(results_dir).parent / "outputs") / config_key(resolved)


def prune_results(results_dir: str | Path, keep: Iterable[str]) -> list[Path]:
    """Delete result files whose key is not in `keep` (settings that are no longer asked for)."""
    keep = set(keep)
    removed = []
    for path in Path(results_dir).glob("*.json"):
        if path.stem not in keep:
            path.unlink()
            removed.append(path)
    return removed
