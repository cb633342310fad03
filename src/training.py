"""Lightning module that trains a regression/denoising net on tensors held on the device.

Batches are drawn by index from device-resident tensors (no DataLoader over samples, no
per-sample transforms). The train "dataloader" yields only step numbers. Losses are summed on
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


class RegressionModule(pl.LightningModule):
    """Trains `model` on `data` with mean squared error (mean over outputs and samples)."""

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
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        self.initial_train_loss: float | None = None
        self.train_seconds = 0.0
        self.steps = 0
        self._final: dict[str, float] | None = None

    # ---- data ------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.n_train / self.batch_size)

    def setup(self, stage: str) -> None:
        self.data = self.data.to(self.device)
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def train_dataloader(self):
        # Only step numbers travel through the loader; the samples stay on the device.
        return torch.utils.data.DataLoader(range(self.steps_per_epoch), batch_size=None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a Python int: nothing to copy

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        params = self.model.parameters()
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
            )
        raise ValueError(f"optimizer.name: unknown optimizer {cfg['name']!r}")

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
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        if self.resample_noise and self.current_epoch > 0:
            resample_noise(self.data, self._generator)
        self._order = torch.randperm(
            self.data.n_train, generator=self._generator, device=self.device
        )
        self._loss_sum = torch.zeros((), device=self.device)

    def training_step(self, batch: int, batch_idx: int) -> torch.Tensor:
        idx = self._order[batch_idx * self.batch_size : (batch_idx + 1) * self.batch_size]
        x = self.data.train_inputs.index_select(0, idx)
        y = self.data.train_targets.index_select(0, idx)
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(self.model(x), y)
        self.manual_backward(loss)
        opt.step()
        self._loss_sum += loss.detach() * idx.numel()
        self.steps += 1
        return loss

    def on_train_epoch_end(self) -> None:
        train_loss = (self._loss_sum / self.data.n_train).item()  # the one sync per epoch
        val_loss = self.val_loss()
        self.history["train_loss"].append(train_loss)
        self.history["val_loss"].append(val_loss)
        stopping = self.criterion.update(train_loss) is not None
        if stopping or (self.current_epoch + 1) % self.log_every_n_epochs == 0:
            self.log_dict({"train_loss": train_loss, "val_loss": val_loss}, on_epoch=True)
        if stopping:
            self.trainer.should_stop = True

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
                "diverged": float(self.status == "diverged"),
            }
        return self._final
