"""Milliseconds per SGD step of the paper's 784-wide ReLU denoisers, four ways (not a test).

For each depth m it trains, on the same MNIST-shaped data (n_train x 784 pixels in [0, 1],
noise std 1.25, batch 100, plain SGD):

  project        `src.training.run.train(cfg)`: the Lightning Trainer with this project's module
                 (device-resident data, one host sync per epoch, CUDA-graph replay on a GPU)
  project eager  the same with performance.cuda_graph=false
  batched        `src.training.run.train_batched`: --models runs (different step sizes) stepped
                 together in batched matmuls; time per model-step
  stock          a plain LightningModule (automatic optimization, self.log per step) fed by a
                 torch DataLoader over a CPU TensorDataset: the usual Lightning recipe
  raw eager      a hand-written PyTorch loop with the data on the device

Times are steady-state: the first epoch (warm-up, graph capture, allocator) is excluded, and
the epoch-end evaluation of the project's paths is not counted. The table ends with each
path's speed-up over the stock loop.

    python benchmarks/train_throughput.py                          # CPU: small n, m = 2 6
    python benchmarks/train_throughput.py --device cuda --depths 2 6 12 18 --n-train 60000
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytorch_lightning as pl  # noqa: E402

from src.domain.data import TensorData  # noqa: E402
from src.domain.models import MLP, initialize  # noqa: E402
from src.experiments.grid import compose_config  # noqa: E402
from src.training.run import train, train_batched  # noqa: E402

PATHS = ("project", "project_eager", "batched", "stock", "raw_eager")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depths", type=int, nargs="+", default=None)
    parser.add_argument("--width", type=int, default=784, help="input size = hidden width")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=None, help="default 60000 cuda, 1000 cpu")
    parser.add_argument("--epochs", type=int, default=3, help="the first one is not timed")
    parser.add_argument("--models", type=int, default=16, help="members of the batched model")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (GPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--markdown", type=Path, default=None, help="and the table here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.depths = args.depths or ([2, 6, 12, 18] if cuda else [2, 6])
    args.n_train = args.n_train or (60000 if cuda else 1000)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")
    return args


def mnist_shaped(n_train: int, width: int, seed: int = 0) -> TensorData:
    """Pixels uniform in [0, 1] plus N(0, 1.25^2) noise: MNIST's shapes, no download."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(n_train + 1000, width, generator=gen)
    noisy = clean + 1.25 * torch.randn(clean.shape, generator=gen)
    return TensorData(
        name="mnist_shaped",
        train_inputs=noisy[:n_train],
        train_targets=clean[:n_train],
        val_inputs=noisy[n_train:],
        val_targets=clean[n_train:],
        noise_std=1.25,
    )


def project_config(args, depth: int, lr: float, cuda_graph: str, seed: int = 0):
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    return compose_config(
        [
            "dataset=synthetic",  # replaced by the `data` argument; only its name is logged
            f"depth={depth}",
            f"lr={lr}",
            f"seed={seed}",
            f"batch_size={args.batch_size}",
            "init=identity",
            "analysis=off",
            "logger=none",
            f"trainer.accelerator={accelerator}",
            f"trainer.max_epochs={args.epochs}",
            # never stop early: every epoch is timed
            "callbacks.convergence.tol=1e-30",
            "callbacks.divergence.factor=1e30",
            f"performance.cuda_graph={cuda_graph}",
            f"performance.tf32={str(args.tf32).lower()}",
        ]
    )


def time_project(args, data, depth: int, cuda_graph: str) -> float:
    result = train(project_config(args, depth, args.lr, cuda_graph), data=data, output_dir=_tmp())
    return result.ms_per_step_steady


def time_batched(args, data, depth: int) -> float:
    lrs = [args.lr * (1 + 0.05 * k) for k in range(args.models)]
    cfgs = [project_config(args, depth, lr, "auto") for lr in lrs]
    results = train_batched(cfgs, output_dirs=[_tmp() for _ in cfgs], data=data)
    # Each member's steady time is its share of the batch's wall time: the per-model-step cost.
    return results[0].ms_per_step_steady


