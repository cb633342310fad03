"""The fast training paths compute what the plain ones do.

* `train(cfg)` (one Lightning step per epoch, counter-indexed static step, optionally replayed
  from a CUDA graph) gives the loss curve of a hand-written PyTorch loop with the same seeds;
* `train_batched` gives, member by member, the runs `train` gives one at a time, and a
  member that diverges does not disturb the others;
* a CUDA graph replay gives the eager curve and lambda_max (GPU only; skipped here).

Tolerances: the paths run the same float32 operations in the same order except for the
reductions inside batched matmuls and the per-member loss, so curves agree to ~1e-6 relative
after a few epochs; we assert 1e-5 (lambda_max: 1e-4, it is a Lanczos solve at tol 1e-6).
"""

from __future__ import annotations

import contextlib
import math
import shlex

import pytest
import torch
import torch.nn.functional as F
from support import all_runs

from src.core.errors import UserError
from src.domain.config import ConfigValueError, validate
from src.domain.data import load_dataset
from src.domain.models import MLP, initialize
from src.experiments.grid import compose_config, run_grid
from src.experiments.store import cached_result, config_key
from src.runtime.tracking import TrackingError
from src.training.batched import BatchedMLP, batch_key
from src.training.module import RegressionModule
from src.training.run import build_model, train, train_batched
from src.training.steps import StepRunner, use_capture

SMALL = ["dataset.resolution=7", "depth=3", "batch_size=32", "trainer.max_epochs=3"]
CURVE_RTOL = 1e-5


def plain_loop(resolved: dict, data, epochs: int) -> list[float]:
    """Textbook training with the project's seeding: init from the run's seed, one
    permutation per epoch from a generator seeded with it, mean of the per-batch losses."""
    model = build_model(resolved, data)
    opt_cfg = resolved["optimizer"]
    if opt_cfg["name"] == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=opt_cfg["lr"],
            momentum=opt_cfg["momentum"],
            weight_decay=opt_cfg["weight_decay"],
        )
    else:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=opt_cfg["lr"], betas=tuple(opt_cfg["betas"]), eps=opt_cfg["eps"]
        )
    generator = torch.Generator().manual_seed(int(resolved["seed"]))
    n, size = data.n_train, int(resolved["batch_size"])
    curve = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, size):
            idx = order[start : start + size]
            loss = F.mse_loss(model(data.train_inputs[idx]), data.train_targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        curve.append(total / n)
    return curve


@pytest.mark.parametrize(
    "optimizer",
    [["optimizer=sgd", "lr=0.2"], ["optimizer=adam"], ["lr=0.05", "optimizer.momentum=0.9"]],
)
def test_project_path_matches_a_plain_loop(compose_cfg, tmp_path, optimizer):
    # 200 samples, batch 32: six full batches and a smaller last one each epoch.
    cfg = compose_cfg(*SMALL, *optimizer)
    resolved = validate(cfg)
    data = load_dataset(resolved["dataset"])
    result = train(cfg, output_dir=tmp_path, data=data)
    expected = plain_loop(resolved, data, epochs=3)
    assert result.steps == 3 * math.ceil(200 / 32)
    assert result.history["train_loss"] == pytest.approx(expected, rel=CURVE_RTOL)
    assert result.history["step"] == [7, 14, 21]


def test_max_steps_is_honoured(compose_cfg, tmp_path):
    result = train(compose_cfg(*SMALL, "trainer.max_steps=10"), output_dir=tmp_path)
    assert result.steps == 10
    assert result.epochs == 2


def test_batched_mlp_is_k_mlps():
    gen = torch.Generator().manual_seed(0)
    models = [initialize(MLP(5, 4, 3, 6), "he", generator=gen) for _ in range(3)]
    for model in models:
        for layer in model.layers:
            torch.nn.init.normal_(layer.bias, generator=gen)
    batched = BatchedMLP(models)
    x = torch.randn(3, 7, 5, generator=gen)
    out = batched(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x[k]), rtol=1e-6, atol=1e-6)
        state = batched.member_state(k)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    "members",
    [
        [["lr=0.05", "seed=0"], ["lr=0.2", "seed=0"], ["lr=0.1", "seed=3"]],
        [["optimizer=adam", "seed=0"], ["optimizer=adam", "seed=1", "lr=1e-3"]],
        [
            ["lr=0.05", "optimizer.momentum=0.9", "optimizer.weight_decay=1e-3", f"seed={s}"]
            for s in (0, 1)
        ],
    ],
    ids=["sgd", "adam", "momentum"],
)
def test_batched_members_equal_separate_runs(compose_cfg, tmp_path, members):
    cfgs = [compose_cfg(*SMALL, *member) for member in members]
    data = load_dataset(validate(cfgs[0])["dataset"])
    separate = [train(c, output_dir=tmp_path / f"s{i}", data=data) for i, c in enumerate(cfgs)]
    batched = train_batched(
        cfgs, output_dirs=[tmp_path / f"b{i}" for i in range(len(cfgs))], data=data
    )
    for one, member in zip(separate, batched):
        assert member.status == one.status
        assert member.steps == one.steps
        assert member.history["train_loss"] == pytest.approx(
            one.history["train_loss"], rel=CURVE_RTOL
        )
        assert member.final_train_loss == pytest.approx(one.final_train_loss, rel=CURVE_RTOL)
        assert member.final_val_loss == pytest.approx(one.final_val_loss, rel=CURVE_RTOL)


