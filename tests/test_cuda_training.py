"""Training from CUDA graph replays equals eager training, for every optimizer and for batched
models whose batch shrinks (skipped where no GPU is present; run by benchmarks/gpu_suite.sh)."""

from __future__ import annotations

import pytest
import torch

from src.domain.config import validate
from src.domain.data import load_dataset
from src.training.run import train, train_batched

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BASE = [
    "dataset.limit_train=230",  # 7 full batches of 32 and a remainder of 6 (run eagerly)
    "dataset.resolution=7",
    "depth=3",
    "batch_size=32",
    "trainer.max_epochs=4",
    "trainer=gpu",
    "logger=none",
    "analysis.gains.enabled=false",
]
RTOL = 1e-5


def _pair(compose_cfg, tmp_path, *overrides):
    results = {}
    for mode in ("true", "false"):
        cfg = compose_cfg(*BASE, *overrides, f"performance.cuda_graph={mode}", fast=False)
        results[mode] = train(cfg, output_dir=tmp_path / mode)
    return results["true"], results["false"]


@pytest.mark.parametrize(
    "optimizer",
    [
        ["optimizer=sgd", "lr=0.1"],
        ["optimizer=sgd", "lr=0.05", "optimizer.momentum=0.9", "optimizer.weight_decay=1e-3"],
        ["optimizer=adam", "lr=1e-3"],
        ["optimizer=sam", "lr=0.1", "optimizer.rho=0.05"],
        ["optimizer=sam", "lr=1e-3", "optimizer.base=adam"],
    ],
    ids=["sgd", "momentum", "adam", "sam", "sam_adam"],
)
def test_captured_steps_equal_eager_steps(compose_cfg, tmp_path, optimizer):
    graph, eager = _pair(compose_cfg, tmp_path, *optimizer)
    assert graph.history["train_loss"] == pytest.approx(eager.history["train_loss"], rel=RTOL)
    assert graph.final_train_loss == pytest.approx(eager.final_train_loss, rel=RTOL)
    assert graph.steps == eager.steps and graph.status == eager.status
    if graph.analysis.get("lambda_max") is not None:
        assert graph.analysis["lambda_max"] == pytest.approx(eager.analysis["lambda_max"], rel=1e-4)


def test_batched_capture_recaptures_after_a_member_diverges(compose_cfg, tmp_path):
    """Member 1 diverges in its first epoch and leaves the batch: the graph is recorded again
    for the smaller batch, and the others train as they do eagerly."""
    lrs = [0.1, 1e4, 0.2]

    def run(mode: str):
        cfgs = [
            compose_cfg(
                *BASE, f"lr={lr}", f"seed={i}", f"performance.cuda_graph={mode}", fast=False
            )  # fmt: skip
            for i, lr in enumerate(lrs)
        ]
        data = load_dataset(validate(cfgs[0])["dataset"])
        return train_batched(cfgs, [tmp_path / mode / str(i) for i in range(3)], data=data)

    graph, eager = run("true"), run("false")
    assert [r.status for r in graph] == [r.status for r in eager]
    assert graph[1].status == "diverged"
    for i in (0, 2):
        assert graph[i].history["train_loss"] == pytest.approx(
            eager[i].history["train_loss"], rel=RTOL
        )
