"""Callbacks that record a finished training run (status, checkpoint) in MLflow.

They run in `on_fit_end`, before Lightning marks the MLflow run FINISHED, so everything a run
logs lands in the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from src import tracking
from src.training import RegressionModule


class RunRecorder(pl.Callback):
    """Logs final losses and the status, and saves the final weights to `output_dir/model.pt`."""

    def __init__(self, output_dir: str | Path, config: dict[str, Any], log_checkpoint: bool = True):
        self.output_dir = Path(output_dir)
        self.config = config
        self.log_checkpoint = log_checkpoint
        self.checkpoint_path: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: RegressionModule) -> None:
        metrics = pl_module.final_metrics()
        tracking.log_metrics(trainer.logger, metrics, step=trainer.global_step)
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
        tracking.set_tags(trainer.logger, tags)
        if self.log_checkpoint:
            tracking.log_artifact(trainer.logger, self.checkpoint_path)
