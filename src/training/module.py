"""The Lightning module that trains one regression/denoising net, or several as one batched model.

Batches are drawn by index from device-resident tensors (no DataLoader over samples, no
per-sample transforms). One Lightning training step is one epoch of optimizer steps, run by a
`StepRunner` (a CUDA graph replay per step on a GPU): Lightning's per-batch machinery would
otherwise cost more than the step itself. Losses are summed on the device and read once per
epoch, where each run's stopping rule is applied: no host-device synchronisation per step.

A run trained alone and the members of a batched model (src.training.batched) go through the
same loop; only the network (an `MLP`, or a `BatchedMLP` of K members) and the optimizer differ.
Every member keeps its own `RunRecord`. A member whose stopping rule has decided is copied out
and dropped from the batch at that epoch's end, like a run trained alone that stops there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from src.analysis.hessian import full_loss
from src.domain.data import TensorData, reference_losses, resample_noise
from src.domain.models import MLP
from src.runtime import tracking
from src.training.batched import BatchedMLP
from src.training.optim import SAM, make_batched_optimizer, make_optimizer
from src.training.record import RunRecord
from src.training.steps import StepRunner, use_capture


def epoch_metrics(epoch: int, train_loss: float, val_loss: float | None) -> dict[str, float]:
    """One epoch's losses as MLflow metrics (the validation loss only where it was computed)."""
    metrics = {"train_loss": train_loss, "epoch": epoch}
    if val_loss is not None:
        metrics["val_loss"] = val_loss
    return metrics


def log_epoch_losses(
    logger, epoch: int, train_loss: float, val_loss: float | None, step: int
) -> None:
    """One epoch's losses as MLflow metrics, at step = optimizer steps so far."""
    if logger:
        logger.log_metrics(epoch_metrics(epoch, train_loss, val_loss), step=step)


def log_history(logger, record: RunRecord) -> None:
    """Log a finished run's epoch losses afterwards (a batched member has no logger while it
    trains), every `callbacks.log_every_n_epochs` epochs and at the last one, as a run alone."""
    every = max(1, int(record.resolved["callbacks"].get("log_every_n_epochs", 1)))
    history = record.history
    rows = list(zip(history["train_loss"], history["val_loss"], history["step"]))
    tracking.log_metric_series(
        logger,
        [
            (epoch_metrics(epoch, train, val), step)
            for epoch, (train, val, step) in enumerate(rows)
            if (epoch + 1) % every == 0 or epoch + 1 == len(rows)
        ],
    )


def dead_unit_fractions(model: MLP, inputs: torch.Tensor, chunk: int = 10_000) -> list[float]:
    """Per hidden layer, the fraction of ReLU units that are zero on every training input: a
    dead unit passes nothing and gets no gradient, so a layer that lost most of its units has
    collapsed the net towards the trivial solution (empty list for linear nets)."""
    if model.activation != "relu" or model.depth < 2:
        return []
    alive = [torch.zeros(w, dtype=torch.bool, device=inputs.device) for w in model.sizes[1:-1]]
    with torch.no_grad():
        for x in torch.split(inputs, chunk):
            for k, h in enumerate(model.layer_outputs(x)[:-1]):
                alive[k] |= (h > 0).any(dim=0)
    return [1.0 - float(a.float().mean()) for a in alive]


def final_metrics(model: MLP, data: TensorData, record: RunRecord, chunk: int = 10_000) -> dict:
    """Full-data train/val loss at the final weights, the references they are judged against,
    the final gradient norm, dead units, and the run's statistics."""
    train_loss = float(full_loss(model, F.mse_loss, data.train_inputs, data.train_targets, chunk))
    stopping = record.stopping
    affine = stopping.affine_loss
    metrics = {
        "final_train_loss": train_loss,
        "final_val_loss": float(
            full_loss(model, F.mse_loss, data.val_inputs, data.val_targets, chunk)
        ),
        "initial_train_loss": float(record.initial_train_loss),
        "initial_grad_norm": float(record.initial_grad_norm or math.nan),
        "baseline_loss": float(stopping.baseline_loss),
        "epochs": float(stopping.epochs),
        "steps": float(record.steps),
        "train_seconds": record.train_seconds,
        "ms_per_step": 1e3 * record.train_seconds / max(record.steps, 1),
        "ms_per_step_steady": record.steady_ms_per_step(),
        "cuda_graph": float(record.captured),
        "diverged": float(stopping.outcome == "diverged"),
    }
    if affine is not None:
        metrics["affine_baseline_loss"] = float(affine)
        metrics["loss_vs_affine"] = train_loss / affine if affine > 0 else math.inf
    if stopping.grad_norm is not None:
        metrics["grad_norm"] = float(stopping.grad_norm)
        if record.initial_grad_norm:
            metrics["grad_norm_ratio"] = float(stopping.grad_norm) / record.initial_grad_norm
    # (meaningless for a diverged net: its non-finite activations are no units at all)
    dead = (
        []
        if stopping.outcome == "diverged"
        else dead_unit_fractions(model, data.train_inputs, chunk)
    )
    metrics.update({f"dead_units_layer_{k + 1}": value for k, value in enumerate(dead)})
    return metrics


