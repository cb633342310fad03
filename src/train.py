"""Train one denoiser / regression net: `train(cfg)` does the work, `main` is the Hydra wrapper.

python -m src.train depth=12 lr=0.5 -m          # one job, Hydra multirun
python -m src.train -m depth=2,4 lr=0.1,0.5     # four jobs, one MLflow run each
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from src import tracking
from src.callbacks import AnalysisCallback, RunRecorder
from src.config import ConfigValueError, check_model_fits_data, flatten, validate
from src.data import DataError, load_dataset
from src.models import MLP, initialize
from src.steps import check_capture_possible, matmul_precision
from src.training import ConvergenceCriterion, RegressionModule

log = logging.getLogger(__name__)

# Errors a user can fix from the command line: reported as one line, exit status 2.
USER_ERRORS = (ConfigValueError, DataError, tracking.TrackingError)


@dataclass
class TrainResult:
    status: str
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
    history: dict[str, list[float]] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_run_name(cfg: dict) -> str:
    return (
        f"m{cfg['model']['depth']}-{cfg['init']['name']}-{cfg['optimizer']['name']}"
        f"-lr{cfg['optimizer']['lr']:g}-s{cfg['seed']}"
    )


def build_callbacks(cfg: dict, output_dir: Path) -> tuple[RunRecorder, list[pl.Callback]]:
    """The run recorder, and all callbacks in the order they must run at the end of fit:
    the analysis first (it may find the plateau linearly unstable), then the recorder."""
    recorder = RunRecorder(
        output_dir, cfg, log_checkpoint=cfg["logger"].get("log_checkpoint", True)
    )
    callbacks: list[pl.Callback] = []
    if cfg.get("analysis", {}).get("enabled", False):
        callbacks.append(
            AnalysisCallback.from_config(
                cfg["analysis"],
                output_dir,
                cfg["optimizer"]["lr"],
                stability_limit=stability_limit(cfg),
            )
        )
    return recorder, [*callbacks, recorder]


def stability_limit(cfg: dict) -> float | None:
    """The bound on lr x lambda_max above which a minimum is linearly unstable for the
    optimizer (App. I, eq. S4: 2 for plain GD/SGD; 2 (1 + beta) with heavy-ball momentum beta).
    None when the run should not be judged by it (Adam, or the check switched off)."""
    if not cfg["callbacks"]["convergence"].get("require_linear_stability", False):
        return None
    if cfg["optimizer"]["name"] != "sgd":
        return None
    return 2.0 * (1.0 + float(cfg["optimizer"].get("momentum", 0.0)))


def train(
    cfg: DictConfig | dict,
    output_dir: str | Path | None = None,
    tags: dict[str, Any] | None = None,
    data=None,
) -> TrainResult:
    """Train the configured network; return its status, losses and analysis.

    Invalid settings raise ConfigValueError / DataError / TrackingError before any MLflow run
    is created. A diverging run is a result (status "diverged"), not an error. `data` lets a
    caller that trains many nets on one data set (a grid) load it once.
    """
    resolved = validate(cfg)
    data = load_dataset(resolved["dataset"]) if data is None else data
    check_model_fits_data(resolved, data.d_in, data.d_out)
    check_capture_possible(resolved)
    output_dir = resolve_output_dir(resolved, output_dir)
    pl.seed_everything(int(resolved["seed"]), workers=True, verbose=False)
    # A diverging net passes through denormal floats, which are ~100x slower on CPUs; flushing
    # them to zero changes no result at float32 precision.
    torch.set_flush_denormal(True)
    module = build_module(resolved, data, build_model(resolved, data))
    logger = make_logger(resolved, data.name, tags)
    recorder, callbacks = build_callbacks(resolved, output_dir)
    try:
        log_run_params(logger, resolved, module.model)
        trainer = pl.Trainer(**resolved["trainer"], logger=logger or False, callbacks=callbacks)
        with matmul_precision(resolved["performance"]["tf32"]):
            trainer.fit(module)
    except BaseException:
        if logger is not None:
            logger.finalize("failed")  # never leave a run marked RUNNING
        raise
    return train_result(module, callbacks, recorder, output_dir, logger)


def resolve_output_dir(resolved: dict, output_dir: str | Path | None) -> Path:
    return Path(
        output_dir
        or resolved.get("output_dir")
        or Path("outputs", "runs", f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{uuid.uuid4().hex[:6]}")
    )


def build_model(resolved: dict, data) -> MLP:
    """The configured net, initialized from its own seeded generator (no global RNG)."""
    m = resolved["model"]
    model = MLP(data.d_in, data.d_out, m["depth"], m["width"], m["activation"], m["bias"])
    generator = torch.Generator().manual_seed(int(resolved["seed"]))
    return initialize(model, resolved["init"]["name"], generator=generator)


def build_criterion(resolved: dict) -> ConvergenceCriterion:
    conv, div = resolved["callbacks"]["convergence"], resolved["callbacks"]["divergence"]
    return ConvergenceCriterion(
        tol=conv["tol"],
        patience=conv["patience"],
        min_epochs=conv.get("min_epochs", 1),
        divergence_factor=div["factor"],
        max_loss_ratio=conv.get("max_loss_ratio"),
    )


def build_module(resolved: dict, data, model: MLP) -> RegressionModule:
    return RegressionModule(
        model,
        data,
        optimizer=resolved["optimizer"],
        batch_size=resolved["batch_size"],
        seed=int(resolved["seed"]),
        criterion=build_criterion(resolved),
        resample_noise=resolved["dataset"].get("resample_noise", False),
        log_every_n_epochs=resolved["callbacks"].get("log_every_n_epochs", 1),
        cuda_graph=resolved["performance"]["cuda_graph"],
    )


def make_logger(resolved: dict, dataset_name: str, tags: dict[str, Any] | None):
    """The run's MLflow logger (its run exists once this returns), or None for logger=none."""
    if resolved["logger"]["name"] != "mlflow":
        return None
    lg = resolved["logger"]
    return tracking.make_mlflow_logger(
        lg["tracking_uri"],
        lg["experiment_name"],
        lg.get("run_name") or default_run_name(resolved),
        tags={"init": resolved["init"]["name"], "dataset": dataset_name, **(tags or {})},
    )


