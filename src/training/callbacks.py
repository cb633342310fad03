"""What happens to a run once its training ends: the analysis at the final weights, the one
decision of its status (src.training.status), and its record in MLflow and on disk.

`finish_run` does these in that order for one run, whether it trained alone (called by the
`RunFinisher` callback in `on_fit_end`, before Lightning marks the MLflow run FINISHED, so
everything lands in the same run) or as a member of a batched model (called per member after
fit). Each step takes the run's (model, data, record), never a Lightning module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from src.analysis.gains import gain_profile
from src.analysis.hessian import (
    SharpnessNotConverged,
    full_gradient,
    polished,
    top_hessian_eigenvalue,
)
from src.analysis.spectrum import gap_ratio, hessian_spectral_density, hessian_trace
from src.core.files import write_json
from src.core.plots import plot_gain_profile
from src.core.status import CONVERGED, STATUSES
from src.domain.data import TensorData
from src.domain.models import MLP
from src.runtime import tracking
from src.training.checkpoint import (
    CHECKPOINT_FILE,
    DENSITY_FILE,
    EIGENVECTOR_FILE,
    save_checkpoint,
    save_eigenvector,
)
from src.training.module import final_metrics
from src.training.record import RunRecord
from src.training.status import affine_margin, decide_status, stability_band
from src.training.steps import matmul_precision

log = logging.getLogger(__name__)

# How the analysis names its eigensolvers at the console (src.analysis.hessian's methods).
SOLVER_NAMES = {
    "lanczos": "Lanczos (ARPACK)",
    "lanczos_torch": "Lanczos (torch)",
    "power": "power iteration",
}


def density_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`hessian_spectral_density`'s settings from the config's `analysis.density` section."""
    return {
        "probes": int(cfg["probes"]),
        "lanczos_steps": int(cfg["lanczos_steps"]),
        "broadening": float(cfg["broadening"]),
        "grid": int(cfg["grid_points"]),
    }


class RunRecorder:
    """Logs final losses, status and reason, and saves the final weights to
    `output_dir/model.pt`."""

    def __init__(self, output_dir: str | Path, config: dict[str, Any], log_checkpoint: bool = True):
        self.output_dir = Path(output_dir)
        self.config = config
        self.log_checkpoint = log_checkpoint
        self.checkpoint_path: Path | None = None

    def record(self, logger, model: MLP, record: RunRecord) -> None:
        tracking.log_metrics(logger, record.final, step=record.steps)
        self.checkpoint_path = save_checkpoint(
            self.output_dir / CHECKPOINT_FILE,
            model,
            config=dict(self.config),
            status=record.status,
            reason=record.reason,
            metrics=record.final,
            history=record.history,
        )
        tags = {
            "status": record.status,
            "stop_reason": record.reason,
            "checkpoint_path": str(self.checkpoint_path.resolve()),
        }
        if record.command:
            tags["command"] = record.command
        tracking.set_tags(logger, tags)
        # Tags cannot be charted and are easy to miss in the runs table: the status is also a
        # param (a column to sort and filter by, `params.status = 'converged'`) and a metric.
        tracking.log_params(logger, {"status": record.status, "stop_reason": record.reason})
        tracking.log_metrics(
            logger,
            {"converged": float(record.status == CONVERGED),
             "status_code": float(STATUSES.index(record.status))},
            step=record.steps,
        )  # fmt: skip
        if self.log_checkpoint:
            tracking.log_artifact(logger, self.checkpoint_path)


