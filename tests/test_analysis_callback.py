"""The analysis callback inside training: what it logs, and that diverged runs skip it."""

from __future__ import annotations

import json
import logging

import mlflow
import pytest
import torch
import torch.nn.functional as F
from support import CONVERGING_LINEAR_RUN, all_runs

from src.analysis.hessian import exact_hessian
from src.domain.models import MLP
from src.training.run import train


@pytest.mark.slow
def test_callback_logs_every_key(compose_cfg, tmp_path, mlflow_uri, caplog):
    caplog.set_level(logging.INFO, logger="src.training.callbacks")
    cfg = compose_cfg(
        "analysis=default",
        "logger=mlflow",
        # 4x4 digits: 544 parameters, so the exact Hessian's spectrum below is cheap
        "dataset.resolution=4",
        "dataset.limit_train=64",
        "batch_size=64",  # one full batch per step
        "depth=2",
        "lr=0.5",
        "trainer.max_epochs=4",
        "analysis.sharpness.every_n_epochs=2",
        "analysis.gains.restarts=8",
        "analysis.gains.steps=50",
        "analysis.sharpness.k=2",
    )
    result = train(cfg, output_dir=tmp_path)
    (run,) = all_runs(mlflow_uri)
    metrics = run.data.metrics
    for key in (
        "lambda_max",
        "lr_times_lambda_max",
        "lambda_max_raw",
        "lr_times_lambda_max_raw",
        "polish_loss_before",
        "polish_loss_after",
        "hessian_hvps",
        "hessian_residual",
        "hessian_seconds",
        "lambda_2",
    ):
        assert key in metrics, key
    assert metrics["lr_times_lambda_max"] == pytest.approx(0.5 * metrics["lambda_max"])
    assert metrics["polish_loss_after"] < metrics["polish_loss_before"]
    assert metrics["hessian_residual"] < 1e-2
    # The console says what the analysis did and what it cost.
    said = [r.getMessage() for r in caplog.records if r.name == "src.training.callbacks"]
    assert (
        f"lambda_max = {metrics['lambda_max']:.6g} (at the final weights "
        f"{metrics['lambda_max_raw']:.6g}): Lanczos (ARPACK), "
        f"{int(metrics['hessian_hvps'])} HVPs, {metrics['hessian_seconds']:.1f} s"
    ) in said
    assert any(m.startswith("gain profile: 8 restarts x 50 steps per layer, ") for m in said)
    client = mlflow.MlflowClient(mlflow_uri)
    tracked = client.get_metric_history(run.info.run_id, "lambda_max_tracked")
    assert len(tracked) == 2  # epochs 2 and 4
    assert {a.path for a in client.list_artifacts(run.info.run_id, "analysis")} == {
        "analysis/gains.json",
        "analysis/gains.png",
    }
    gains = json.loads((tmp_path / "gains.json").read_text())
    assert len(gains["max_gain"]) == 2 and len(gains["spread"]["top5"]) == 2

    # the eigenvector next to the checkpoint really is the top eigenvector of the training loss
    saved = torch.load(tmp_path / "hessian_eigenvector.pt", weights_only=False)
    state = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    pixels = cfg.dataset.resolution**2
    model = MLP(pixels, pixels, 2)
    model.load_state_dict(state)
    from src.domain.data import load_dataset

    data = load_dataset(result_dataset_cfg(cfg))
    hessian = exact_hessian(model, F.mse_loss, data.train_inputs, data.train_targets)
    top = float(torch.linalg.eigvalsh(hessian)[-1])
    assert saved["eigenvalue"] == pytest.approx(top, rel=1e-3)
    assert result.analysis["lambda_max_raw"] == pytest.approx(top, rel=1e-3)
    v = saved["eigenvector"].double()
    assert float((hessian @ v - top * v).norm() / top) < 3e-2
    # lambda_max is the top eigenvalue after 20 full-batch GD steps of 1 / lambda_raw, redone
    # here by plain autograd on the full loss
    step = 1.0 / result.analysis["lambda_max_raw"]
    for _ in range(20):
        grads = torch.autograd.grad(
            F.mse_loss(model(data.train_inputs), data.train_targets), list(model.parameters())
        )
        with torch.no_grad():
            for param, grad in zip(model.parameters(), grads):
                param -= step * grad
    hessian = exact_hessian(model, F.mse_loss, data.train_inputs, data.train_targets)
    polished_top = float(torch.linalg.eigvalsh(hessian)[-1])
    assert result.analysis["lambda_max"] == pytest.approx(polished_top, rel=1e-3)
    assert run.data.tags["eigenvector_path"] == str((tmp_path / "hessian_eigenvector.pt").resolve())


