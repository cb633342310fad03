"""The GPU code paths' logic, checked on the CPU: epoch timing, TF32 around measurements, auto
chunk sizes, release of training state, and batch orders that do not depend on the device."""

from __future__ import annotations

import gc
import importlib.util
import re
import time
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import src.analysis.hessian as hessian
import src.analysis.landscape as landscape
import src.training.callbacks as callbacks
from src.analysis import LossLandscape, auto_chunk_size, top_hessian_eigenvalue
from src.domain.config import validate
from src.domain.data import load_dataset
from src.domain.models import MLP
from src.training.module import RegressionModule
from src.training.run import train, train_batched

REPO = Path(__file__).resolve().parents[1]
TINY = ["dataset.limit_train=200", "dataset.resolution=7", "depth=2", "batch_size=50"]


def test_epoch_time_excludes_callbacks_and_validation(compose_cfg, monkeypatch, tmp_path):
    """Lightning runs callbacks' on_train_epoch_end before the module's: the epoch's time is
    taken before them, so a slow callback (tracked sharpness, logging) is not counted."""
    pause = 0.5  # per epoch; the 12 tiny steps take milliseconds, so the margin is wide
    monkeypatch.setattr(
        callbacks.AnalysisCallback, "on_train_epoch_end", lambda *a: time.sleep(pause)
    )
    cfg = compose_cfg(*TINY, "trainer.max_epochs=3", "analysis=default",
                      "analysis.gains.enabled=false")  # fmt: skip
    result = train(cfg, output_dir=tmp_path)
    assert result.epochs == 3
    train_seconds = result.ms_per_step * result.steps / 1e3
    # Counted, the pauses would add 3 x 0.5 s (2 x 0.5 s after the first epoch).
    assert 0 < train_seconds < 1.5 * pause
    assert result.ms_per_step_steady * (result.steps - 4) / 1e3 < pause


def test_measurements_and_final_losses_run_without_tf32(compose_cfg, monkeypatch, tmp_path):
    seen: dict[str, list[bool]] = {"training": [], "sharpness": [], "final": []}

    def flag() -> bool:
        return torch.backends.cuda.matmul.allow_tf32

    step, sharpness, final = (
        RegressionModule.training_step,
        callbacks.top_hessian_eigenvalue,
        callbacks.final_metrics,
    )
    monkeypatch.setattr(
        RegressionModule, "training_step",
        lambda self, *a: (seen["training"].append(flag()), step(self, *a))[1],
    )  # fmt: skip
    monkeypatch.setattr(
        callbacks, "top_hessian_eigenvalue",
        lambda *a, **k: (seen["sharpness"].append(flag()), sharpness(*a, **k))[1],
    )  # fmt: skip
    monkeypatch.setattr(
        callbacks, "final_metrics",
        lambda *a, **k: (seen["final"].append(flag()), final(*a, **k))[1],
    )  # fmt: skip
    before = flag()
    cfg = compose_cfg(*TINY, "trainer.max_epochs=2", "analysis=track",
                      "analysis.sharpness.every_n_epochs=1", "analysis.gains.enabled=false",
                      "performance.tf32=true")  # fmt: skip
    result = train(cfg, output_dir=tmp_path)
    assert result.analysis["lambda_max"] > 0
    assert seen["training"] == [True, True]
    # two tracked, then at the end: at the final weights and after the polish
    assert seen["sharpness"] == [False, False, False, False]
    assert seen["final"] == [False]
    assert flag() == before


def test_free_memory_counts_the_allocators_cache(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 4 * gib)
    assert landscape.free_memory(torch.device("cuda")) == 9 * gib  # 3 free + 6 cached


def test_auto_chunk_sets_the_lanczos_basis_aside():
    model = MLP(10, 10, 2)  # 220 parameters
    sample = torch.zeros(1, 10)
    per_sample = landscape.HVP_MEMORY_FACTOR * landscape.activations_per_sample(model, sample) * 4
    free = 1000 * per_sample
    assert auto_chunk_size(model, sample, 10**6, free_bytes=free) == 500
    assert auto_chunk_size(model, sample, 10**6, free_bytes=free, memory_share=0.25) == 250
    basis = 400 * per_sample
    assert auto_chunk_size(model, sample, 10**6, free_bytes=free, reserve_bytes=basis) == 300
    assert auto_chunk_size(model, sample, 10**6, free_bytes=free, reserve_bytes=2 * free) == 1
    with pytest.raises(ValueError, match="memory_share"):
        auto_chunk_size(model, sample, 10, free_bytes=free, memory_share=0)
    # the basis of lanczos_torch: min(parameters, max_hvps + 1) vectors of 220 entries
    assert hessian.lanczos_basis_bytes(model, torch.float32, 400) == 220 * 220 * 4
    assert hessian.lanczos_basis_bytes(model, torch.float64, 9) == 10 * 220 * 8