class AnalysisCallback(pl.Callback):
    """Sharpness and gain profiles of the trained net (Sec. 6), logged to MLflow.

    `analyze`, once training has ended (whatever stopped it; skipped for diverged runs): the
    top Hessian eigenvalue of the full training loss, lr x lambda_max (< 2: linearly stable,
    App. I), the top eigenvector saved next to the checkpoint, and the gain profile (JSON +
    PNG); when enabled, the Hessian trace (Hutchinson, with its standard error) and the
    eigenvalue density (stochastic Lanczos quadrature, saved as JSON). Each measure's cost in
    HVPs and seconds is logged beside it. It measures only: `decide_status` judges the run from what it returns. With
    `every_n_epochs > 0`, sharpness is also tracked during training (a run trained alone),
    each solve warm-started from the previous eigenvector.
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
        chunk_size: int | str | None = None,
        memory_share: float = 0.5,
        dtype: str = "float32",
        every_n_epochs: int = 0,
        polish_steps: int = 0,
        save_eigenvector: bool = True,
        gains: bool = True,
        gain_restarts: int = 100,
        gain_steps: int = 300,
        trace: dict[str, Any] | None = None,
        density: dict[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.lr = float(lr)
        # top_hessian_eigenvalue's settings
        self.solver = {"method": method, "tol": tol, "max_hvps": max_hvps, "k": k}
        self.solver.update(chunk_size=chunk_size, memory_share=memory_share)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self.every_n_epochs = every_n_epochs
        self.polish_steps = polish_steps
        self.save_eigenvector = save_eigenvector
        self.gains = gains
        self.gain_restarts = gain_restarts
        self.gain_steps = gain_steps
        # hessian_trace / hessian_spectral_density settings (None: not measured)
        self.trace = trace
        self.density = density
        self.tracked: list[dict[str, float]] = []
        self._last_eigenvector: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg: dict, output_dir: str | Path, lr: float) -> AnalysisCallback:
        sharp, gains = cfg["sharpness"], cfg.get("gains", {})
        trace, density = cfg.get("trace") or {}, cfg.get("density") or {}
        return cls(
            output_dir,
            lr,
            method=sharp["method"],
            tol=sharp["tol"],
            max_hvps=sharp["max_hvps"],
            k=sharp["k"],
            chunk_size=sharp.get("chunk_size"),
            memory_share=sharp.get("memory_share", 0.5),
            dtype=sharp.get("dtype", "float32"),
            every_n_epochs=sharp.get("every_n_epochs", 0),
            polish_steps=sharp.get("polish_steps", 0),
            save_eigenvector=sharp.get("save_eigenvector", True),
            gains=gains.get("enabled", False),
            gain_restarts=gains.get("restarts", 100),
            gain_steps=gains.get("steps", 300),
            trace=(
                {k: trace[k] for k in ("tol", "min_probes", "max_probes")}
                if trace.get("enabled") else None
            ),
            density=density_settings(density) if density.get("enabled") else None,
        )  # fmt: skip

    def _sharpness(self, model: MLP, data: TensorData, seed: int, v0=None):
        return top_hessian_eigenvalue(
            model,
            F.mse_loss,  # the training loss, eq. (2) up to the factor 1/d_y (README)
            data.train_inputs,
            data.train_targets,
            dtype=self.dtype,
            seed=seed,
            v0=self._last_eigenvector if v0 is None else v0,
            **self.solver,
        )

    def _polished_sharpness(
        self, model: MLP, data: TensorData, seed: int, raw
    ) -> tuple[dict[str, Any], Any]:
        """lambda_max after `polish_steps` full-batch steps of 1 / lambda_raw from the final
        weights (src.analysis.hessian.polished: the robust value a run's status is judged by),
        warm-started from the raw eigenvector; with the polish's losses."""
        polish = polished(
            model,
            F.mse_loss,
            data.train_inputs,
            data.train_targets,
            self.polish_steps,
            1.0 / raw.eigenvalue,
        )
        result = self._sharpness(polish.model, data, seed, v0=raw.eigenvector)
        metrics = {
            "lambda_max_raw": raw.eigenvalue,
            "lr_times_lambda_max_raw": self.lr * raw.eigenvalue,
            "polish_steps": polish.steps,
            "polish_loss_before": polish.loss_before,
            "polish_loss_after": polish.loss_after,
        }
        return metrics, result

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs <= 0 or epoch % self.every_n_epochs:
            return
        (model,), (record,) = pl_module.models, pl_module.records  # a run trained alone
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            return  # diverging: the module records it at this epoch's end
        try:
            with matmul_precision(False):  # a measurement: fp32, whatever training allows
                result = self._sharpness(model, pl_module.data, record.seed)
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
            step=record.steps,
        )

    def analyze(self, logger, model: MLP, data: TensorData, record: RunRecord) -> dict[str, Any]:
        """The measurements at the final weights (logged to `logger`)."""
        if record.stopping.outcome == "diverged":
            tracking.set_tags(logger, {"analysis": "skipped (diverged)"})
            return {"skipped": "diverged"}
        results = self._measure_sharpness(logger, model, data, record)
        if self.trace is not None:
            results["trace"] = self._measure_trace(logger, model, data, record)
        if self.density is not None:
            results["density"], results["density_path"] = self._measure_density(
                logger, model, data, record
            )
        if self.tracked:
            results["tracked"] = self.tracked
        if self.gains:
            results["gains"] = self._measure_gains(logger, model, data, record.seed)
        return results

    def _measure_sharpness(
        self, logger, model: MLP, data: TensorData, record: RunRecord
    ) -> dict[str, Any]:
        polish: dict[str, Any] = {}
        try:
            result = raw = self._sharpness(model, data, record.seed)
            if self.polish_steps > 0 and raw.eigenvalue > 0:
                polish, result = self._polished_sharpness(model, data, record.seed, raw)
        except SharpnessNotConverged as err:
            # A measurement that failed is recorded as such, not as a number.
            tracking.set_tags(logger, {"hessian_status": f"not converged: {err}"})
            return {
                "lambda_max": None,
                "hessian_status": "not_converged",
                "hessian_error": str(err),
            }
        solves = (raw,) if result is raw else (raw, result)
        hvps, seconds = sum(r.hvps for r in solves), sum(r.seconds for r in solves)
        log.info(
            "lambda_max = %.6g (at the final weights %.6g): %s, %d HVPs, %.1f s",
            result.eigenvalue,
            raw.eigenvalue,
            SOLVER_NAMES.get(result.method, result.method),
            hvps,
            seconds,
        )
        metrics = {
            "lambda_max": result.eigenvalue,
            "lr_times_lambda_max": self.lr * result.eigenvalue,
            **polish,
            "hessian_hvps": hvps,
            "hessian_residual": result.residual,
            "hessian_seconds": seconds,
        }
        metrics.update(
            {f"lambda_{i + 1}": value for i, value in enumerate(result.eigenvalues[1:], start=1)}
        )
        if len(result.eigenvalues) > 1:  # what makes the power method slow (r = 1 / gap)
            metrics["lambda_gap_ratio"] = gap_ratio(result.eigenvalues)
        tracking.log_metrics(logger, metrics, step=record.steps)
        out = {
            **metrics,
            "eigenvalues": list(result.eigenvalues),
            "method": result.method,
            "hessian_status": "converged",
        }
        if self.save_eigenvector:
            path = save_eigenvector(
                self.output_dir / EIGENVECTOR_FILE, raw.eigenvector, raw.eigenvalue
            )  # at the final weights, which the checkpoint holds
            out["eigenvector_path"] = str(path.resolve())
            tracking.set_tags(logger, {"eigenvector_path": out["eigenvector_path"]})
        return out

    def _landscape_options(self) -> dict[str, Any]:
        return {
            "chunk_size": self.solver["chunk_size"],
            "memory_share": self.solver["memory_share"],
            "dtype": self.dtype,
        }

    def _measure_trace(self, logger, model: MLP, data: TensorData, record: RunRecord) -> dict:
        """tr(H) of the training loss (Hutchinson), with its standard error and cost."""
        result = hessian_trace(
            model, F.mse_loss, data.train_inputs, data.train_targets,
            seed=record.seed, **self.trace, **self._landscape_options(),
        )  # fmt: skip
        log.info(
            "trace(H) = %.6g ± %.2g: Hutchinson, %d HVPs, %.1f s%s",
            result.trace,
            result.stderr,
            result.hvps,
            result.seconds,
            "" if result.converged else f" (relative error above {result.tol:g})",
        )
        tracking.log_metrics(
            logger,
            {
                "hessian_trace": result.trace,
                "hessian_trace_stderr": result.stderr,
                "hessian_trace_hvps": result.hvps,
                "hessian_trace_seconds": result.seconds,
            },
            step=record.steps,
        )
        return result.to_dict()

    def _measure_density(
        self, logger, model: MLP, data: TensorData, record: RunRecord
    ) -> tuple[dict, str]:
        """The Hessian's eigenvalue density (stochastic Lanczos quadrature), saved as
        hessian_density.json (grid, density, Ritz nodes and weights) and logged as an artifact;
        returns its summary (moments, edges, cost; also logged as metrics) and the file."""
        result = hessian_spectral_density(
            model, F.mse_loss, data.train_inputs, data.train_targets,
            seed=record.seed, **self.density, **self._landscape_options(),
        )  # fmt: skip
        log.info(
            "Hessian density: stochastic Lanczos quadrature, %d probes x %d steps, %d HVPs, %.1f s",
            result.probes,
            result.lanczos_steps,
            result.hvps,
            result.seconds,
        )
        summary = result.to_dict()
        path = self.output_dir / DENSITY_FILE
        write_json(path, result.to_dict(arrays=True))
        tracking.log_artifact(logger, path, "analysis")
        tracking.log_metrics(
            logger,
            {
                "density_trace": result.trace,
                "density_top_edge": result.top_edge,
                "density_hvps": result.hvps,
                "density_seconds": result.seconds,
            },
            step=record.steps,
        )
        return {**summary, "trace": result.trace}, str(path.resolve())

    def _measure_gains(self, logger, model: MLP, data: TensorData, seed: int) -> dict[str, Any]:
        inputs = data.train_inputs
        started = time.perf_counter()
        profile = gain_profile(
            model,
            input_dim=inputs.shape[1],
            restarts=self.gain_restarts,
            steps=self.gain_steps,
            input_norm=float(inputs.norm(dim=1).mean()),
            seed=seed,
        )
        gains = profile.to_dict()
        log.info(
            "gain profile: %d restarts x %d steps per layer, %.1f s",
            self.gain_restarts,
            self.gain_steps,
            time.perf_counter() - started,
        )
        json_path = self.output_dir / "gains.json"
        write_json(json_path, gains)
        png_path = plot_gain_profile(gains, self.output_dir / "gains.png")
        for path in (json_path, png_path):
            tracking.log_artifact(logger, path, "analysis")
        return gains