class StockModule(pl.LightningModule):
    """The usual Lightning recipe: automatic optimization, a loss logged every step."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model = model
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class EpochTimer(pl.Callback):
    """Wall time of each training epoch, the GPU synchronised at its ends."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.seconds.append(time.perf_counter() - self._t0)


def time_stock(args, data, depth: int) -> float:
    model = initialize(MLP(args.width, args.width, depth), "identity")
    dataset = torch.utils.data.TensorDataset(data.train_inputs, data.train_targets)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
    timer = EpochTimer()
    trainer = pl.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(StockModule(model, args.lr), loader)
    steps = math.ceil(len(dataset) / args.batch_size)
    return 1e3 * sum(timer.seconds[1:]) / (steps * (len(timer.seconds) - 1))


def time_raw_eager(args, data, depth: int) -> float:
    device = torch.device(args.device)
    model = initialize(MLP(args.width, args.width, depth), "identity").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    x_all, y_all = data.train_inputs.to(device), data.train_targets.to(device)
    n, size = len(x_all), args.batch_size
    seconds = []
    for _ in range(args.epochs):
        _sync(device)
        start = time.perf_counter()
        order = torch.randperm(n, device=device)
        total = torch.zeros((), device=device)
        for i in range(0, n, size):
            idx = order[i : i + size]
            loss = F.mse_loss(model(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        total.item()
        seconds.append(time.perf_counter() - start)
    return 1e3 * sum(seconds[1:]) / (math.ceil(n / size) * (args.epochs - 1))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


_TMP: list = []


def _tmp() -> str:
    import tempfile

    _TMP.append(tempfile.TemporaryDirectory(prefix="throughput-"))
    return _TMP[-1].name


def gflop_per_step(width: int, depth: int, batch: int) -> float:
    """Forward + backward (input and weight gradients): 3 matmuls of 2 * B * d^2 per layer."""
    return 6 * batch * width * width * depth / 1e9


def main() -> None:
    args = parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    data = mnist_shaped(args.n_train, args.width)
    device_name = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    ) + f", {torch.get_num_threads()} threads, torch {torch.__version__}"
    title = (
        f"{device_name}; width {args.width}, batch {args.batch_size}, n_train {args.n_train}, "
        f"{args.epochs} epochs (first not timed), TF32 {'on' if args.tf32 else 'off'}"
    )
    print(f"# {title}")
    timers = {
        "project": lambda m: time_project(args, data, m, "auto"),
        "project_eager": lambda m: time_project(args, data, m, "false"),
        "batched": lambda m: time_batched(args, data, m),
        "stock": lambda m: time_stock(args, data, m),
        "raw_eager": lambda m: time_raw_eager(args, data, m),
    }
    rows = []
    header = ["m", "GFLOP/step", *(f"{p} ms" for p in args.paths)]
    if "stock" in args.paths:
        header += [f"stock/{p}" for p in args.paths if p != "stock"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    print(*lines, sep="\n")
    for depth in args.depths:
        row = {"depth": depth, "gflop_per_step": gflop_per_step(args.width, depth, args.batch_size)}
        for path in args.paths:
            row[path] = timers[path](depth)
        cells = [str(depth), f"{row['gflop_per_step']:.2f}", *(f"{row[p]:.3f}" for p in args.paths)]
        if "stock" in args.paths:
            cells += [f"{row['stock'] / row[p]:.1f}x" for p in args.paths if p != "stock"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        rows.append(row)
    if args.markdown:
        args.markdown.write_text("\n".join([f"ms per optimizer step: {title}.", "", *lines]) + "\n")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"device": device_name, "args": vars(args), "rows": rows}, indent=1, default=str
            )
        )


if __name__ == "__main__":
    main()
