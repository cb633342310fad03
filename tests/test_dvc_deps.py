"""DVC deps cannot go stale: every file a stage runs is covered by its deps, and editing one
makes `dvc status` list exactly the stages that run it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.experiments.code import ROOT, TRAINING_ENTRY, closure

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def conf_targets() -> list[str]:
    """Project modules that the Hydra configs name as `_target_` (Hydra imports them)."""
    found = set()
    for path in (ROOT / "conf").rglob("*.yaml"):
        for target in re.findall(r"_target_:\s*(src\.[\w.]+)", path.read_text()):
            found.add(target.rsplit(".", 1)[0])
    return sorted(found)


def stage_files(stage: dict) -> set[Path]:
    """The project files a stage's command runs: its script's imports, transitively; for
    training stages also the `python -m src.train` jobs a Hydra launcher starts, and the
    modules the configs name."""
    module = re.match(r"python -m ([\w.]+)", stage["cmd"]).group(1)
    files = set(closure([module]))
    if ROOT / "src" / "experiments" / "grid.py" in files:
        files |= set(closure(["src.train", *conf_targets()]))
        files |= set((ROOT / "conf").rglob("*.yaml"))
    return files


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def test_stage_files_are_found():
    grid = {p.relative_to(ROOT).as_posix() for p in stage_files(STAGES["grid_identity"])}
    assert {"src/tracking.py", "src/paper/tables.py", "src/training/module.py"} <= grid
    assert "src/hydra_callbacks.py" in grid and "conf/config.yaml" in grid
    theory = {p.relative_to(ROOT).as_posix() for p in stage_files(STAGES["theory"])}
    assert "src/theory/linear.py" in theory and "src/training/run.py" not in theory


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_cover_every_file_the_stage_runs(name):
    stage = STAGES[name]
    missing = sorted(
        str(p.relative_to(ROOT)) for p in stage_files(stage) if not covered(p, stage["deps"])
    )
    assert missing == [], f"stage {name}: add to deps: {missing}"


def test_result_keys_fingerprint_the_training_closure():
    """The fingerprint hashes the training entry's closure, which every training stage's deps
    cover: a file that changes a result also invalidates the stage."""
    files = closure(TRAINING_ENTRY)
    for name in ("grid_identity", "grid_he", "curves", "flat_vs_sharp", "linear_check"):
        assert all(covered(p, STAGES[name]["deps"]) for p in files)


def _dvc(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_editing_a_file_a_stage_imports_makes_dvc_list_that_stage(tmp_path):
    """On a copy of the code and of dvc.yaml's stages (deps on code only, commands replaced by
    `true`, no outputs), an edit makes `dvc status` list exactly the stages that run the file."""
    for folder in ("src", "pipelines", "conf"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    code_roots = ("src", "pipelines", "conf")
    stages = {
        name: {
            "cmd": "true",
            "deps": [d for d in stage["deps"] if Path(d).parts[0] in code_roots],
        }
        for name, stage in STAGES.items()
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    _dvc(tmp_path, "init", "--no-scm", "-q")
    _dvc(tmp_path, "repro", "-q")
    assert "up to date" in _dvc(tmp_path, "status")
    for edited in ("src/tracking.py", "src/paper/tables.py"):
        with (tmp_path / edited).open("a") as handle:
            handle.write("\n# an edit\n")
        listed = {
            line.rstrip(":")
            for line in _dvc(tmp_path, "status").splitlines()
            if line and not line[0].isspace()
        }
        runs_it = {n for n, s in STAGES.items() if ROOT / edited in stage_files(s)}
        assert runs_it and listed == runs_it, edited
        _dvc(tmp_path, "repro", "-q")


@pytest.mark.parametrize("name", ["curves", "boundary"])
def test_stages_that_list_the_training_code_out_keep_it_whole(name):
    """YAML cannot extend the *training_code anchor, so these stages write the list out (plus
    the results they read): it must not fall behind the anchor."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert set(dvc["vars"][0]["code"]["training"]) <= set(dvc["stages"][name]["deps"])