def log_run_params(logger, resolved: dict, model: MLP) -> None:
    if logger is None:
        return
    params = flatten({k: v for k, v in resolved.items() if k != "hydra"})
    params.update(
        init=resolved["init"]["name"],
        dataset=resolved["dataset"]["name"],
        optimizer=resolved["optimizer"]["name"],
        n_parameters=sum(p.numel() for p in model.parameters()),
    )
    logger.log_hyperparams(params)


def train_result(module, callbacks, recorder, output_dir: Path, logger) -> TrainResult:
    final = module.final_metrics()
    analysis = next((c.results for c in callbacks if isinstance(c, AnalysisCallback)), {})
    return TrainResult(
        status=module.status,
        final_train_loss=final["final_train_loss"],
        final_val_loss=final["final_val_loss"],
        initial_train_loss=final["initial_train_loss"],
        epochs=int(final["epochs"]),
        steps=int(final["steps"]),
        ms_per_step=final["ms_per_step"],
        ms_per_step_steady=final["ms_per_step_steady"],
        output_dir=str(output_dir),
        checkpoint_path=str(recorder.checkpoint_path) if recorder.checkpoint_path else None,
        run_id=tracking.run_id(logger),
        history=module.history,
        analysis=analysis,
    )


def hydra_tags() -> dict[str, Any]:
    """Tags that tie a run to its Hydra job (the sweep id for multirun jobs)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    tags: dict[str, Any] = {"hydra.output_dir": hc.runtime.output_dir}
    if hc.mode == RunMode.MULTIRUN:
        tags.update({"sweep_id": hc.sweep.dir, "hydra.job_num": hc.job.num})
        if hc.overrides.task:
            tags["hydra.overrides"] = " ".join(hc.overrides.task)
    return tags


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    output_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    try:
        if cfg.get("results_dir"):  # a pipeline grid sent through a Hydra launcher
            from src.experiments import train_cached

            result = train_cached(cfg, cfg.results_dir, output_root=output_dir, tags=hydra_tags())
        else:
            result = train(cfg, output_dir=output_dir, tags=hydra_tags()).to_dict()
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")
    log.info("status=%s final_train_loss=%.6g", result["status"], result["final_train_loss"])
    return result["final_train_loss"]


if __name__ == "__main__":
    main()
