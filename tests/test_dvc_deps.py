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


def expanded_stages() -> dict[str, dict]:
    """dvc.yaml's stages as DVC names them: a `foreach` stage becomes one stage per item
    (`grid@identity`), with `${item}` substituted in its command and deps."""
    stages = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        for item in stage["foreach"]:
            do = yaml.safe_dump(stage["do"]).replace("${item}", str(item))
            stages[f"{name}@{item}"] = yaml.safe_load(do)
    return stages


STAGES = expanded_stages()
CODE_ROOTS = ("src", "pipelines", "conf")


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
    assert {"grid@identity", "grid@he"} <= set(STAGES)
    assert STAGES["grid@he"]["cmd"] == "python -m pipelines.grid --stage grid_he"
    grid = {p.relative_to(ROOT).as_posix() for p in stage_files(STAGES["grid@identity"])}
    assert {"src/runtime/tracking.py", "src/paper/tables.py", "src/training/module.py"} <= grid
    assert "src/runtime/hydra_callbacks.py" in grid and "conf/config.yaml" in grid
    theory = {p.relative_to(ROOT).as_posix() for p in stage_files(STAGES["theory"])}
    assert "src/theory/linear.py" in theory and "src/training/run.py" not in theory


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_cover_every_file_the_stage_runs(name):
    stage = STAGES[name]
    missing = sorted(
        str(p.relative_to(ROOT)) for p in stage_files(stage) if not covered(p, stage["deps"])
    )
    assert missing == [], f"stage {name}: add to deps: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_code_dep_covers_a_file_the_stage_runs(name):
    """A code dep that covers nothing the stage runs would rerun it for edits it cannot see."""
    stage = STAGES[name]
    runs = stage_files(stage)
    idle = [
        d
        for d in stage["deps"]
        if Path(d).parts[0] in CODE_ROOTS and not any(covered(p, [d]) for p in runs)
    ]
    assert idle == [], f"stage {name}: deps that cover nothing it runs: {idle}"


def test_result_keys_fingerprint_the_training_closure():
    """The fingerprint hashes the training entry's closure, which every training stage's deps
    cover: a file that changes a result also invalidates the stage."""
    files = closure(TRAINING_ENTRY)
    for name in ("grid@identity", "grid@he", "curves", "flat_vs_sharp", "linear_check"):
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
    stages = {  # a plain stage per foreach item: `@` is DVC's separator, not a name
        name.replace("@", "_"): {
            "cmd": "true",
            "deps": [d for d in stage["deps"] if Path(d).parts[0] in CODE_ROOTS],
        }
        for name, stage in STAGES.items()
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    _dvc(tmp_path, "init", "--no-scm", "-q")
    _dvc(tmp_path, "repro", "-q")
    assert "up to date" in _dvc(tmp_path, "status")
    for edited in ("src/runtime/tracking.py", "src/paper/tables.py"):
        with (tmp_path / edited).open("a") as handle:
            handle.write("\n# an edit\n")
        listed = {
            line.rstrip(":")
            for line in _dvc(tmp_path, "status").splitlines()
            if line and not line[0].isspace()
        }
        runs_it = {
            n.replace("@", "_") for n, s in STAGES.items() if ROOT / edited in stage_files(s)
        }
        assert runs_it and listed == runs_it, edited
        _dvc(tmp_path, "repro", "-q")