def finish_run(
    logger,
    model: MLP,
    data: TensorData,
    record: RunRecord,
    recorder: RunRecorder,
    analysis: AnalysisCallback | None,
    stability_limit: float | None,
) -> None:
    """Analyse a trained run, decide its status (the one place: `decide_status`), record it.

    Measurements and final losses are computed in full fp32 even where training ran with TF32
    matmuls (performance.tf32): TF32's ~1e-3 relative error per product would move lambda_max
    and the losses far beyond fp32 rounding."""
    with matmul_precision(False):
        if record.stopping.outcome != "diverged":
            # Training may have stopped on its budget: is the final point stationary?
            gradient = full_gradient(model, F.mse_loss, data.train_inputs, data.train_targets)
            record.stopping.finish(float(gradient.norm()))
        if analysis is not None:
            record.analysis = analysis.analyze(logger, model, data, record)
        record.final = final_metrics(model, data, record)
        record.status, record.reason = decide_status(
            record.stopping,
            record.analysis if analysis is not None else None,
            record.lr,
            stability_limit,
            band=stability_band(record.resolved),
            train_loss=record.final["final_train_loss"],
            affine_margin=affine_margin(record.resolved),
        )
    recorder.record(logger, model, record)


class RunFinisher(pl.Callback):
    """Ends a run trained alone at the end of its fit: `finish(logger, data)`, a closure over
    the run's model, record and recorder that calls `finish_run`."""

    def __init__(self, finish) -> None:
        self.finish = finish

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.finish(trainer.logger, pl_module.data)  # the data on the training device