def test_a_diverging_member_leaves_the_others_alone(compose_cfg, tmp_path, mlflow_uri):
    # Member 1 explodes in its first epoch; 0 and 2 must train as if alone, and every member
    # is its own MLflow run with its own status, analysis and checkpoint.
    base = [
        "dataset.limit_train=200",
        *SMALL,
        "trainer.max_epochs=4",
        "analysis.gains.enabled=false",
    ]
    lrs = [0.1, 1e4, 0.2]
    cfgs = [compose_cfg(*base, f"lr={lr}", f"seed={i}", fast=False) for i, lr in enumerate(lrs)]
    data = load_dataset(validate(cfgs[0])["dataset"])
    batched = train_batched(cfgs, output_dirs=[tmp_path / f"b{i}" for i in range(3)], data=data)
    assert [r.status for r in batched][1] == "diverged"
    assert batched[1].epochs == 1
    assert batched[1].analysis == {"skipped": "diverged"}
    for i in (0, 2):
        alone = train(
            compose_cfg(*base, "logger=none", f"lr={lrs[i]}", f"seed={i}", fast=False),
            output_dir=tmp_path / f"s{i}",
            data=data,
        )
        assert batched[i].status == alone.status
        assert batched[i].history["train_loss"] == pytest.approx(
            alone.history["train_loss"], rel=CURVE_RTOL
        )
        assert batched[i].analysis["lambda_max"] == pytest.approx(
            alone.analysis["lambda_max"], rel=1e-4
        )
    runs = {run.info.run_id: run for run in all_runs(mlflow_uri)}
    assert set(runs) == {r.run_id for r in batched}
    for result in batched:
        run = runs[result.run_id]
        assert run.info.status == "FINISHED"
        assert run.data.tags["status"] == result.status
        assert run.data.tags["batched_models"] == "3"
        if math.isfinite(result.final_train_loss):  # MLflow stores inf as the largest float
            assert run.data.metrics["final_train_loss"] == pytest.approx(result.final_train_loss)
    assert "lambda_max" in runs[batched[0].run_id].data.metrics
    assert all((tmp_path / f"b{i}" / "model.pt").is_file() for i in range(3))


def test_batch_key_separates_what_must_not_share_a_batch(compose_cfg):
    key = batch_key(validate(compose_cfg(*SMALL, "lr=0.1", "seed=0")))
    assert batch_key(validate(compose_cfg(*SMALL, "lr=0.3", "seed=5"))) == key
    assert batch_key(validate(compose_cfg(*SMALL, "lr=0.1", "depth=4"))) != key
    assert batch_key(validate(compose_cfg(*SMALL, "lr=0.1", "init=he"))) != key
    with pytest.raises(ConfigValueError, match="^batch: "):
        train_batched([compose_cfg(*SMALL), compose_cfg(*SMALL, "depth=4")])
    with pytest.raises(ConfigValueError, match="^dataset.resample_noise: "):
        train_batched([compose_cfg(*SMALL, "dataset.resample_noise=true")] * 2)


