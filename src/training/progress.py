"""Live progress of a training run at the console: one tqdm bar per fit when stderr is a
terminal, a log line every N epochs otherwise (a file, a pipe, a batch job's log).

Lightning's own progress bars count batches, and here one Lightning step is a whole epoch (the
epoch's optimizer steps run inside it, src.training.module), so they would sit at 0/1 for the
whole epoch. `EpochProgress` counts epochs instead and shows what a researcher watches: train
and val loss, eta x lambda_max when sharpness is tracked, elapsed time and the time left if the
run uses its whole epoch budget (the stopping rule usually ends it earlier: an upper bound).

An epoch is reported when the next one starts (or when training ends): Lightning calls the
callbacks' `on_train_epoch_end` before the module's, which is where the epoch's losses are
recorded.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import pytorch_lightning as pl

log = logging.getLogger(__name__)

MODES = ("auto", "bar", "lines", "off")
DEFAULT_BAR_WIDTH = 80  # a bar asked for on a terminal that reports no width


def format_duration(seconds: float) -> str:
    """12.3 s, 4m05s, 1h02m."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def terminal_width(stream: TextIO) -> int | None:
    """The width of the terminal `stream` writes to; None if it is no terminal, or one that
    reports no width (0 columns: `script` without a size, some CI log viewers), where a
    tqdm bar sized to it draws nothing at all."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return columns or None


def resolve_mode(mode: str, stream: TextIO) -> str:
    """`auto`: a bar on a terminal of known width, log lines elsewhere."""
    if mode not in MODES:
        raise ValueError(f"progress.mode: must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "bar" if terminal_width(stream) else "lines"


class EpochProgress(pl.Callback):
    """Per-epoch progress of the runs a RegressionModule trains (one, or a batched model's
    members: then the losses shown are the median over the members still training).

    Args:
        max_epochs: the epoch budget (the bar's total; the time left assumes it is used).
        mode: "bar" (tqdm), "lines" (a logging line every `every_n_epochs` epochs and at the
            last), "off", or "auto" (bar if `stream` is a terminal, else lines).
        lr: the step size, to show eta x lambda_max of tracked sharpness (`tracked`).
        tracked: the list the analysis callback appends tracked sharpness points to.
        label: what is trained, e.g. "m6-identity-sgd-lr0.5-s0".
    """

    def __init__(
        self,
        max_epochs: int,
        mode: str = "auto",
        every_n_epochs: int = 10,
        lr: float | None = None,
        tracked: Sequence[dict[str, float]] | None = None,
        label: str = "train",
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.max_epochs = int(max_epochs) if max_epochs and max_epochs > 0 else None
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.lr = lr
        self.tracked = tracked
        self.label = label
        self.reported = 0  # epochs reported so far
        self._bar = None
        self._t0 = 0.0

    # ---- Lightning hooks -------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self.reported = 0
        if self.mode == "bar":
            from tqdm.auto import tqdm

            width = terminal_width(self.stream)  # none known: a fixed width, not none at all
            self._bar = tqdm(
                total=self.max_epochs,
                desc=self.label,
                unit="epoch",
                file=self.stream,
                dynamic_ncols=width is not None,
                ncols=None if width else DEFAULT_BAR_WIDTH,
                leave=True,
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(pl_module, final=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(pl_module, final=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ---- what is shown ---------------------------------------------------------------------
    def _epochs_done(self, pl_module) -> int:
        return max((len(r.history["train_loss"]) for r in pl_module.records), default=0)

    def fields(self, pl_module) -> dict[str, Any]:
        """The latest epoch's numbers: train/val loss (median over members still training),
        eta x lambda_max (tracked), elapsed and remaining seconds."""
        records = [pl_module.records[i] for i in pl_module.active] or list(pl_module.records)
        latest = [r for r in records if r.history["train_loss"]] or [
            r for r in pl_module.records if r.history["train_loss"]
        ]
        epochs = self._epochs_done(pl_module)
        elapsed = time.perf_counter() - self._t0
        out: dict[str, Any] = {
            "epoch": epochs,
            "train_loss": statistics.median(r.history["train_loss"][-1] for r in latest),
            "val_loss": _median_latest([r.history["val_loss"] for r in latest]),
            "elapsed_s": elapsed,
            "remaining_s": None,
            "active": len(pl_module.active),
            "members": len(pl_module.records),
        }
        if len(latest) > 1:  # a batched model: its best and worst member too
            losses = [r.history["train_loss"][-1] for r in latest]
            out.update(best_train_loss=min(losses), worst_train_loss=max(losses))
        if self.max_epochs and epochs:
            out["remaining_s"] = elapsed / epochs * max(self.max_epochs - epochs, 0)
        if self.tracked and self.lr is not None:
            out["lr_times_lambda_max"] = self.lr * self.tracked[-1]["lambda_max"]
        return out

    def _postfix(self, f: dict[str, Any]) -> str:
        parts = [f"train {f['train_loss']:.5g}"]
        if f["val_loss"] is not None:
            parts.append(f"val {f['val_loss']:.5g}")
        if "lr_times_lambda_max" in f:
            parts.append(f"lr*lambda_max {f['lr_times_lambda_max']:.3g}")
        if f["members"] > 1:
            parts.append(f"{f['active']}/{f['members']} runs training (median losses)")
        if "best_train_loss" in f:
            parts.append(
                f"train best {f['best_train_loss']:.5g}, worst {f['worst_train_loss']:.5g}"
            )
        return ", ".join(parts)

    def _report(self, pl_module, final: bool) -> None:
        if self.mode == "off":
            return
        epochs = self._epochs_done(pl_module)
        if epochs <= self.reported:
            return
        f = self.fields(pl_module)
        if self._bar is not None:
            self._bar.update(epochs - self.reported)
            self._bar.set_postfix_str(self._postfix(f), refresh=True)
        elif final or epochs % self.every_n_epochs == 0 or self.reported == 0:
            total = f"/{self.max_epochs}" if self.max_epochs else ""
            left = (
                "done"
                if final
                else f"at most {format_duration(f['remaining_s'])} left"
                if f["remaining_s"] is not None
                else "no epoch budget"
            )
            log.info(
                "%s: epoch %d%s, %s, %s elapsed, %s",
                self.label,
                epochs,
                total,
                self._postfix(f),
                format_duration(f["elapsed_s"]),
                left,
            )
        self.reported = epochs


def progress_from_config(
    resolved: dict, label: str, tracked: Sequence[dict[str, float]] | None = None
) -> EpochProgress | None:
    """The run's progress callback from its `progress` config (None when off)."""
    cfg = resolved.get("progress") or {}
    mode = cfg.get("mode", "auto")
    if mode == "off":
        return None
    return EpochProgress(
        max_epochs=int(resolved["trainer"].get("max_epochs") or -1),
        mode=mode,
        every_n_epochs=int(cfg.get("every_n_epochs", 10)),
        lr=float(resolved["optimizer"]["lr"]),
        tracked=tracked,
        label=label,
    )


def _median_latest(histories: list[list[float | None]]) -> float | None:
    """The median over runs of each one's latest value (the validation loss is computed only on
    logging epochs: src.training.module), None before any."""
    latest = [next((v for v in reversed(h) if v is not None), None) for h in histories]
    values = [v for v in latest if v is not None]
    return statistics.median(values) if values else None
