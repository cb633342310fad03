"""The `theory` DVC stage: fixed outputs and one MLflow run, from a temporary params file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # end to end: see `make test-fast`

REPO = Path(__file__).resolve().parents[2]

QUICK_PARAMS = {
    "profile": "quick",
    "theory": {
        "quick": {
            "seeds": 1,
            "base_seed": 3,
            "findings_cases": 1,
            "findings_dims": [[2, 2, 2]],
            "figures": {"seed": 0, "fig3_dim": 3, "fig3_depth": 3, "fig3_networks": 1},
        }
    },
}


def test_stage_writes_outputs_and_logs_one_mlflow_run(tmp_path, new_mlflow_store):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(QUICK_PARAMS))
    tracking = new_mlflow_store(tmp_path / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.theory", "--params", str(params), "--root", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "out"
    report = json.loads((root / "results/theory/verify.json").read_text())
    assert report["all_passed"] and len(report["claims"]) >= 20
    assert "nonwhite_minimax_conjecture" in report["findings"]
    metrics = json.loads((root / "results/theory/metrics.json").read_text())
    assert metrics["all_passed"] == 1.0
    assert (root / "results/theory/figure_data.npz").stat().st_size > 0
    for name in ("fig1_scalar_valley", "fig2_interpolation", "fig3_gains"):
        for suffix in (".png", ".pdf"):
            assert (root / "figures/theory" / f"{name}{suffix}").stat().st_size > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("theory")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["lemma3_hessian_phi_vs_autograd.worst_error"] <= 1e-10
    assert run.data.params["seeds"] == "1"
    logged = {
        a.path
        for folder in ("results", "figures")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert "results/verify.json" in logged and "figures/fig3_gains.png" in logged


def test_settings_defaults_and_overrides(tmp_path):
    from src.runtime.params import ParamsError, load_params, profile_settings
    from src.theory.verify import stage_settings

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {"profile": "cpu", "theory": {"cpu": {"seeds": 5, "figures": {"fig3_depth": 3}}}}
        )
    )
    settings = stage_settings(profile_settings(load_params(params), "theory"))
    assert settings["seeds"] == 5 and settings["figures"]["fig3_depth"] == 3
    assert settings["figures"]["fig3_dim"] == 4 and settings["findings_cases"] == 2
    # the active profile's section only, and one line naming the key when it is missing
    params.write_text(yaml.safe_dump({"profile": "paper", "theory": {"cpu": {"seeds": 3}}}))
    with pytest.raises(ParamsError, match="theory.paper"):
        profile_settings(load_params(params), "theory")
