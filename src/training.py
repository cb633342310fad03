"""Lightning module that trains a regression/denoising net on tensors held on the device.

Batches are drawn by index from device-resident tensors (no DataLoader over samples, no
per-sample transforms). The train "dataloader" yields one item per epoch. Losses are summed on
the device and read once per epoch, so there is no host-device synchronisation per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from src.analysis.hessian import full_loss
from src.data import TensorData, resample_noise
from src.steps import StepRunner, resolve_capture

STATUSES = ("converged", "not_converged", "diverged")


@dataclass
class ConvergenceCriterion:
    """Decides a run's status from its epoch training losses.

    converged: relative change of the epoch loss below `tol` for `patience` consecutive epochs
        (and at least `min_epochs` epochs), at a loss below `max_loss_ratio` x the baseline loss
        (that of predicting the mean target). A net whose ReLUs all died plateaus at the
        baseline: that plateau is not a converged run, and training goes on (He-init nets can
        leave such a plateau late, Fig. 5b);
    diverged: non-finite loss, or loss above `divergence_factor` x the initial loss;
    not_converged: neither, when training stops (max_epochs).
    """

    tol: float = 1e-4
    patience: int = 5
    min_epochs: int = 1
    divergence_factor: float = 100.0
    max_loss_ratio: float | None = 0.9
    initial_loss: float | None = None
    baseline_loss: float | None = None
    status: str | None = None
    reason: str = "max_epochs"
    epochs: int = 0
    _previous: float | None = field(default=None, repr=False)
    _streak: int = field(default=0, repr=False)

    def is_divergent(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        return self.initial_loss is not None and loss > self.divergence_factor * self.initial_loss

    def update(self, loss: float) -> str | None:
        """Feed one epoch's loss; return the status once decided, else None."""
        self.epochs += 1
        if self.is_divergent(loss):
            self.status = "diverged"
            self.reason = (
                "non_finite_loss" if not math.isfinite(loss) else "loss_above_divergence_factor"
            )
            return self.status
        if self._previous is not None:
            change = abs(self._previous - loss) / max(abs(self._previous), 1e-30)
            self._streak = self._streak + 1 if change < self.tol else 0
            if self._streak >= self.patience and self.epochs >= self.min_epochs:
                if self.is_trivial(loss):
                    self._streak = 0  # a collapsed plateau: keep training
                    self.reason = "plateau_at_baseline"
                else:
                    self.status, self.reason = "converged", "plateau"
        self._previous = loss
        return self.status

    def mark_unstable(self, lr_times_lambda: float, limit: float) -> None:
        """A plateau reached with lr x lambda_max above the stability limit is not a converged
        run: GD/SGD cannot stay at a minimum that sharp (App. I), so it is oscillating."""
        if self.status == "converged" and lr_times_lambda > limit:
            self.status, self.reason = None, "linearly_unstable_plateau"

    def is_trivial(self, loss: float) -> bool:
        if self.max_loss_ratio is None or self.baseline_loss is None:
            return False
        return loss >= self.max_loss_ratio * self.baseline_loss

    @property
    def final_status(self) -> str:
        return self.status or "not_converged"


def log_epoch_losses(logger, epoch: int, train_loss: float, val_loss: float, step: int) -> None:
    """One epoch's losses as MLflow metrics, at step = optimizer steps so far."""
    if logger:
        logger.log_metrics(
            {"train_loss": train_loss, "val_loss": val_loss, "epoch": epoch}, step=step
        )


def make_optimizer(params, cfg: dict, capturable: bool = False) -> torch.optim.Optimizer:
    """torch.optim.SGD / Adam from an `optimizer` config. `capturable` keeps Adam's step count
    on the device, which a CUDA graph needs (SGD has no step count)."""
    if cfg["name"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg.get("momentum", 0.0),
            weight_decay=cfg.get("weight_decay", 0.0),
        )
    if cfg["name"] == "adam":
        return torch.optim.Adam(
            params,
            lr=cfg["lr"],
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
            eps=cfg.get("eps", 1e-8),
            weight_decay=cfg.get("weight_decay", 0.0),
            capturable=capturable,
        )
    raise ValueError(f"optimizer.name: unknown optimizer {cfg['name']!r}")


