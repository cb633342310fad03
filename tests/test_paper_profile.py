"""The `paper` profile of params.yaml: built from the Hydra presets (checked without training),
and rehearsed end to end: `dvc repro` of profile=paper on CPU with tiny 28x28 IDX files, its
sizes shrunk (two depths, two step sizes, a few epochs) but its code paths the paper's: full
MNIST loader, 784-wide nets, the presets' overrides, in-process training."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from support import ALL_STAGES, COPY_IGNORE, REPO, run_ok, stage_env, stages_ran, write_idx

from src.experiments.grid import compose_config, grid_axes, sweep_axes
from src.runtime.params import load_params, profile_settings, training_overrides

PRESET_DIR = REPO / "conf" / "experiment"


def paper_params() -> dict:
    params = load_params(REPO / "params.yaml")
    params["profile"] = "paper"
    return params


@pytest.mark.parametrize("stage", ["grid_identity", "grid_he"])
def test_paper_grids_sweep_the_fig4_preset(stage):
    params = paper_params()
    settings = profile_settings(params, stage)
    base = training_overrides(params, stage, settings)
    preset = yaml.safe_load((PRESET_DIR / "fig4_grid.yaml").read_text())["hydra"]["sweeper"]
    axes = grid_axes(settings, base)
    assert axes == sweep_axes(["+experiment=fig4_grid"])
    assert ",".join(axes["depth"]) == preset["params"]["depth"].replace(" ", "")
    assert len(axes["lr"]) == 13 and axes["lr"][0] == "0.125"
    cfg = compose_config([*base, "depth=4", "lr=0.5"])
    assert cfg.dataset.name == "mnist" and cfg.dataset.resolution == 28
    assert cfg.init.name == ("identity" if stage == "grid_identity" else "he")
    assert cfg.optimizer.name == "sgd" and cfg.trainer.max_epochs == 200
    assert cfg.analysis.sharpness.tol == pytest.approx(1e-4)


def test_paper_table_s1_methods_are_the_presets():
    params = paper_params()
    settings = profile_settings(params, "flat_vs_sharp")
    base = training_overrides(params, "flat_vs_sharp", settings)
    expected = {  # Table S1 / Sec. 6: He init, 6 layers, batch 100
        "sgd": ("sgd", 0.5),
        "adam": ("adam", 3e-4),
        "sam": ("sam", 0.5),
    }
    for method, overrides in settings["methods"].items():
        cfg = compose_config([*base, f"depth={settings['depth']}", *overrides, "seed=1"])
        name, lr = expected[method]
        assert (cfg.optimizer.name, cfg.lr) == (name, pytest.approx(lr)), method
        assert cfg.model.depth == 6 and cfg.batch_size == 100 and cfg.init.name == "he"
        assert cfg.dataset.name == "mnist" and cfg.trainer.max_epochs == 200
        # what the stage measures beyond the presets, over training.paper's "off"
        assert cfg.analysis.gains.enabled and cfg.analysis.sharpness.save_eigenvector
        assert cfg.analysis.sharpness.k == 2 and cfg.analysis.sharpness.tol == pytest.approx(1e-6)
        assert cfg.logger.log_checkpoint
    assert compose_config([*base, *settings["methods"]["adam"]]).optimizer.betas == [0.8, 0.99]


def shrink(params: dict) -> dict:
    """The paper profile at rehearsal size: same presets and code paths, tiny budgets."""
    params["profile"] = "paper"
    params["training"]["paper"]["overrides"] += [
        "trainer.accelerator=cpu",
        "trainer.max_epochs=3",
        "callbacks.convergence.window=1",
        "callbacks.convergence.tol=5e-2",
        "analysis.sharpness.tol=1e-2",
    ]
    for grid in ("grid_identity", "grid_he"):
        params[grid]["paper"].update(depths=[2, 3], lrs=[0.5, 1000])
    params["curves"]["paper"].update(depth=3, lr=0.5)
    params["boundary"]["paper"].update(max_rounds=1, max_lr=2000)
    fvs = params["flat_vs_sharp"]["paper"]
    fvs.update(
        depth=2,
        seeds=[0, 1],
        chunk_size=128,
        line_points=5,
        closeup_points=3,
        eigen_points=3,
        gain_radius_restarts=2,
        gain_radius_steps=3,
    )
    fvs["overrides"] += [
        "analysis.sharpness.tol=1e-2",
        "analysis.trace.min_probes=2",
        "analysis.trace.max_probes=4",
        "analysis.density.probes=1",
        "analysis.density.lanczos_steps=6",
        "analysis.gains.restarts=2",
        "analysis.gains.steps=3",
    ]
    params["linear_check"]["paper"].update(depths=[1, 2], lrs=[0.4])
    params["linear_check"]["paper"]["overrides"] = [
        o if not o.startswith("trainer.max_epochs") else "trainer.max_epochs=200"
        for o in params["linear_check"]["paper"]["overrides"]
    ]
    params["theory"]["paper"].update(
        seeds=1,
        findings_cases=1,
        findings_dims=[[2, 2, 2]],
        figures={"fig3_dim": 3, "fig3_depth": 3, "fig3_networks": 1},
    )
    return params


@pytest.mark.slow
def test_dvc_repro_of_the_paper_profile_runs_every_stage(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(REPO, work, ignore=COPY_IGNORE)
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(shrink(params), sort_keys=False))
    write_idx(work / "data", "MNIST", n_train=200, n_test=50)
    env = stage_env(tmp_path)
    env.pop("FLATMINIMA_DATA_DIR", None)  # the profile's default: data/ in the checkout
    dvc = str(Path(sys.executable).with_name("dvc"))
    run_ok(["git", "init", "-q"], work, env)
    run_ok(["git", "add", "-A"], work, env)
    out = run_ok([dvc, "repro"], work, env, timeout=1200)
    assert stages_ran(out) == ALL_STAGES
    grid = json.loads((work / "results/grid_he/summary.json").read_text())
    assert grid["runs"] == 4
    rows = (work / "results/grid_identity/grid.csv").read_text().splitlines()
    assert len(rows) == 5 and all(",identity,sgd," in r for r in rows[1:])
    table = json.loads((work / "results/flat_vs_sharp/table_s1.json").read_text())
    assert set(table) >= {"sgd", "adam", "sam"}
    assert table["sgd"]["lambda_max"]["paper"]["mean"] == pytest.approx(1.76)
    assert [r["seed"] for r in table["adam"]["runs"]] == [0, 1]
    report = (work / "reports/REPORT.md").read_text()
    assert "profile **paper**" in report and "## Table S1" in report
    for name in ("fig4a_sharpness_identity", "fig6_gains", "fig7_cross_sections"):
        assert (work / "figures" / f"{name}.png").stat().st_size > 1000
