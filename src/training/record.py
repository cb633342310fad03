"""The record of one training run, the same type for a run trained alone and for each member of
a batched model: what the training loop observed, then the analysis and the final status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from src.training.status import StoppingRule


@dataclass
class RunRecord:
    """One run: its validated config, stopping rule and everything measured about it.

    The training loop fills `history`, `epoch_seconds`, `initial_train_loss`,
    `initial_grad_norm`, `steps` and `captured`; after fit, `finish_run` (src.training.finish) fills `final`, `analysis`,
    `status` and `reason`.
    """

    resolved: dict
    stopping: StoppingRule
    command: str | None = None  # the `python -m src.train ...` line that retrains this run alone
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train_loss": [], "val_loss": [], "step": []}
    )
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch
    initial_train_loss: float | None = None
    initial_grad_norm: float | None = None  # full-batch, at the initial weights
    steps: int = 0
    captured: bool = False  # trained from a CUDA graph replay
    batched_with: int = 1  # how many runs shared its batched model
    final: dict[str, float] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    reason: str | None = None

    @property
    def seed(self) -> int:
        return int(self.resolved["seed"])

    @property
    def lr(self) -> float:
        return float(self.resolved["optimizer"]["lr"])

    @property
    def decided(self) -> bool:
        """Has the stopping rule ended this run's training?"""
        return self.stopping.outcome is not None

    @property
    def train_seconds(self) -> float:
        return sum(self.epoch_seconds)

    def steady_ms_per_step(self) -> float:
        """Milliseconds per optimizer step after the first epoch (which pays for warm-up and
        graph capture), epoch-end evaluation excluded; over all epochs if there is only one."""
        seconds, steps = self.epoch_seconds, self.history["step"]
        if len(seconds) > 1:
            return 1e3 * sum(seconds[1:]) / max(steps[-1] - steps[0], 1)
        return 1e3 * sum(seconds) / max(self.steps, 1)