def test_sharpness_reserves_the_basis_only_for_lanczos_torch(monkeypatch):
    reserved = []

    class Recording(LossLandscape):
        def __init__(self, *args, reserve_bytes=0, **kwargs):
            reserved.append(reserve_bytes)
            super().__init__(*args, reserve_bytes=reserve_bytes, **kwargs)

    monkeypatch.setattr(hessian, "LossLandscape", Recording)
    model = MLP(6, 6, 2, activation="linear")
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    for method in ("lanczos_torch", "lanczos"):
        top_hessian_eigenvalue(model, F.mse_loss, x, x, method=method, chunk_size="auto",
                               max_hvps=30)  # fmt: skip
    assert reserved == [hessian.lanczos_basis_bytes(model, None, 30), 0]


def _weak_training_state(monkeypatch):
    """Weak references to each module's step runner and optimizer, taken at fit start."""
    refs = []
    start = RegressionModule.on_train_start

    def record(self):
        refs.append((weakref.ref(self._runner), weakref.ref(self._optimizer)))
        return start(self)

    monkeypatch.setattr(RegressionModule, "on_train_start", record, raising=False)
    return refs


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
def test_training_state_is_released_without_the_garbage_collector(
    compose_cfg, monkeypatch, tmp_path, batched
):
    refs = _weak_training_state(monkeypatch)
    cfgs = [compose_cfg(*TINY, "trainer.max_epochs=2", f"seed={s}") for s in (0, 1)]
    gc.collect()
    gc.disable()  # what is freed must be freed by reference counting alone
    try:
        if batched:
            train_batched(cfgs, [tmp_path / "a", tmp_path / "b"])
        else:
            train(cfgs[0], output_dir=tmp_path)
        assert refs and all(runner() is None and optimizer() is None for runner, optimizer in refs)
    finally:
        gc.enable()


def test_batch_order_is_drawn_on_the_cpu(compose_cfg, monkeypatch, tmp_path):
    """The order comes from a CPU generator seeded with the run's seed (the same batches on
    every device): identical to torch.randperm with such a generator."""
    drawn = []
    real = torch.randperm

    def spy(n, *args, generator=None, **kwargs):
        drawn.append(generator.device.type if generator is not None else None)
        return real(n, *args, generator=generator, **kwargs)

    monkeypatch.setattr(torch, "randperm", spy)
    cfg = compose_cfg(*TINY, "trainer.max_epochs=2", "seed=3")
    train(cfg, output_dir=tmp_path)
    assert drawn == ["cpu", "cpu"]


def test_members_of_a_batch_wait_on_the_host(compose_cfg, tmp_path):
    cfgs = [compose_cfg(*TINY, "trainer.max_epochs=1", f"seed={s}") for s in (0, 1)]
    data = load_dataset(validate(cfgs[0])["dataset"])
    results = train_batched(cfgs, [tmp_path / "a", tmp_path / "b"], data=data)
    assert [r.status for r in results] == ["budget_exhausted"] * 2
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=False)["state_dict"]
    assert all(t.device.type == "cpu" for t in saved.values())


def test_gpu_suite_fits_six_minutes_with_the_cuda_tests_first():
    script = (REPO / "benchmarks" / "gpu_suite.sh").read_text()
    steps = re.findall(r"^step (\w+) (\d+) ", script, flags=re.M)
    assert steps[0][0] == "cuda_tests"
    assert sum(int(limit) for _, limit in steps) <= 360
    for name in ("train_throughput", "hessian", "hessian_spectrum"):
        assert f'--json "$OUT/{name}.json"' in script and f'--markdown "$OUT/{name}.md"' in script


def test_pasting_gpu_results_replaces_the_previous_section(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "paste_gpu_results", REPO / "benchmarks" / "paste_gpu_results.py"
    )
    paste = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paste)
    results = tmp_path / "out"
    results.mkdir()
    (results / "gpu.txt").write_text("NVIDIA H200, 143771 MiB, 570.00\ntorch 2.14.1\n")
    (results / "cuda_tests.xml").write_text(
        '<testsuites><testsuite><testcase classname="t" name="ok"/>'
        '<testcase classname="t" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="t" name="gpu"><skipped/></testcase></testsuite></testsuites>'
    )
    (results / "train_throughput.md").write_text("| m | ms |\n|---|---|\n| 2 | 0.1 |\n")
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nCPU figures.\n")
    assert paste.main([str(results), "--benchmarks", str(benchmarks)]) == 0
    assert paste.main([str(results), "--benchmarks", str(benchmarks)]) == 0  # a rerun
    text = benchmarks.read_text()
    assert text.startswith("# Benchmarks\n\nCPU figures.\n")
    assert text.count(paste.START) == 1 and text.count("| 2 | 0.1 |") == 1
    assert "NVIDIA H200" in text and "1 passed, 1 failed, 1 skipped" in text
    assert "- failed: `t::bad`" in text and "(no table: see the step's log)" in text