class RegressionModule(pl.LightningModule):
    """Trains `models` on `data` with mean squared error (mean over outputs and samples), each
    with the optimizer and stopping rule of its record; K > 1 models train as one batched model
    (they must share the architecture, optimizer kind and batch size: see `batch_key`)."""

    def __init__(
        self,
        models: Sequence[MLP],
        records: Sequence[RunRecord],
        data: TensorData,
        eval_chunk_size: int = 10_000,
    ) -> None:
        super().__init__()
        if len(models) != len(records) or not models:
            raise ValueError("one record per model, and at least one model")
        self.automatic_optimization = False
        self.models = list(models)  # each member's own net (the batched net's weights go there)
        self.records = list(records)
        self.data = data
        first = records[0].resolved
        self.optimizer_cfg = dict(first["optimizer"])
        self.batch_size = int(first["batch_size"])
        self.cuda_graph = first["performance"]["cuda_graph"]
        self.resample_noise = bool(first["dataset"].get("resample_noise", False))
        self.log_every_n_epochs = max(1, int(first["callbacks"].get("log_every_n_epochs", 1)))
        self.eval_chunk_size = eval_chunk_size
        self.batched = len(models) > 1
        self.net = BatchedMLP(models) if self.batched else models[0]
        self.active = list(range(len(models)))  # member index of each batch slot
        for record in self.records:
            record.batched_with = len(models)

    # ---- data ------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.n_train / self.batch_size)

    def setup(self, stage: str) -> None:
        self._host_data = self.data
        self.data = self.data.to(self.device)
        # A batched model's members wait on the host: the batch holds their weights while it
        # trains, and each is moved to the device only for its own analysis (src.training.run).
        # Batch orders (and re-sampled noise) come from CPU generators, so a seed gives the same
        # batches on every device; the order is copied to the device once per epoch.
        self._generators = [torch.Generator().manual_seed(r.seed) for r in self.records]
        # Static tensors read by the (possibly captured) step: see src.training.steps.
        k, n = len(self.records), self.data.n_train
        self._order = torch.zeros(k, n, dtype=torch.long, device=self.device)
        self._counter = torch.zeros((), dtype=torch.long, device=self.device)
        self._offsets = torch.arange(self.batch_size, device=self.device)
        self._loss_sum = torch.zeros(k, device=self.device, dtype=self.data.train_targets.dtype)

    def train_dataloader(self):
        # One item per epoch: the epoch's steps run inside one training_step.
        return torch.utils.data.DataLoader(range(1), batch_size=None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a Python int: nothing to copy

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        self._capture = use_capture(self.cuda_graph, self.device)
        if self.batched:
            lrs = torch.tensor([r.lr for r in self.records], device=self.device)
            self._optimizer = make_batched_optimizer(self.net.parameters(), self.optimizer_cfg, lrs)
        else:
            self._optimizer = make_optimizer(
                self.net.parameters(), self.optimizer_cfg, capturable=self._capture
            )
        self._runner = StepRunner(
            self._static_step,
            self._zero_grad,
            capture=self._capture,
            required=self.cuda_graph == "true",
        )
        return self._optimizer

    def _zero_grad(self) -> None:
        self._optimizer.zero_grad(set_to_none=True)

    def _member_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each active member's mean squared error on its batch: shape (K,)."""
        if not self.batched:
            return F.mse_loss(self.net(x), y).reshape(1)
        k = len(self.active)
        x, y = x.view(k, -1, x.shape[-1]), y.view(k, -1, y.shape[-1])
        return (self.net(x) - y).pow(2).mean(dim=(1, 2))  # each member's F.mse_loss

    def _step_on(self, positions: torch.Tensor) -> None:
        """One optimizer step of every active member on the samples at `positions` of its own
        order for this epoch."""
        idx = self._order.index_select(1, positions).reshape(-1)
        x = self.data.train_inputs.index_select(0, idx)
        y = self.data.train_targets.index_select(0, idx)
        if isinstance(self._optimizer, SAM):  # two passes on the batch; the loss is at w
            losses = self._optimizer.step(lambda: self._member_losses(x, y))
        else:
            losses = self._member_losses(x, y)
            losses.sum().backward()  # member k's gradient is that of its own loss
            self._optimizer.step()
        self._loss_sum += losses.detach() * positions.numel()

    def _static_step(self) -> None:
        """The step a CUDA graph replays: batch positions from the on-device counter."""
        self._step_on(self._offsets + self._counter * self.batch_size)
        self._counter += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ---- losses on the full sets -----------------------------------------------------------
    @torch.no_grad()
    def _full_losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
        """Each active member's loss on a whole set."""
        if not self.batched:
            return [float(full_loss(self.net, F.mse_loss, inputs, targets, self.eval_chunk_size))]
        k = len(self.active)
        total = torch.zeros(k, device=self.device, dtype=torch.float64)
        chunk = self.eval_chunk_size
        for x, y in zip(torch.split(inputs, chunk), torch.split(targets, chunk)):
            pred = self.net(x.unsqueeze(0).expand(k, -1, -1))
            total += (pred - y).pow(2).mean(dim=(1, 2)).double() * (len(x) / len(inputs))
        return total.tolist()

    # ---- training loop ---------------------------------------------------------------------
    def on_fit_start(self) -> None:
        bias = bool(self.records[0].resolved["model"].get("bias", True))
        references = reference_losses(self._host_data, bias)
        initial = self._full_losses(self.data.train_inputs, self.data.train_targets)
        grad_norms = self._full_gradient_norms()
        for slot, record in enumerate(self.records):
            record.initial_train_loss = initial[slot]
            record.initial_grad_norm = grad_norms[slot]
            record.stopping.start(
                initial[slot],
                references["baseline_loss"],
                initial_grad_norm=grad_norms[slot],
                affine_loss=references["affine_baseline_loss"],
            )
        self._retire_decided()

    def _full_gradient_norms(self) -> list[float]:
        """Each active member's full-batch gradient norm (of its own training loss) at its
        current weights; `param.grad` is not touched, so a captured step is unaffected."""
        inputs, targets = self.data.train_inputs, self.data.train_targets
        params = [p for p in self.net.parameters()]
        k = len(self.active) if self.batched else 1
        squares = torch.zeros(k, device=self.device, dtype=torch.float64)
        grads = [torch.zeros_like(p) for p in params]
        chunk = self.eval_chunk_size
        with torch.enable_grad():
            for x, y in zip(torch.split(inputs, chunk), torch.split(targets, chunk)):
                if self.batched:
                    pred = self.net(x.unsqueeze(0).expand(k, -1, -1))
                    loss = (pred - y).pow(2).mean(dim=(1, 2)).sum()
                else:
                    loss = F.mse_loss(self.net(x), y)
                parts = torch.autograd.grad(loss * (len(x) / len(inputs)), params)
                for total, part in zip(grads, parts):
                    total += part
        for g in grads:  # a batched parameter is (K, ...): member k's gradient is g[k]
            squares += g.reshape(k, -1).double().pow(2).sum(dim=1)
        return squares.sqrt().tolist()

    def on_train_epoch_start(self) -> None:
        self._epoch_t0 = time.perf_counter()
        if self.resample_noise and self.current_epoch > 0:  # never batched (see batchable)
            resample_noise(self.data, self._generators[0])  # in place: a graph keeps its address
        n = self.data.n_train
        for slot, index in enumerate(self.active):
            self._order[slot].copy_(torch.randperm(n, generator=self._generators[index]))
        self._counter.zero_()
        self._loss_sum.zero_()
        self._epoch_samples = 0

    def training_step(self, batch: int, batch_idx: int) -> None:
        if not self.active:  # every run decided before this epoch (e.g. a non-finite start)
            return
        n, size = self.data.n_train, self.batch_size
        budget = self.steps_per_epoch
        steps_so_far = self.records[self.active[0]].steps
        max_steps = self.trainer.max_steps
        if max_steps is not None and max_steps >= 0:  # never batched (see batchable)
            budget = min(budget, max_steps - steps_so_far)
        full = min(n // size, budget)
        self._runner.run(full)
        self._epoch_samples += full * size
        if budget > full and n % size:  # the last, smaller batch: eager
            self._zero_grad()
            self._step_on(torch.arange(full * size, n, device=self.device))
            self._epoch_samples += n - full * size
            full += 1
        captured = self._runner.graph is not None
        for index in self.active:
            self.records[index].steps += full
            self.records[index].captured = captured
        if max_steps is not None and 0 <= max_steps <= steps_so_far + full:
            self.trainer.should_stop = True
        # The one host-device synchronisation of the epoch. The epoch's time is taken here,
        # before any callback's on_train_epoch_end (tracked sharpness, logging) and before the
        # validation loss: it is the time of the optimizer steps alone.
        self._epoch_train_losses = (self._loss_sum / max(self._epoch_samples, 1)).tolist()
        self._epoch_seconds = time.perf_counter() - self._epoch_t0

    def on_train_epoch_end(self) -> None:
        if not self.active:
            return
        train, seconds = self._epoch_train_losses, self._epoch_seconds
        epoch = self.current_epoch + 1
        computed: dict[str, list[float]] = {}

        def grad_norms() -> list[float]:  # once per epoch, only if some member's loss stalled
            if "grad" not in computed:
                computed["grad"] = self._full_gradient_norms()
            return computed["grad"]

        def val_losses() -> list[float]:
            # A full pass over the validation set costs ~45% of an epoch's steps at the cpu
            # profile's width: only the epochs that log or end a run compute it (issue 23).
            if "val" not in computed:
                computed["val"] = self._full_losses(self.data.val_inputs, self.data.val_targets)
            return computed["val"]

        logs = epoch % self.log_every_n_epochs == 0 or epoch >= (self.trainer.max_epochs or 0)
        for slot, index in enumerate(self.active):
            record = self.records[index]
            record.history["train_loss"].append(train[slot])
            record.history["step"].append(record.steps)
            record.epoch_seconds.append(seconds / len(self.active))
            stopping = record.stopping.update(train[slot], lambda slot=slot: grad_norms()[slot])
            val = val_losses()[slot] if logs or stopping is not None else None
            record.history["val_loss"].append(val)
            if val is not None:
                log_epoch_losses(self.logger, self.current_epoch, train[slot], val, record.steps)
        self._retire_decided()

    def on_train_end(self) -> None:
        if self.batched:  # members still training when max_epochs stopped them
            for slot, index in enumerate(self.active):
                self.models[index].load_state_dict(self.net.member_state(slot))

    def release(self) -> None:
        """Drop what training held on the device once the runs are finished: the step runner
        (its CUDA graph, and the bound methods that tie it to this module in a reference
        cycle), the optimizer (Lightning's reference too), the static step tensors, the
        batched net and the device copy of the data. A grid trains many runs in one process:
        nothing of a finished run should wait for the garbage collector."""
        self._runner = None
        self._optimizer = None
        if self._trainer is not None:
            self._trainer.strategy.optimizers = []
        self._order = self._counter = self._offsets = self._loss_sum = None
        if self.batched:
            self.net = None
        self.data = getattr(self, "_host_data", self.data)

    def _retire_decided(self) -> None:
        """Stop training the members whose stopping rule has decided: a batched member's
        weights are copied out and the batch shrinks; training stops when none is left."""
        keep = [slot for slot, index in enumerate(self.active) if not self.records[index].decided]
        if len(keep) == len(self.active):
            return
        if self.batched:
            for slot, index in enumerate(self.active):
                if slot not in keep:
                    self.models[index].load_state_dict(self.net.member_state(slot))
        self.active = [self.active[slot] for slot in keep]
        if not keep:
            self.trainer.should_stop = True
            return
        slots = torch.tensor(keep, device=self.device)
        self.net.keep(slots)
        self._optimizer = self._optimizer.moved_to(list(self.net.parameters()), slots)
        # Lightning keeps the optimizer configure_optimizers returned: point it at the new one,
        # or the old one (every member's parameters and state) stays alive until the end.
        self.trainer.strategy.optimizers = [self._optimizer]
        self._order = self._order.index_select(0, slots)
        self._loss_sum = self._loss_sum.index_select(0, slots)
        self._runner.reset()  # new shapes: record a new graph
