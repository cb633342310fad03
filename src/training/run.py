"""Train runs from validated configs: `train(cfg)` for one run, `train_batched(cfgs)` for runs
that differ only in seed and step size, trained together as one batched model.

Both build the same parts (model, stopping rule, record, MLflow run, analysis, recorder) and
end each run with the same `finish_run`; a run's result does not depend on which trained it,
up to float rounding (tests/test_fast_paths.py).
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from src.core.signals import Terminated
from src.domain.config import (
    ConfigValueError,
    RunConfig,
    check_model_fits_data,
    flatten,
    validate,
)
from src.domain.data import TensorData, load_dataset
from src.domain.models import MLP, initialize
from src.runtime import tracking
from src.training.batched import batch_key, batchable
from src.training.callbacks import AnalysisCallback, RunFinisher, RunRecorder, finish_run
from src.training.module import RegressionModule, log_history
from src.training.progress import progress_from_config
from src.training.record import RunRecord
from src.training.status import StoppingRule, affine_margin, stability_limit
from src.training.steps import matmul_precision

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    status: str
    reason: str
    final_train_loss: float
    final_val_loss: float
    initial_train_loss: float
    epochs: int
    steps: int
    ms_per_step: float  # training wall time per optimizer step (batched: per model-step)
    ms_per_step_steady: float  # the same after the first epoch (warm-up, graph capture)
    output_dir: str
    checkpoint_path: str | None
    run_id: str | None
    command: str | None  # `python -m src.train ...` that retrains this run alone
    history: dict[str, list[float]] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    # What the status was judged against (src.training.status): the references of the data
    # set, the final full-batch gradient, and dead ReLU units per hidden layer.
    baseline_loss: float | None = None
    affine_baseline_loss: float | None = None
    loss_vs_affine: float | None = None
    grad_norm: float | None = None
    grad_norm_ratio: float | None = None
    dead_units: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dead_units(final: Mapping[str, float]) -> list[tuple[int, float]]:
    prefix = "dead_units_layer_"
    return [(int(k[len(prefix) :]), v) for k, v in final.items() if k.startswith(prefix)]


def default_run_name(cfg: Mapping) -> str:
    return (
        f"m{cfg['model']['depth']}-{cfg['init']['name']}-{cfg['optimizer']['name']}"
        f"-lr{cfg['optimizer']['lr']:g}-s{cfg['seed']}"
    )


def resolve_output_dir(resolved: Mapping, output_dir: str | Path | None) -> Path:
    return Path(
        output_dir
        or resolved.get("output_dir")
        or Path("outputs", "runs", f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{uuid.uuid4().hex[:6]}")
    )


def build_model(resolved: Mapping, data: TensorData) -> MLP:
    """The configured net, initialized from its own seeded generator (no global RNG)."""
    m = resolved["model"]
    model = MLP(data.d_in, data.d_out, m["depth"], m["width"], m["activation"], m["bias"])
    generator = torch.Generator().manual_seed(int(resolved["seed"]))
    return initialize(model, resolved["init"]["name"], generator=generator)


def build_stopping_rule(resolved: Mapping) -> StoppingRule:
    conv, div = resolved["callbacks"]["convergence"], resolved["callbacks"]["divergence"]
    return StoppingRule(
        window=conv["window"],
        tol=conv["tol"],
        grad_tol=conv["grad_tol"],
        min_epochs=conv.get("min_epochs", 1),
        stop_above_affine=bool(conv.get("stop_above_affine", False)),
        affine_margin=affine_margin(resolved),
        divergence_factor=div["factor"],
    )


def build_analysis(resolved: Mapping, output_dir: Path) -> AnalysisCallback | None:
    if not resolved.get("analysis", {}).get("enabled", False):
        return None
    return AnalysisCallback.from_config(
        resolved["analysis"], output_dir, resolved["optimizer"]["lr"]
    )


def make_logger(resolved: Mapping, dataset_name: str, tags: Mapping[str, Any] | None):
    """The run's MLflow logger (its run exists once this returns), or None for logger=none."""
    if resolved["logger"]["name"] != "mlflow":
        return None
    lg = resolved["logger"]
    return tracking.make_mlflow_logger(
        lg["tracking_uri"],
        lg["experiment_name"],
        lg.get("run_name") or default_run_name(resolved),
        tags={"init": resolved["init"]["name"], "dataset": dataset_name, **(tags or {})},
        artifact_root=lg.get("artifact_location"),
    )