def result_dataset_cfg(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.dataset, resolve=True)


def test_diverged_run_skips_analysis(compose_cfg, tmp_path, mlflow_uri):
    cfg = compose_cfg(
        "analysis=default",
        "logger=mlflow",
        "dataset=synthetic",
        "model=linear",
        "depth=3",
        "lr=500",
        "trainer.max_epochs=3",
    )
    result = train(cfg, output_dir=tmp_path)
    assert result.status == "diverged"
    assert result.analysis == {"skipped": "diverged"}
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == "diverged"
    assert run.data.tags["analysis"] == "skipped (diverged)"
    assert "lambda_max" not in run.data.metrics
    assert not (tmp_path / "hessian_eigenvector.pt").exists()


def test_linear_net_sharpness_matches_theorem1_through_training(compose_cfg, tmp_path):
    """End to end: identity init, full-batch GD on whitened data -> Thm 1 (divided by d_y)."""
    cfg = compose_cfg(
        "dataset=synthetic",
        "dataset.d_x=4",
        "dataset.d_y=4",
        "dataset.n=64",
        "dataset.teacher=spd",
        "model=linear",
        "depth=3",
        "lr=0.5",
        "batch_size=64",
        "trainer.max_epochs=2000",
        "callbacks.convergence.tol=1e-7",
        "callbacks.convergence.window=5",
        "analysis=default",
        "analysis.gains.enabled=false",
        "analysis.sharpness.dtype=float64",
        "dataset.limit_train=null",
    )
    result = train(cfg, output_dir=tmp_path)
    assert result.status == "converged"
    state = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    product = state["layers.0.weight"].double()
    for k in (1, 2):
        product = state[f"layers.{k}.weight"].double() @ product
    s_max = float(torch.linalg.matrix_norm(product, ord=2))
    predicted = 2 * 3 * s_max ** (2 * (1 - 1 / 3)) / 4  # eq. (17), loss averaged over d_y = 4
    assert result.analysis["lambda_max"] == pytest.approx(predicted, rel=1e-4)


@pytest.mark.slow
def test_unstable_minimum_is_not_converged(compose_cfg, tmp_path, mlflow_uri, monkeypatch):
    """A stationary point with lr x lambda_max above the stability limit is `unstable`."""
    import src.training.run

    overrides = (
        *CONVERGING_LINEAR_RUN,
        "analysis=default",
        "analysis.gains.enabled=false",
        "logger=mlflow",
    )
    stable = train(compose_cfg(*overrides), output_dir=tmp_path / "stable")
    assert stable.status == "converged"
    assert 2.0 * stable.analysis["lambda_max"] < 2.0  # genuinely stable
    # the same run judged against a limit it exceeds
    monkeypatch.setattr(src.training.run, "stability_limit", lambda cfg: 1e-3)
    unstable = train(compose_cfg(*overrides), output_dir=tmp_path / "unstable")
    assert (unstable.status, unstable.reason) == ("unstable", "lr_lambda_above_limit")
    run = next(r for r in all_runs(mlflow_uri) if r.info.run_id == unstable.run_id)
    assert run.data.tags["status"] == "unstable"
    assert run.data.tags["stop_reason"] == "lr_lambda_above_limit"


@pytest.mark.slow
def test_a_minimum_whose_hessian_solve_fails_is_unverified(compose_cfg, tmp_path, mlflow_uri):
    """A stationary point below the reference whose lambda_max cannot be measured (the solver
    gets too few Hessian-vector products for its tolerance) is never counted as a minimum."""
    overrides = (
        *CONVERGING_LINEAR_RUN,
        "analysis=default",
        "analysis.gains.enabled=false",
        "analysis.sharpness.max_hvps=2",
        "analysis.sharpness.tol=1e-12",
        "logger=mlflow",
    )
    result = train(compose_cfg(*overrides), output_dir=tmp_path)
    assert (result.status, result.reason) == ("unverified", "hessian_solve_failed")
    assert result.analysis["lambda_max"] is None
    assert result.loss_vs_affine < 1.001  # it did reach the least-squares fit
    run = next(r for r in all_runs(mlflow_uri) if r.info.run_id == result.run_id)
    assert run.data.tags["status"] == "unverified"
    assert run.data.tags["hessian_status"].startswith("not converged")


