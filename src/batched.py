"""Several runs of one architecture trained together as one batched model.

The grids of Figs. 4-5 train many nets that differ only in step size or seed. On a GPU one
784-wide step is bound by kernel-launch overhead, so K nets stepped together in batched
matmuls (`torch.baddbmm` over stacked (K, d_out, d_in) weights) cost little more than one.

Each member is trained exactly as `src.train.train` would train it alone, up to float rounding:
the same initial weights (its own seeded generator), its own batch order (its own generator,
one permutation per epoch), the per-member mean squared error, and an optimizer step with its
own step size. Members are independent in the batched matmuls, so a member that diverges
cannot disturb the others; it is taken out of the batch at the end of the epoch where its
status is decided (converged or diverged), like a single run that stops there. Afterwards each
member becomes its own MLflow run, with the analysis (sharpness, gains), checkpoint and result
of a single run. Its `ms_per_step` is the amortized cost: batch wall time per model-step.

Not batchable (trained one by one instead): noise re-sampled every epoch (it would need one
copy of the training set per member) and sharpness tracked during training.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from src import tracking
from src.config import ConfigValueError, check_model_fits_data, validate
from src.data import TensorData, load_dataset
from src.models import MLP
from src.steps import StepRunner, check_capture_possible, matmul_precision, resolve_capture
from src.train import (
    build_callbacks,
    build_criterion,
    build_model,
    log_run_params,
    make_logger,
    resolve_output_dir,
    train_result,
)
from src.training import ConvergenceCriterion, RegressionModule, log_epoch_losses

log = logging.getLogger(__name__)

# What may differ between the members of one batch.
MEMBER_KEYS = ("seed", "lr", "optimizer.lr", "logger.run_name", "output_dir", "results_dir")


class BatchedMLP(nn.Module):
    """K copies of an `MLP` architecture with their own weights: weights[j] is (K, d_j, d_j-1).

    forward maps (K, B, d_in) to (K, B, d_out); member k computes exactly its own MLP.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        super().__init__()
        first = models[0]
        for model in models:
            if model.sizes != first.sizes or model.activation != first.activation:
                raise ValueError("batched members must share one architecture")
        self.sizes = list(first.sizes)
        self.activation = first.activation
        self.has_bias = first.layers[0].bias is not None
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[j].weight.detach() for m in models]))
            for j in range(first.depth)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[j].bias.detach() for m in models]))
            for j in range(first.depth)
            if self.has_bias
        )

    @property
    def num_members(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for j, weight in enumerate(self.weights):
            if self.has_bias:
                x = torch.baddbmm(self.biases[j].unsqueeze(1), x, weight.transpose(1, 2))
            else:
                x = torch.bmm(x, weight.transpose(1, 2))
            if j < last and self.activation == "relu":
                x = torch.relu(x)
        return x

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as an `MLP` state dict."""
        state = {}
        for j, weight in enumerate(self.weights):
            state[f"layers.{j}.weight"] = weight.detach()[k].clone()
            if self.has_bias:
                state[f"layers.{j}.bias"] = self.biases[j].detach()[k].clone()
        return state

    @torch.no_grad()
    def keep(self, members: torch.Tensor) -> None:
        """Keep only the listed members (new, smaller parameters)."""
        for plist in (self.weights, self.biases):
            for j in range(len(plist)):
                plist[j] = nn.Parameter(plist[j].index_select(0, members))


class BatchedOptimizer(torch.optim.Optimizer):
    """SGD (heavy-ball momentum, weight decay) or Adam over stacked parameters, with one step
    size per member: the update of torch.optim.SGD / Adam applied to each member.

    Adam's step count is a device tensor, so the step can be captured in a CUDA graph."""

    def __init__(self, params, cfg: Mapping[str, Any], lrs: torch.Tensor) -> None:
        self.kind = cfg["name"]
        if self.kind not in ("sgd", "adam"):
            raise ValueError(f"optimizer.name: unknown optimizer {self.kind!r}")
        defaults = {
            "momentum": float(cfg.get("momentum", 0.0)),
            "weight_decay": float(cfg.get("weight_decay", 0.0)),
            "betas": tuple(cfg.get("betas", (0.9, 0.999))),
            "eps": float(cfg.get("eps", 1e-8)),
        }
        super().__init__(params, defaults)
        self.lrs = lrs

    def _lr(self, param: torch.Tensor) -> torch.Tensor:
        return self.lrs.view(-1, *([1] * (param.dim() - 1)))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                if self.kind == "sgd":
                    self._sgd(param, grad, group)
                else:
                    self._adam(param, grad, group)

    def _sgd(self, param, grad, group) -> None:
        if group["momentum"]:
            state = self.state[param]
            if "momentum_buffer" not in state:  # torch.optim.SGD: the first buffer is the grad
                state["momentum_buffer"] = grad.clone()
            else:
                state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
            grad = state["momentum_buffer"]
        param.sub_(self._lr(param) * grad)

    def _adam(self, param, grad, group) -> None:
        beta1, beta2 = group["betas"]
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), device=param.device, dtype=param.dtype)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction1 = 1 - torch.pow(beta1, state["step"])
        correction2_sqrt = (1 - torch.pow(beta2, state["step"])).sqrt()
        denom = (state["exp_avg_sq"].sqrt() / correction2_sqrt).add_(group["eps"])
        param.sub_((self._lr(param) / correction1) * state["exp_avg"] / denom)

    def moved_to(self, params: Sequence[torch.Tensor], members: torch.Tensor):
        """A new optimizer over `params` (the kept members' parameters) carrying their state."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        other = BatchedOptimizer(
            list(params), {"name": self.kind, **group}, self.lrs.index_select(0, members)
        )
        for old, new in zip(self.param_groups[0]["params"], params):
            other.state[new] = {
                k: v if v.dim() == 0 else v.index_select(0, members)
                for k, v in self.state.get(old, {}).items()
            }
            if not other.state[new]:
                del other.state[new]
        return other


@dataclass
class Member:
    """One run of the batch: its config, its own model copy and its training record."""

    resolved: dict
    model: MLP
    criterion: ConvergenceCriterion
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train_loss": [], "val_loss": [], "step": []}
    )
    epoch_seconds: list[float] = field(default_factory=list)
    initial_train_loss: float | None = None
    steps: int = 0
    captured: bool = False

    @property
    def seed(self) -> int:
        return int(self.resolved["seed"])

    @property
    def lr(self) -> float:
        return float(self.resolved["optimizer"]["lr"])


class BatchedRegressionModule(pl.LightningModule):
    """Trains the members together; as `RegressionModule`, one training_step is one epoch."""

    def __init__(self, members: list[Member], data: TensorData, eval_chunk_size: int = 10_000):
        super().__init__()
        self.automatic_optimization = False
        self.members = members
        self.data = data
        first = members[0].resolved
        self.optimizer_cfg = dict(first["optimizer"])
        self.batch_size = int(first["batch_size"])
        self.cuda_graph = first["performance"]["cuda_graph"]
        self.eval_chunk_size = eval_chunk_size
        self.net = BatchedMLP([m.model for m in members])
        self.active = list(range(len(members)))  # member index of each batch slot
        self.model_steps = 0  # steps summed over members
        self.train_seconds = 0.0

    def setup(self, stage: str) -> None:
        self.data = self.data.to(self.device)
        for member in self.members:
            member.model.to(self.device)
        self._generators = [
            torch.Generator(device=self.device).manual_seed(m.seed) for m in self.members
        ]
        k, n = len(self.members), self.data.n_train
        self._order = torch.zeros(k, n, dtype=torch.long, device=self.device)
        self._counter = torch.zeros((), dtype=torch.long, device=self.device)
        self._offsets = torch.arange(self.batch_size, device=self.device)
        self._loss_sum = torch.zeros(k, device=self.device, dtype=self.data.train_targets.dtype)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(1), batch_size=None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch

    def configure_optimizers(self):
        lrs = torch.tensor([m.lr for m in self.members], device=self.device)
        self._optimizer = BatchedOptimizer(self.net.parameters(), self.optimizer_cfg, lrs)
        self._capture = resolve_capture(self.cuda_graph, self.device)
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
        k, size = self._order.shape[0], positions.numel()
        idx = self._order.index_select(1, positions).reshape(-1)
        x = self.data.train_inputs.index_select(0, idx).view(k, size, -1)
        y = self.data.train_targets.index_select(0, idx).view(k, size, -1)
        losses = (self.net(x) - y).pow(2).mean(dim=(1, 2))  # each member's F.mse_loss
        losses.sum().backward()  # member k's gradient is that of its own loss
        self._optimizer.step()
        self._loss_sum += losses.detach() * size

    def _static_step(self) -> None:
        self._step_on(self._offsets + self._counter * self.batch_size)
        self._counter += 1

    # ---- per-member losses on the full sets ------------------------------------------------
    @torch.no_grad()
    def _full_losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = len(self.active)
        total = torch.zeros(k, device=self.device, dtype=torch.float64)
        for x, y in zip(
            torch.split(inputs, self.eval_chunk_size), torch.split(targets, self.eval_chunk_size)
        ):
            pred = self.net(x.unsqueeze(0).expand(k, -1, -1))
            total += (pred - y).pow(2).mean(dim=(1, 2)).double() * (len(x) / len(inputs))
        return total

    # ---- training loop ---------------------------------------------------------------------
    def on_fit_start(self) -> None:
        targets = self.data.train_targets
        baseline = float(((targets - targets.mean(0)) ** 2).mean())
        initial = self._full_losses(self.data.train_inputs, targets).tolist()
        for slot, member in enumerate(self.members):
            member.initial_train_loss = initial[slot]
            member.criterion.initial_loss = initial[slot]
            member.criterion.baseline_loss = baseline
            if member.criterion.is_divergent(initial[slot]):
                member.criterion.status = "diverged"
                member.criterion.reason = "non_finite_initial_loss"
        self._retire_finished()

    def on_train_start(self) -> None:
        self._t0 = self._epoch_t0 = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        n = self.data.n_train
        for slot, index in enumerate(self.active):
            order = torch.randperm(n, generator=self._generators[index], device=self.device)
            self._order[slot].copy_(order)
        self._counter.zero_()
        self._loss_sum.zero_()

    def training_step(self, batch: int, batch_idx: int) -> None:
        n, size = self.data.n_train, self.batch_size
        full = n // size
        self._runner.run(full)
        if n % size:
            self._zero_grad()
            self._step_on(torch.arange(full * size, n, device=self.device))
            full += 1
        for index in self.active:
            self.members[index].steps += full
            self.members[index].captured = self._runner.graph is not None
        self.model_steps += full * len(self.active)

    def on_train_epoch_end(self) -> None:
        n = self.data.n_train
        train = (self._loss_sum / n).tolist()  # the one synchronisation of the epoch
        seconds = time.perf_counter() - self._epoch_t0
        val = self._full_losses(self.data.val_inputs, self.data.val_targets).tolist()
        for slot, index in enumerate(self.active):
            member = self.members[index]
            member.history["train_loss"].append(train[slot])
            member.history["val_loss"].append(val[slot])
            member.history["step"].append(member.steps)
            member.epoch_seconds.append(seconds / len(self.active))
            member.criterion.update(train[slot])
        self._retire_finished()
        if not self.active:
            self.trainer.should_stop = True
        self._epoch_t0 = time.perf_counter()

    def on_train_end(self) -> None:
        self.train_seconds = time.perf_counter() - getattr(self, "_t0", time.perf_counter())
        for slot, index in enumerate(self.active):  # stopped by max_epochs
            self.members[index].model.load_state_dict(self.net.member_state(slot))

    def _retire_finished(self) -> None:
        """Copy out the members whose status is decided and drop them from the batch."""
        keep = []
        for slot, index in enumerate(self.active):
            member = self.members[index]
            if member.criterion.status is None:
                keep.append(slot)
            else:
                member.model.load_state_dict(self.net.member_state(slot))
        if len(keep) == len(self.active):
            return
        self.active = [self.active[slot] for slot in keep]
        if not keep:
            return
        slots = torch.tensor(keep, device=self.device)
        self.net.keep(slots)
        self._optimizer = self._optimizer.moved_to(list(self.net.parameters()), slots)
        self._order = self._order.index_select(0, slots)
        self._loss_sum = self._loss_sum.index_select(0, slots)
        self._runner.reset()  # new shapes: record a new graph


def batch_key(resolved: Mapping[str, Any]) -> str:
    """Runs with equal keys can share a batch: everything but MEMBER_KEYS is equal."""
    content = copy.deepcopy(dict(resolved))
    for dotted in MEMBER_KEYS:
        node = content
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part, {})
        if isinstance(node, dict):
            node.pop(leaf, None)
    content.pop("hydra", None)
    return json.dumps(content, sort_keys=True, default=str)


def batchable(resolved: Mapping[str, Any]) -> str | None:
    """Why a run cannot join a batch (None: it can)."""
    if resolved["dataset"].get("resample_noise", False):
        return "dataset.resample_noise"
    analysis = resolved.get("analysis", {})
    if analysis.get("enabled") and analysis["sharpness"].get("every_n_epochs", 0) > 0:
        return "analysis.sharpness.every_n_epochs"
    if resolved["trainer"].get("max_steps", -1) not in (-1, None):
        return "trainer.max_steps"
    if resolved["trainer"].get("fast_dev_run"):
        return "trainer.fast_dev_run"
    return None


def train_batched(
    cfgs: Sequence[Any],
    output_dirs: Sequence[str | Path] | None = None,
    tags: Sequence[Mapping[str, Any] | None] | None = None,
    data: TensorData | None = None,
) -> list:
    """Train the runs `cfgs` (equal `batch_key`) as one batched model; one TrainResult each,
    in order. Raises ConfigValueError if they cannot share a batch."""
    resolved = [validate(cfg) for cfg in cfgs]
    if not resolved:
        return []
    keys = {batch_key(r) for r in resolved}
    if len(keys) > 1:
        raise ConfigValueError("batch", "runs differ in more than seed and lr")
    if (reason := batchable(resolved[0])) is not None:
        raise ConfigValueError(reason, "cannot be trained in a batch")
    data = load_dataset(resolved[0]["dataset"]) if data is None else data
    check_model_fits_data(resolved[0], data.d_in, data.d_out)
    check_capture_possible(resolved[0])
    logger_cfg = resolved[0]["logger"]
    if logger_cfg["name"] == "mlflow":  # fail before training, as train() does
        tracking.check_reachable(tracking.resolve_tracking_uri(logger_cfg["tracking_uri"]))
    output_dirs = list(output_dirs or [None] * len(resolved))
    tags = list(tags or [None] * len(resolved))

    torch.set_flush_denormal(True)
    members = [Member(r, build_model(r, data), build_criterion(r)) for r in resolved]
    module = BatchedRegressionModule(members, data)
    trainer_cfg = dict(resolved[0]["trainer"])
    trainer = pl.Trainer(**trainer_cfg, logger=False, callbacks=[])
    with matmul_precision(resolved[0]["performance"]["tf32"]):
        trainer.fit(module)
    log.info(
        "trained %d models together: %.3f ms per model-step",
        len(members),
        1e3 * module.train_seconds / max(module.model_steps, 1),
    )

    results = []
    with matmul_precision(resolved[0]["performance"]["tf32"]):
        for member, out, tag in zip(members, output_dirs, tags):
            output_dir = resolve_output_dir(member.resolved, out)
            results.append(_record_member(member, module, output_dir, tag))
    return results


def _record_member(
    member: Member, batch: BatchedRegressionModule, output_dir: Path, tags: Mapping | None
):
    """Give a trained member the MLflow run, analysis and checkpoint a single run gets."""
    resolved = member.resolved
    single = RegressionModule(
        member.model,
        batch.data,
        optimizer=resolved["optimizer"],
        batch_size=resolved["batch_size"],
        seed=member.seed,
        criterion=member.criterion,
    )
    single.history = member.history
    single.epoch_seconds = member.epoch_seconds
    single.steps = member.steps
    single.initial_train_loss = member.initial_train_loss
    single.train_seconds = sum(member.epoch_seconds)
    single.captured = member.captured
    tags = {"batched_models": len(batch.members), **(tags or {})}
    logger = make_logger(resolved, batch.data.name, tags)
    recorder, callbacks = build_callbacks(resolved, output_dir)
    try:
        log_run_params(logger, resolved, member.model)
        every = max(1, int(resolved["callbacks"].get("log_every_n_epochs", 1)))
        history = member.history
        for epoch, (train, val, step) in enumerate(
            zip(history["train_loss"], history["val_loss"], history["step"])
        ):
            if (epoch + 1) % every == 0 or epoch + 1 == len(history["step"]):
                log_epoch_losses(logger, epoch, train, val, step)
        for callback in callbacks:  # analysis first, then the recorder (see build_callbacks)
            if hasattr(callback, "analyze"):
                callback.analyze(logger, single)
            else:
                callback.record(logger, single)
    except BaseException:
        if logger is not None:
            logger.finalize("failed")
        raise
    if logger is not None:
        logger.finalize("success")
    return train_result(single, callbacks, recorder, output_dir, logger)