def dataset_description(resolved: Mapping, data: TensorData) -> tuple[str, dict[str, Any]]:
    """The name and profile of the run's data set as MLflow shows it (a dataset input)."""
    cfg = resolved["dataset"]
    profile: dict[str, Any] = {"dataset": cfg["name"]}
    name = cfg["name"]
    if cfg.get("resolution"):
        profile["resolution"] = f"{cfg['resolution']}x{cfg['resolution']}"
        name += f" {profile['resolution']}"
    if data.noise_std is not None:
        profile["noise_std"] = data.noise_std
        name += f" noise {data.noise_std:g}"
    profile.update(n_train=data.n_train, n_val=int(data.val_inputs.shape[0]))
    profile.update(d_in=data.d_in, d_out=data.d_out)
    return f"{name} n={data.n_train}", profile


def log_run_params(logger, resolved: Mapping, model: MLP, data: TensorData) -> None:
    if logger is None:
        return
    tracking.log_dataset_input(logger, *dataset_description(resolved, data))
    params = flatten({k: v for k, v in resolved.items() if k != "hydra"})
    params.update(
        init=resolved["init"]["name"],
        dataset=resolved["dataset"]["name"],
        optimizer=resolved["optimizer"]["name"],
        n_parameters=sum(p.numel() for p in model.parameters()),
    )
    logger.log_hyperparams(params)


@dataclass
class RunParts:
    """Everything one run needs besides the training loop."""

    record: RunRecord
    model: MLP
    output_dir: Path
    recorder: RunRecorder
    analysis: AnalysisCallback | None

    def finish(self, logger, data: TensorData) -> None:
        finish_run(
            logger,
            self.model,
            data,
            self.record,
            self.recorder,
            self.analysis,
            stability_limit(self.record.resolved),
        )

    def result(self, logger) -> TrainResult:
        record, final = self.record, self.record.final
        checkpoint = self.recorder.checkpoint_path
        return TrainResult(
            status=record.status,
            reason=record.reason,
            final_train_loss=final["final_train_loss"],
            final_val_loss=final["final_val_loss"],
            initial_train_loss=final["initial_train_loss"],
            epochs=int(final["epochs"]),
            steps=int(final["steps"]),
            ms_per_step=final["ms_per_step"],
            ms_per_step_steady=final["ms_per_step_steady"],
            output_dir=str(self.output_dir),
            checkpoint_path=str(checkpoint) if checkpoint else None,
            run_id=tracking.run_id(logger),
            command=record.command,
            history=record.history,
            analysis=record.analysis,
            baseline_loss=final.get("baseline_loss"),
            affine_baseline_loss=final.get("affine_baseline_loss"),
            loss_vs_affine=final.get("loss_vs_affine"),
            grad_norm=final.get("grad_norm"),
            grad_norm_ratio=final.get("grad_norm_ratio"),
            dead_units=[v for k, v in sorted(_dead_units(final))],
        )


def build_run(
    resolved: RunConfig, data: TensorData, output_dir: str | Path | None, command: str | None
) -> RunParts:
    output_dir = resolve_output_dir(resolved, output_dir)
    return RunParts(
        record=RunRecord(resolved, build_stopping_rule(resolved), command=command),
        model=build_model(resolved, data),
        output_dir=output_dir,
        recorder=RunRecorder(
            output_dir, resolved, log_checkpoint=resolved["logger"].get("log_checkpoint", True)
        ),
        analysis=build_analysis(resolved, output_dir),
    )


def prepare_run_store(resolved: RunConfig) -> None:
    """Check and prepare the run's MLflow store first (one line if it is unusable: missing,
    read-only, a server down), before the data is loaded."""
    lg = resolved["logger"]
    if lg["name"] == "mlflow":
        tracking.prepare_store(
            lg["tracking_uri"], lg["experiment_name"], lg.get("artifact_location")
        )


def _prepare(resolved: RunConfig, data: TensorData | None) -> TensorData:
    data = load_dataset(resolved["dataset"]) if data is None else data
    check_model_fits_data(resolved, data.d_in, data.d_out, data.n_train)
    # A diverging net passes through denormal floats, which are ~100x slower on CPUs; flushing
    # them to zero changes no result at float32 precision.
    torch.set_flush_denormal(True)
    return data