class RegressionModule(pl.LightningModule):
    """Trains `model` on `data` with mean squared error (mean over outputs and samples).

    One Lightning training step is one epoch of optimizer steps, run by a `StepRunner` (a CUDA
    graph replay per step on a GPU): Lightning's per-batch machinery would otherwise cost more
    than the step itself. The epoch's losses are summed on the device and read once, at the end
    of the epoch, where convergence and divergence are decided. Steps are counted in
    `self.steps` (Lightning's global_step does not see them), and `trainer.max_steps` is honoured.
    """

    def __init__(
        self,
        model: nn.Module,
        data: TensorData,
        optimizer: dict,
        batch_size: int,
        seed: int,
        criterion: ConvergenceCriterion,
        resample_noise: bool = False,
        eval_chunk_size: int = 10_000,
        log_every_n_epochs: int = 1,
        cuda_graph: str = "auto",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.data = data
        self.optimizer_cfg = dict(optimizer)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.criterion = criterion
        self.resample_noise = resample_noise
        self.eval_chunk_size = eval_chunk_size
        self.log_every_n_epochs = max(1, int(log_every_n_epochs))
        self.cuda_graph = cuda_graph
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "step": []}
        self.epoch_seconds: list[float] = []
        self.initial_train_loss: float | None = None
        self.train_seconds = 0.0
        self.steps = 0
        self.captured = False
        self._final: dict[str, float] | None = None

    # ---- data ------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.n_train / self.batch_size)

    def setup(self, stage: str) -> None:
        self.data = self.data.to(self.device)
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        # Static tensors read by the (possibly captured) step: see src.steps.
        n = self.data.n_train
        self._order = torch.zeros(n, dtype=torch.long, device=self.device)
        self._counter = torch.zeros((), dtype=torch.long, device=self.device)
        self._offsets = torch.arange(self.batch_size, device=self.device)
        self._loss_sum = torch.zeros((), device=self.device, dtype=self.data.train_targets.dtype)

    def train_dataloader(self):
        # One item per epoch: the epoch's steps run inside one training_step.
        return torch.utils.data.DataLoader(range(1), batch_size=None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a Python int: nothing to copy

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        self._capture = resolve_capture(self.cuda_graph, self.device)
        self._optimizer = make_optimizer(
            self.model.parameters(), self.optimizer_cfg, capturable=self._capture
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

    def _step_on(self, positions: torch.Tensor) -> None:
        """One SGD/Adam step on the samples at `positions` of this epoch's order."""
        idx = self._order.index_select(0, positions)
        x = self.data.train_inputs.index_select(0, idx)
        y = self.data.train_targets.index_select(0, idx)
        loss = F.mse_loss(self.model(x), y)
        loss.backward()
        self._optimizer.step()
        self._loss_sum += loss.detach() * positions.numel()

    def _static_step(self) -> None:
        """The step a CUDA graph replays: batch positions from the on-device counter."""
        self._step_on(self._offsets + self._counter * self.batch_size)
        self._counter += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def train_loss(self) -> float:
        return float(
            full_loss(
                self.model,
                F.mse_loss,
                self.data.train_inputs,
                self.data.train_targets,
                self.eval_chunk_size,
            )
        )

    def val_loss(self) -> float:
        return float(
            full_loss(
                self.model,
                F.mse_loss,
                self.data.val_inputs,
                self.data.val_targets,
                self.eval_chunk_size,
            )
        )

    def on_fit_start(self) -> None:
        self.initial_train_loss = self.train_loss()
        self.criterion.initial_loss = self.initial_train_loss
        targets = self.data.train_targets
        self.criterion.baseline_loss = float(((targets - targets.mean(0)) ** 2).mean())
        if self.criterion.is_divergent(self.initial_train_loss):
            self.criterion.status, self.criterion.reason = "diverged", "non_finite_initial_loss"
            self.trainer.should_stop = True

    def on_train_start(self) -> None:
        self._t0 = self._epoch_t0 = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        if self.resample_noise and self.current_epoch > 0:
            resample_noise(self.data, self._generator)  # in place: a graph keeps its address
        n = self.data.n_train
        self._order.copy_(torch.randperm(n, generator=self._generator, device=self.device))
        self._counter.zero_()
        self._loss_sum.zero_()
        self._epoch_samples = 0

    def training_step(self, batch: int, batch_idx: int) -> None:
        n, size = self.data.n_train, self.batch_size
        budget = self.steps_per_epoch
        if self.trainer.max_steps is not None and self.trainer.max_steps >= 0:
            budget = min(budget, self.trainer.max_steps - self.steps)
        full = min(n // size, budget)
        self._runner.run(full)
        self._epoch_samples += full * size
        if budget > full and n % size:  # the last, smaller batch: eager
            self._zero_grad()
            self._step_on(torch.arange(full * size, n, device=self.device))
            self._epoch_samples += n - full * size
            full += 1
        self.steps += full
        self.captured = self._runner.graph is not None
        if self.trainer.max_steps is not None and 0 <= self.trainer.max_steps <= self.steps:
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        # The one host-device synchronisation of the epoch.
        train_loss = (self._loss_sum / max(self._epoch_samples, 1)).item()
        now = time.perf_counter()
        self.epoch_seconds.append(now - self._epoch_t0)
        val_loss = self.val_loss()
        self.history["train_loss"].append(train_loss)
        self.history["val_loss"].append(val_loss)
        self.history["step"].append(self.steps)
        stopping = self.criterion.update(train_loss) is not None
        if stopping or (self.current_epoch + 1) % self.log_every_n_epochs == 0:
            log_epoch_losses(self.logger, self.current_epoch, train_loss, val_loss, self.steps)
        if stopping:
            self.trainer.should_stop = True
        self._epoch_t0 = time.perf_counter()

    def on_train_end(self) -> None:
        self.train_seconds = time.perf_counter() - getattr(self, "_t0", time.perf_counter())

    # ---- results -----------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.criterion.final_status

    def final_metrics(self) -> dict[str, float]:
        """Full-data train/val loss at the final weights, and run statistics (cached)."""
        if self._final is None:
            self._final = {
                "final_train_loss": self.train_loss(),
                "final_val_loss": self.val_loss(),
                "initial_train_loss": float(self.initial_train_loss),
                "baseline_loss": float(self.criterion.baseline_loss),
                "epochs": float(self.criterion.epochs),
                "steps": float(self.steps),
                "train_seconds": self.train_seconds,
                "ms_per_step": 1e3 * self.train_seconds / max(self.steps, 1),
                "ms_per_step_steady": self.steady_ms_per_step(),
                "cuda_graph": float(self.captured),
                "diverged": float(self.status == "diverged"),
            }
        return self._final

    def steady_ms_per_step(self) -> float:
        """Milliseconds per optimizer step after the first epoch (which pays for warm-up and
        graph capture), epoch-end evaluation excluded; over all epochs if there is only one."""
        seconds, steps = self.epoch_seconds, self.history["step"]
        if len(seconds) > 1:
            return 1e3 * sum(seconds[1:]) / max(steps[-1] - steps[0], 1)
        return 1e3 * sum(seconds) / max(self.steps, 1)