def test_stability_limit_depends_on_the_optimizer(compose_cfg):
    from src.domain.config import validate
    from src.training.status import stability_limit

    assert stability_limit(validate(compose_cfg())) == 2.0
    assert stability_limit(validate(compose_cfg("optimizer.momentum=0.9"))) == pytest.approx(3.8)
    assert stability_limit(validate(compose_cfg("optimizer=adam"))) is None
    off = compose_cfg("callbacks.convergence.require_linear_stability=false")
    assert stability_limit(validate(off)) is None


@pytest.mark.slow
def test_trace_and_density_are_logged_with_their_cost(compose_cfg, tmp_path, mlflow_uri):
    """analysis.trace / analysis.density: the Hutchinson trace agrees with the exact Hessian's
    within 4 of its standard errors, the density is saved and logged as an artifact, and each
    measure's HVP count is a metric; k=2 gives the gap ratio lambda_1 / lambda_2."""
    cfg = compose_cfg(
        "analysis=default",
        "logger=mlflow",
        "dataset.resolution=7",
        "dataset.limit_train=64",
        "batch_size=32",
        "depth=2",
        "trainer.max_epochs=3",
        "analysis.gains.enabled=false",
        "analysis.sharpness.k=2",
        "analysis.sharpness.tol=1e-8",
        "analysis.sharpness.dtype=float64",
        "analysis.sharpness.polish_steps=0",  # every measure at the checkpoint's weights
        "analysis.trace.enabled=true",
        "analysis.trace.tol=0.02",
        "analysis.trace.max_probes=200",
        "analysis.density.enabled=true",
        "analysis.density.lanczos_steps=40",
    )
    result = train(cfg, output_dir=tmp_path)
    (run,) = all_runs(mlflow_uri)
    metrics = run.data.metrics
    state = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    model = MLP(49, 49, 2).double()
    model.load_state_dict(state)
    from src.domain.data import load_dataset

    data = load_dataset(result_dataset_cfg(cfg))
    hessian = exact_hessian(
        model, F.mse_loss, data.train_inputs.double(), data.train_targets.double()
    )
    eigenvalues = torch.linalg.eigvalsh(hessian).flip(0)
    exact_trace = float(hessian.trace())
    trace = result.analysis["trace"]
    assert abs(trace["trace"] - exact_trace) <= 4 * trace["stderr"]
    assert trace["relative_stderr"] <= 0.02 and trace["converged"]
    assert metrics["hessian_trace"] == pytest.approx(trace["trace"])
    assert metrics["hessian_trace_hvps"] == trace["probes"] == trace["hvps"] >= 10
    assert metrics["lambda_gap_ratio"] == pytest.approx(
        float(eigenvalues[0] / eigenvalues[1]), rel=1e-6
    )
    density = result.analysis["density"]
    assert metrics["density_hvps"] == density["hvps"] == 4 * 40
    # the quadrature's first moment is tr(H)/N in expectation: 4 probes, a loose check
    assert density["trace"] == pytest.approx(exact_trace, rel=0.25)
    assert density["top_edge"] == pytest.approx(float(eigenvalues[0]), rel=1e-3)
    saved = json.loads((tmp_path / "hessian_density.json").read_text())
    grid = torch.tensor(saved["grid"])
    assert float(torch.trapezoid(torch.tensor(saved["density"]), grid)) == pytest.approx(
        1, abs=1e-3
    )
    artifacts = {
        a.path for a in mlflow.MlflowClient(mlflow_uri).list_artifacts(run.info.run_id, "analysis")
    }
    assert "analysis/hessian_density.json" in artifacts
    assert result.analysis["density_path"] == str((tmp_path / "hessian_density.json").resolve())