def train(
    cfg: DictConfig | Mapping,
    output_dir: str | Path | None = None,
    tags: Mapping[str, Any] | None = None,
    data: TensorData | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train the configured network; return its status, losses and analysis.

    Invalid settings raise ConfigValueError / DataError / TrackingError before any MLflow run
    is created. A diverging run is a result (status "diverged"), not an error. `data` lets a
    caller that trains many nets on one data set (a grid) load it once; `command` is recorded
    as the command line that retrains the run.
    """
    resolved = validate(cfg)
    prepare_run_store(resolved)
    data = _prepare(resolved, data)
    pl.seed_everything(int(resolved["seed"]), workers=True, verbose=False)
    run = build_run(resolved, data, output_dir, command)
    module = RegressionModule([run.model], [run.record], data)
    logger = make_logger(resolved, data.name, tags)
    callbacks = [RunFinisher(run.finish)]
    if run.analysis is not None:
        callbacks.insert(0, run.analysis)  # tracks sharpness during training, if asked
    label = resolved["logger"].get("run_name") or default_run_name(resolved)
    tracked = run.analysis.tracked if run.analysis is not None else None
    if (progress := progress_from_config(resolved, label, tracked)) is not None:
        callbacks.insert(0, progress)
    try:
        log_run_params(logger, resolved, run.model, data)
        trainer = pl.Trainer(**resolved["trainer"], logger=logger or False, callbacks=callbacks)
        with matmul_precision(resolved["performance"]["tf32"]):
            trainer.fit(module)
        if trainer.received_sigterm:  # Lightning noted a SIGTERM after its last check
            raise Terminated(signal.SIGTERM)
    except SIGTERMException:  # Lightning's own, a SystemExit with status 0: make it 143
        terminated = Terminated(signal.SIGTERM)
        tracking.end_run(logger, terminated)
        raise terminated from None
    except BaseException as err:
        tracking.end_run(logger, err)  # never leave a run marked RUNNING
        raise
    finally:
        module.release()
    return run.result(logger)


def train_batched(
    cfgs: Sequence[DictConfig | Mapping],
    output_dirs: Sequence[str | Path | None] | None = None,
    tags: Sequence[Mapping[str, Any] | None] | None = None,
    data: TensorData | None = None,
    commands: Sequence[str | None] | None = None,
) -> list[TrainResult]:
    """Train the runs `cfgs` (equal `batch_key`) as one batched model; one TrainResult each,
    in order, each as `train` would give it. Raises ConfigValueError if they cannot share a
    batch."""
    resolved = [validate(cfg) for cfg in cfgs]
    if not resolved:
        return []
    if len({batch_key(r) for r in resolved}) > 1:
        raise ConfigValueError("batch", "runs differ in more than seed and lr")
    if (reason := batchable(resolved[0])) is not None:
        raise ConfigValueError(reason, "cannot be trained in a batch")
    prepare_run_store(resolved[0])
    data = _prepare(resolved[0], data)
    n = len(resolved)
    runs = [
        build_run(r, data, out, cmd)
        for r, out, cmd in zip(resolved, output_dirs or [None] * n, commands or [None] * n)
    ]
    # Each member's MLflow run exists from the start (as train's does), so a signal or a crash
    # during training closes every member's run KILLED or FAILED.
    loggers: list = []
    module = None
    try:
        for run, tag in zip(runs, tags or [None] * n):
            logger = make_logger(
                run.record.resolved, data.name, {"batched_models": n, **(tag or {})}
            )
            loggers.append(logger)
            log_run_params(logger, run.record.resolved, run.model, data)
        module = RegressionModule([r.model for r in runs], [r.record for r in runs], data)
        label = f"{n} runs like {default_run_name(resolved[0])}"
        progress = progress_from_config(resolved[0], label)
        trainer = pl.Trainer(
            **resolved[0]["trainer"], logger=False, callbacks=[progress] if progress else []
        )
        with matmul_precision(resolved[0]["performance"]["tf32"]):
            trainer.fit(module)
        if trainer.received_sigterm:
            raise Terminated(signal.SIGTERM)
        model_steps = sum(r.record.steps for r in runs)
        log.info(
            "trained %d models together: %.3f ms per model-step",
            n,
            1e3 * sum(r.record.train_seconds for r in runs) / max(model_steps, 1),
        )
        results = []
        for run, logger in zip(runs, loggers):
            results.append(_finish_member(run, module, logger))
            loggers[len(results) - 1] = None  # closed by _finish_member
    except SIGTERMException:  # Lightning's own, a SystemExit with status 0: make it 143
        terminated = Terminated(signal.SIGTERM)
        for logger in loggers:
            tracking.end_run(logger, terminated)
        raise terminated from None
    except BaseException as err:
        for logger in loggers:
            tracking.end_run(logger, err)  # never leave a member's run marked RUNNING
        raise
    finally:
        if module is not None:
            module.release()
    return results


def _finish_member(run: RunParts, module: RegressionModule, logger) -> TrainResult:
    """Give one member of a trained batch its history, analysis, status and checkpoint in its
    MLflow run, on the training device (one member there at a time)."""
    run.model.to(module.device)
    try:
        log_history(logger, run.record)
        run.finish(logger, module.data)
    finally:
        run.model.cpu()
    tracking.end_run(logger, None)
    return run.result(logger)
