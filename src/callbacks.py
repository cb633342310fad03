"""Callbacks that record a finished training run (status, checkpoint, analysis) in MLflow.

They run in `on_fit_end`, before Lightning marks the MLflow run FINISHED, so everything a run
logs lands in the same run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from src import tracking
from src.analysis.gains import gain_profile
from src.analysis.hessian import SharpnessNotConverged, top_hessian_eigenvalue
from src.training import RegressionModule

log = logging.getLogger(__name__)


class RunRecorder(pl.Callback):
    """Logs final losses and the status, and saves the final weights to `output_dir/model.pt`."""

    def __init__(self, output_dir: str | Path, config: dict[str, Any], log_checkpoint: bool = True):
        self.output_dir = Path(output_dir)
        self.config = config
        self.log_checkpoint = log_checkpoint
        self.checkpoint_path: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: RegressionModule) -> None:
        self.record(trainer.logger, pl_module)

    def record(self, logger, pl_module: RegressionModule) -> None:
        """Everything on_fit_end does, for a run trained outside a Trainer (src.batched)."""
        metrics = pl_module.final_metrics()
        tracking.log_metrics(logger, metrics, step=pl_module.steps)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.output_dir / "model.pt"
        torch.save(
            {
                "state_dict": pl_module.model.state_dict(),
                "config": self.config,
                "status": pl_module.status,
                "metrics": metrics,
                "history": pl_module.history,
            },
            self.checkpoint_path,
        )
        tags = {
            "status": pl_module.status,
            "stop_reason": pl_module.criterion.reason,
            "checkpoint_path": str(self.checkpoint_path.resolve()),
        }
        tracking.set_tags(logger, tags)
        if self.log_checkpoint:
            tracking.log_artifact(logger, self.checkpoint_path)


class AnalysisCallback(pl.Callback):
    """Sharpness and gain profiles of the trained net (Sec. 6), logged to MLflow.

    At the end of fit (whatever stopped it; skipped for diverged runs): the top Hessian
    eigenvalue of the full training loss, lr x lambda_max (< 2: linearly stable, App. I; with
    `stability_limit`, a converged run above it is re-labelled not_converged), the
    top eigenvector saved next to the checkpoint, and the gain profile (JSON + PNG). With
    `every_n_epochs > 0`, sharpness is also tracked during training, each solve warm-started
    from the previous eigenvector.
    """

    def __init__(
        self,
        output_dir: str | Path,
        lr: float,
        *,
        method: str = "lanczos",
        tol: float = 1e-6,
        max_hvps: int = 200,
        k: int = 1,
        chunk_size: int | None = None,
        dtype: str = "float32",
        every_n_epochs: int = 0,
        save_eigenvector: bool = True,
        gains: bool = True,
        gain_restarts: int = 100,
        gain_steps: int = 300,
        stability_limit: float | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.lr = float(lr)
        self.solver = dict(method=method, tol=tol, max_hvps=max_hvps, k=k, chunk_size=chunk_size)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self.every_n_epochs = every_n_epochs
        self.save_eigenvector = save_eigenvector
        self.gains = gains
        self.gain_restarts = gain_restarts
        self.gain_steps = gain_steps
        self.stability_limit = stability_limit
        self.results: dict[str, Any] = {}
        self.tracked: list[dict[str, float]] = []
        self._last_eigenvector: torch.Tensor | None = None

    @classmethod
    def from_config(
        cls, cfg: dict, output_dir: str | Path, lr: float, stability_limit: float | None = None
    ) -> AnalysisCallback:
        sharp, gains = cfg["sharpness"], cfg.get("gains", {})
        return cls(
            output_dir,
            lr,
            method=sharp["method"],
            tol=sharp["tol"],
            max_hvps=sharp["max_hvps"],
            k=sharp["k"],
            chunk_size=sharp.get("chunk_size"),
            dtype=sharp.get("dtype", "float32"),
            every_n_epochs=sharp.get("every_n_epochs", 0),
            save_eigenvector=sharp.get("save_eigenvector", True),
            gains=gains.get("enabled", False),
            gain_restarts=gains.get("restarts", 100),
            gain_steps=gains.get("steps", 300),
            stability_limit=stability_limit,
        )

    def _sharpness(self, pl_module: RegressionModule):
        data = pl_module.data
        return top_hessian_eigenvalue(
            pl_module.model,
            F.mse_loss,  # the training loss, eq. (2) up to the factor 1/d_y (README)
            data.train_inputs,
            data.train_targets,
            dtype=self.dtype,
            seed=pl_module.seed,
            v0=self._last_eigenvector,
            **self.solver,
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: RegressionModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs <= 0 or epoch % self.every_n_epochs:
            return
        if not all(torch.isfinite(p).all() for p in pl_module.model.parameters()):
            return  # diverging: the module records it at this epoch's end
        try:
            result = self._sharpness(pl_module)
        except SharpnessNotConverged as err:
            log.warning("sharpness at epoch %d did not converge: %s", epoch, err)
            return
        self._last_eigenvector = result.eigenvector
        point = {
            "epoch": epoch,
            "lambda_max": result.eigenvalue,
            "lr_times_lambda_max": self.lr * result.eigenvalue,
        }
        self.tracked.append(point)
        tracking.log_metrics(
            trainer.logger,
            {
                "lambda_max_tracked": point["lambda_max"],
                "lr_times_lambda_max_tracked": point["lr_times_lambda_max"],
            },
            step=pl_module.steps,
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: RegressionModule) -> None:
        self.analyze(trainer.logger, pl_module)

    def analyze(self, logger, pl_module: RegressionModule) -> None:
        """Everything on_fit_end does, for a run trained outside a Trainer (src.batched)."""
        if pl_module.status == "diverged":
            self.results = {"skipped": "diverged"}
            tracking.set_tags(logger, {"analysis": "skipped (diverged)"})
            return
        self.results = self._measure_sharpness(logger, pl_module)
        lam = self.results.get("lambda_max")
        if self.stability_limit is not None and lam is not None and pl_module.status == "converged":
            # A plateau where lr x lambda_max exceeds the limit is an oscillation around an
            # unstable point, not convergence to a minimum (App. I, eq. S4).
            pl_module.criterion.mark_unstable(self.lr * lam, self.stability_limit)
        if self.tracked:
            self.results["tracked"] = self.tracked
        if self.gains:
            self.results["gains"] = self._measure_gains(logger, pl_module)

    def _measure_sharpness(self, logger, pl_module: RegressionModule) -> dict[str, Any]:
        try:
            result = self._sharpness(pl_module)
        except SharpnessNotConverged as err:
            # A measurement that failed is recorded as such, not as a number.
            tracking.set_tags(logger, {"hessian_status": f"not converged: {err}"})
            return {
                "lambda_max": None,
                "hessian_status": "not_converged",
                "hessian_error": str(err),
            }
        metrics = {
            "lambda_max": result.eigenvalue,
            "lr_times_lambda_max": self.lr * result.eigenvalue,
            "hessian_hvps": result.hvps,
            "hessian_residual": result.residual,
            "hessian_seconds": result.seconds,
        }
        metrics.update(
            {f"lambda_{i + 1}": value for i, value in enumerate(result.eigenvalues[1:], start=1)}
        )
        tracking.log_metrics(logger, metrics, step=pl_module.steps)
        out = {
            **metrics,
            "eigenvalues": list(result.eigenvalues),
            "method": result.method,
            "hessian_status": "converged",
        }
        if self.save_eigenvector:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            path = self.output_dir / "hessian_eigenvector.pt"
            torch.save(
                {"eigenvector": result.eigenvector.cpu(), "eigenvalue": result.eigenvalue}, path
            )
            out["eigenvector_path"] = str(path.resolve())
            tracking.set_tags(logger, {"eigenvector_path": out["eigenvector_path"]})
        return out

    def _measure_gains(self, logger, pl_module: RegressionModule) -> dict[str, Any]:
        from src.plots import plot_gain_profile

        inputs = pl_module.data.train_inputs
        profile = gain_profile(
            pl_module.model,
            input_dim=inputs.shape[1],
            restarts=self.gain_restarts,
            steps=self.gain_steps,
            input_norm=float(inputs.norm(dim=1).mean()),
            seed=pl_module.seed,
        )
        gains = profile.to_dict()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        json_path = self.output_dir / "gains.json"
        json_path.write_text(json.dumps(gains, indent=1))
        png_path = plot_gain_profile(gains, self.output_dir / "gains.png")
        for path in (json_path, png_path):
            tracking.log_artifact(logger, path, "analysis")
        return gains
