"""Verdict stability (issue 23 item 7): the whole pipeline run a second time with a change that
alters nothing but float rounding (by default `compute.<profile>.batch_models=false`: the same
runs trained one by one instead of as one batched model), and that run's verdicts saved where
the report stage reads them (VARIANT_FILE). The report puts the two verdict tables side by side
and calls a claim `undecided (sensitive)` where they differ (src.report.claims).

The second run trains in a copy of the project's tracked files (no results, no DVC lock), with
its own MLflow store, so this checkout's results are untouched; it takes as long as `dvc repro`
(longer unbatched)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from src.core.errors import UserError
from src.core.files import read_json, write_json

VARIANT_FILE = Path("stability") / "rounding_variant.json"
# What the copy leaves out: results and everything a run writes, so the variant starts empty.
SKIPPED = (
    ".git",
    ".venv",
    ".dvc/cache",
    ".dvc/tmp",
    "results",
    "figures",
    "reports",
    "outputs",
    "multirun",
    "mlflow.db",
    "mlartifacts",
    "mlruns",
    "dvc.lock",
    "dvc_plots",
    "stability",
)


class VariantError(UserError):
    """The variant's pipeline failed or a setting is unusable (one line, exit status 1)."""


def default_overrides(profile: str) -> list[str]:
    return [f"compute.{profile}.batch_models=false"]


def set_param(params: dict[str, Any], override: str) -> None:
    """Apply one `dotted.key=value` override (value parsed as YAML) to params.yaml's content;
    the key must exist (a typo would run the unchanged pipeline twice)."""
    key, sep, value = override.partition("=")
    if not sep:
        raise VariantError(f"override {override!r}: expected key=value")
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise VariantError(f"override {override!r}: params.yaml has no key {key!r}")
        node = node[part]
    if leaf not in node:
        raise VariantError(f"override {override!r}: params.yaml has no key {key!r}")
    node[leaf] = yaml.safe_load(value)


def _ignore(root: Path):
    skipped = {root / s for s in SKIPPED}

    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(directory) / n in skipped or n == "__pycache__"]

    return ignore


def run_variant(
    root: Path, overrides: Sequence[str], workdir: Path | None = None, keep: bool = False
) -> dict[str, Any]:
    """Run `dvc repro` in a copy of `root` with `overrides` applied to its params.yaml; write
    the variant's verdicts to root/VARIANT_FILE and return them."""
    root = root.resolve()
    params = yaml.safe_load((root / "params.yaml").read_text())
    for override in overrides:
        set_param(params, override)
    base = Path(tempfile.mkdtemp(prefix="flatminima-variant-", dir=workdir))
    copy = base / "project"
    shutil.copytree(root, copy, ignore=_ignore(root))
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{copy / 'mlflow.db'}",
    }
    start = time.monotonic()
    try:
        # DVC needs a repository to track its stages in: a fresh one, the copy staged in it
        for git in (["git", "init", "-q"], ["git", "add", "-A"]):
            subprocess.run(git, cwd=copy, env=env, check=True, capture_output=True)
        done = subprocess.run(["dvc", "repro"], cwd=copy, env=env)
        if done.returncode != 0:
            raise VariantError(f"the variant's dvc repro failed (exit {done.returncode}) in {copy}")
        claims = read_json(copy / "reports" / "claims.json")
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    variant = {
        "profile": params["profile"],
        "overrides": list(overrides),
        "rules": claims.get("rules"),
        "seconds": round(time.monotonic() - start, 1),
        "claims": _verdicts(claims.get("claims", {})),
        "beyond_the_paper": _verdicts(claims.get("beyond_the_paper", {})),
    }
    write_json(root / VARIANT_FILE, variant)
    return variant


def _verdicts(claims: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each claim's verdict and its readings' verdicts (what the comparison needs)."""
    return {
        name: {
            "verdict": claim["verdict"],
            "readings": {k: r["verdict"] for k, r in (claim.get("readings") or {}).items()},
        }
        for name, claim in claims.items()
    }


def load_variant(root: Path) -> dict[str, Any] | None:
    path = root / VARIANT_FILE
    return read_json(path) if path.exists() else None
