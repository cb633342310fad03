"""The result store: one JSON file per finished training run, keyed by what determines it.

A run's result is written atomically to `<results_dir>/<key>.json`, where the key hashes the
resolved training config and the training code (src.experiments.code). A grid that is killed
and restarted therefore skips the runs it already finished, a half-written result is never
read as finished, and a result of changed code is never reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from src.experiments.code import code_fingerprint
from src.files import write_json_atomic

# Keys that do not change what is trained, so they do not enter the result key.
_NOT_IN_KEY = ("logger", "output_dir", "results_dir", "hydra")


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


def load_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def result_path(resolved: Mapping[str, Any], results_dir: str | Path) -> Path:
    return Path(results_dir) / f"{config_key(resolved)}.json"


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
    cached = load_result(result_path(resolved, results_dir))
    if cached is not None and all(_stored_file_exists(cached, f) for f in require_files):
        return cached
    return None


def store_result(resolved: Mapping[str, Any], result, results_dir: str | Path) -> dict:
    payload = {"key": config_key(resolved), "config": dict(resolved), **result.to_dict()}
    write_json_atomic(result_path(resolved, results_dir), payload)
    return payload


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