def test_batched_checks_the_tracking_server_before_training(compose_cfg, monkeypatch):
    trained = []
    monkeypatch.setattr(
        "src.training.module.RegressionModule.training_step", lambda *a: trained.append(1)
    )
    cfgs = [
        compose_cfg(
            "dataset.limit_train=200",
            *SMALL,
            "analysis=off",
            "logger.tracking_uri=http://127.0.0.1:9",
            f"seed={s}",
            fast=False,
        )  # fmt: skip
        for s in (0, 1)
    ]
    with pytest.raises(TrackingError, match="^logger.tracking_uri: cannot reach"):
        train_batched(cfgs)
    assert trained == []


def test_grid_in_batches_stores_what_one_by_one_would(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["dataset.limit_train=200", *SMALL, "analysis=off", "logger=none"]
    axes = {"lr": [0.05, 0.1, 0.2], "seed": [0, 1]}
    batched = run_grid(base, axes, tmp_path / "batched", batch_models=True, max_models_per_batch=4)
    single = run_grid(base, axes, tmp_path / "single", batch_models=False)
    assert [r["key"] for r in batched] == [r["key"] for r in single]
    for b, s in zip(batched, single):
        assert b["history"]["train_loss"] == pytest.approx(
            s["history"]["train_loss"], rel=CURVE_RTOL
        )
    # Finished results are reused, not retrained.
    trained = []
    monkeypatch.setattr(
        "src.training.module.RegressionModule.training_step", lambda *a: trained.append(1)
    )
    again = run_grid(base, axes, tmp_path / "batched", batch_models=True)
    assert trained == [] and [r["key"] for r in again] == [r["key"] for r in batched]
    # Every stored run records the command that retrains it alone, batched or not: its
    # overrides compose to a config with the same result key.
    for result in [*batched, *single]:
        words = shlex.split(result["command"])
        program, overrides = words[:3], words[3:]
        assert program == ["python", "-m", "src.train"]
        assert config_key(validate(compose_config(overrides))) == result["key"]


def test_a_stored_result_needs_only_the_files_it_names(tmp_path, monkeypatch):
    """require_files: a stored run counts while every file it names exists; a field the result
    does not have (a measurement this run did not make, e.g. the density of all seeds but the
    first in flat_vs_sharp) requires nothing, so such runs are not retrained on every rerun."""
    monkeypatch.chdir(tmp_path)
    base = ["dataset.limit_train=200", *SMALL, "analysis=off", "logger=none", "lr=0.1"]
    store = tmp_path / "runs"
    (result,) = run_grid(base, {"seed": [0]}, store, batch_models=False)
    resolved = validate(compose_config([*base, "seed=0"]))
    required = ("checkpoint_path", "analysis.eigenvector_path", "analysis.density_path")
    assert "density_path" not in result["analysis"]
    assert cached_result(resolved, store, required)["key"] == result["key"]
    (store / result["checkpoint_path"]).unlink()  # a file it names is gone: train again
    assert cached_result(resolved, store, required) is None
    assert cached_result(resolved, store, ())["key"] == result["key"]


def test_a_stage_reads_runs_another_stage_stored(tmp_path, monkeypatch):
    """reuse_from: a run already in another store (same key: same config and code) is copied,
    with its paths re-rooted, not trained; a run in no store is trained."""
    monkeypatch.chdir(tmp_path)
    base = ["dataset.limit_train=200", *SMALL, "analysis=off", "logger=none"]
    (first,) = run_grid(base, {"lr": [0.1]}, tmp_path / "grid" / "runs", batch_models=False)
    trained = []
    real_step = RegressionModule.training_step

    def counting_step(self, *args):
        trained.append(self.records[0].lr)
        return real_step(self, *args)

    monkeypatch.setattr(RegressionModule, "training_step", counting_step)
    results = run_grid(
        base,
        {"lr": [0.1, 0.2]},
        tmp_path / "curves" / "runs",
        batch_models=False,
        reuse_from=[tmp_path / "grid" / "runs"],
    )
    assert set(trained) == {0.2}  # only the run no other stage had
    assert results[0]["key"] == first["key"]
    assert results[0]["history"] == first["history"]
    copied = (tmp_path / "curves" / "runs" / f"{first['key']}.json").read_text()
    assert str(tmp_path) not in copied  # stored paths stay relative to their store


def test_capture_is_skipped_cleanly_without_cuda(compose_cfg):
    cpu = torch.device("cpu")
    assert use_capture("auto", cpu) is False
    assert use_capture("false", cpu) is False
    with pytest.raises(ConfigValueError, match="^performance.cuda_graph: true needs a CUDA"):
        validate(compose_cfg("performance.cuda_graph=true"))
    calls = []
    runner = StepRunner(lambda: calls.append("step"), lambda: calls.append("zero"), capture=False)
    runner.run(3)
    assert calls == ["zero", "step"] * 3 and runner.graph is None


@pytest.fixture
def stand_in_graph(monkeypatch):
    """A stand-in for torch.cuda's graph API: recording does not run the step (as on a GPU),
    each replay runs it once. Returns the counters and a switch that makes capture fail."""
    state = {"capturing": False, "ran": 0, "recorded": 0, "replays": 0, "fail": False}

    class FakeGraph:
        def replay(self):
            state["replays"] += 1
            state["ran"] += 1

    class Capture:
        def __init__(self, graph):
            pass

        def __enter__(self):
            if state["fail"]:
                raise RuntimeError("operation not permitted when stream is capturing")
            state["capturing"] = True

        def __exit__(self, *exc):
            state["capturing"] = False

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", Capture)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    return state


def test_step_runner_bookkeeping_with_a_stand_in_graph(stand_in_graph):
    # Every requested step must run exactly once: warm-up eagerly, then replays.
    state = stand_in_graph

    def step():
        key = "recorded" if state["capturing"] else "ran"
        state[key] += 1

    runner = StepRunner(step, lambda: None, capture=True)
    runner.run(2)  # warm-up only
    assert (state["ran"], state["recorded"], state["replays"]) == (2, 0, 0)
    runner.run(10)  # one more warm-up step, then record, then 9 replays
    assert (state["ran"], state["recorded"], state["replays"]) == (12, 1, 9)
    runner.run(5)
    assert (state["ran"], state["recorded"], state["replays"]) == (17, 1, 14)
    runner.reset()  # new shapes: warm up again and record again
    runner.run(4)
    assert (state["ran"], state["recorded"], state["replays"]) == (21, 2, 15)
    assert runner.captures == 2


def test_step_runner_runs_uncaptured_when_capture_fails(stand_in_graph):
    stand_in_graph["fail"] = True
    ran = []
    runner = StepRunner(lambda: ran.append(1), lambda: None, capture=True)
    runner.run(5)
    runner.run(2)
    assert len(ran) == 7 and runner.graph is None and runner.capture is False


def test_step_runner_raises_when_capture_is_required_and_fails(stand_in_graph):
    stand_in_graph["fail"] = True
    runner = StepRunner(lambda: None, lambda: None, capture=True, required=True)
    with pytest.raises(RuntimeError, match="capturing"):
        runner.run(5)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("performance.cuda_graph=true", "performance.cuda_graph"),
        ("trainer.precision=16-mixed", "trainer.precision"),
        ("performance.cuda_graph=sometimes", "performance.cuda_graph"),
    ],
)
def test_unusable_speed_settings_are_one_line_errors(
    compose_cfg, tmp_path, mlflow_uri, override, key
):
    """A UserError naming the key, before any run exists (the command line prints a UserError
    as its one line, exit 1: tests/test_train.py::test_cli_bad_value_exits_nonzero_with_one_line)."""
    if override.endswith("=true") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    cfg = compose_cfg("dataset.limit_train=50", "trainer.max_epochs=1", "analysis=off",
                      "trainer=cpu", "logger=mlflow", override)  # fmt: skip
    with pytest.raises(UserError) as err:
        train(cfg, output_dir=tmp_path)
    assert str(err.value).startswith(f"{key}: ") and "\n" not in str(err.value)
    assert all_runs(mlflow_uri) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_replay_equals_eager_steps(compose_cfg, tmp_path):
    common = ["dataset.limit_train=200", *SMALL, "trainer=gpu", "logger=none"]
    common += ["analysis.gains.enabled=false"]
    graph = train(
        compose_cfg(*common, "performance.cuda_graph=true", fast=False), output_dir=tmp_path / "g"
    )
    eager = train(
        compose_cfg(*common, "performance.cuda_graph=false", fast=False), output_dir=tmp_path / "e"
    )
    assert graph.history["train_loss"] == pytest.approx(eager.history["train_loss"], rel=CURVE_RTOL)
    assert graph.analysis["lambda_max"] == pytest.approx(eager.analysis["lambda_max"], rel=1e-4)
