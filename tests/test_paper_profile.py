"""The `paper` profile of params.yaml is built from the Hydra presets (checked here without
training). Its end-to-end rehearsal, `dvc repro` at miniature size, is tests/test_pipeline.py."""

from __future__ import annotations

import pytest
import yaml
from support import REPO

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
