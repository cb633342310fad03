"""What a run prints at the console.

Quiet by default, nothing hidden: `quiet_notices()` silences a few third-party notices at their
source (a logging filter on Lightning's rank-zero logger, a warning filter), each matched by its
own text, so every other message and warning still shows. `FLATMINIMA_VERBOSE=1` (every entry
point: `python -m src.train`, the pipeline stages, their worker processes), `hydra.verbose=true`
(the CLI) and `--verbose` (the pipeline stages) keep them.

At the end of a run `format_summary` gives its status and reason, losses, sharpness, wall time,
MLflow run and the command that shows it; a Hydra multirun ends with `format_job_table`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from src.runtime.tracking import resolve_tracking_uri

VERBOSE_ENV = "FLATMINIMA_VERBOSE"

# Where Lightning logs its rank-zero notices (the standalone and the unified packages).
NOTICE_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
# The notices themselves: each says nothing about this run.
NOTICES = tuple(
    re.compile(pattern)
    for pattern in (
        r"^💡 Tip: .*litlogger",  # an advertisement
        r"^GPU available: ",  # (not "GPU available but not used": that one is a hint)
        r"^TPU available: ",
        r"^`Trainer\(limit_train_batches=1(\.0)?\)` was configured so ",  # the default
    )
)
# torch deprecates a class Lightning still instantiates; nothing for a user to change.
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class NoticeFilter(logging.Filter):
    """Drops the records whose message is one of NOTICES, passes every other."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.search(message) for pattern in NOTICES)


_FILTER = NoticeFilter()


def env_verbose() -> bool:
    """$FLATMINIMA_VERBOSE set to anything but empty, 0, false, no or off."""
    value = os.environ.get(VERBOSE_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def _is_leafspec_filter(item: tuple) -> bool:
    action, message, category, _module, _lineno = item
    return (
        action == "ignore"
        and category is FutureWarning
        and getattr(message, "pattern", None) == LEAFSPEC_WARNING
    )


def quiet_notices(verbose: bool = False) -> bool:
    """Silence NOTICES and the LeafSpec deprecation warning in this process, unless `verbose`
    or $FLATMINIMA_VERBOSE; when verbose, remove them if an earlier call installed them.
    Idempotent. Returns whether the notices are now silenced."""
    quiet = not (verbose or env_verbose())
    for name in NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        logger.removeFilter(_FILTER)
        if quiet:
            logger.addFilter(_FILTER)
    if quiet:
        warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)
    elif any(_is_leafspec_filter(item) for item in warnings.filters):
        warnings.filters[:] = [item for item in warnings.filters if not _is_leafspec_filter(item)]
        getattr(warnings, "_filters_mutated", lambda: None)()  # drop the "already seen" caches
    return quiet


# --- the summary of a run ---------------------------------------------------------------------


def mlflow_ui_command(uri: str) -> str:
    """The command that shows the store at `uri` (a server is opened in a browser instead)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return shlex.join(["mlflow", "ui", "--backend-store-uri", uri])


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def run_summary(
    result: Mapping[str, Any],
    *,
    logger: Mapping[str, Any],
    wall_s: float,
    stability_limit: float | None = None,
) -> dict[str, Any]:
    """The fields of a run's summary (JSON-safe) from its result (`TrainResult.to_dict()` or a
    stored result) and its `logger` config: which MLflow store and experiment it used."""
    analysis = result.get("analysis") or {}
    tracked = logger.get("name") == "mlflow"
    uri = resolve_tracking_uri(logger.get("tracking_uri")) if tracked else None
    return {
        "status": result["status"],
        "reason": result.get("reason"),
        "final_train_loss": _number(result.get("final_train_loss")),
        "final_val_loss": _number(result.get("final_val_loss")),
        "loss_vs_affine": _number(result.get("loss_vs_affine")),
        "affine_baseline_loss": _number(result.get("affine_baseline_loss")),
        "lambda_max": _number(analysis.get("lambda_max")),
        "lr_times_lambda_max": _number(analysis.get("lr_times_lambda_max")),
        "stability_limit": stability_limit,
        "epochs": result.get("epochs"),
        "wall_s": float(wall_s),
        "run_id": result.get("run_id") if tracked else None,
        "experiment": logger.get("experiment_name") if tracked else None,
        "tracking_uri": uri,
        "output_dir": result.get("output_dir"),
    }


def _can_print(text: str) -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _symbols() -> tuple[str, str]:
    """λ_max and η·λ_max, or ASCII names where stdout cannot encode them."""
    if _can_print("λη·"):
        return "λ_max", "η·λ_max"
    return "lambda_max", "lr*lambda_max"


def _g(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few aligned lines: `label   value`. The first word after each label is the value
    itself (the tests read them back)."""
    lam, eta_lam = _symbols()
    rows = [("status", f"{summary['status']} ({summary.get('reason') or 'no reason'})")]
    rows.append(("train loss", _g(summary.get("final_train_loss"))))
    rows.append(("val loss", _g(summary.get("final_val_loss"))))
    if summary.get("loss_vs_affine") is not None:
        rows.append(
            (
                "loss / affine",
                f"{_g(summary['loss_vs_affine'], 4)} (the best affine denoiser's loss: "
                f"{_g(summary.get('affine_baseline_loss'))})",
            )
        )
    else:
        rows.append(("loss / affine", "n/a (no affine reference)"))
    if summary.get("lambda_max") is not None:
        rows.append((lam, _g(summary["lambda_max"])))
        limit = summary.get("stability_limit")
        note = f" (linearly stable at most {_g(limit, 3)})" if limit else ""
        rows.append((eta_lam, _g(summary.get("lr_times_lambda_max"), 4) + note))
    else:
        rows.append((lam, "n/a (not measured: analysis off or diverged run)"))
    epochs = summary.get("epochs")
    rows.append(
        ("wall time", f"{summary['wall_s']:.1f} s" + (f", {epochs} epochs" if epochs else ""))
    )
    if summary.get("tracking_uri"):
        rows.append(("MLflow run", f"{summary.get('run_id')} (experiment {summary['experiment']})"))
        rows.append(("MLflow store", summary["tracking_uri"]))
        rows.append(("view it", mlflow_ui_command(summary["tracking_uri"])))
    else:
        rows.append(("MLflow run", "none (tracking off: logger=none)"))
    rows.append(("outputs", str(summary.get("output_dir"))))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)


def format_job_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    """One line per job of a multirun, in job order: its overrides (those all jobs share are
    listed once, above), status, reason, final train loss, λ_max and MLflow run id; then the
    command that shows the runs."""
    lam, _ = _symbols()
    jobs = sorted(jobs, key=lambda job: job.get("job_num", 0))
    overrides = [list(job.get("overrides") or []) for job in jobs]
    shared = (
        [o for o in overrides[0] if all(o in own for own in overrides)] if len(jobs) > 1 else []
    )
    header = ("#", "overrides", "status", "reason", "train loss", lam, "run id")
    lines = [
        (
            str(job.get("job_num", "")),
            " ".join(o for o in own if o not in shared) or "-",
            str(job.get("status")),
            str(job.get("reason") or "-"),
            _g(job.get("final_train_loss")),
            _g(job.get("lambda_max")),
            str(job.get("run_id") or "-"),
        )
        for job, own in zip(jobs, overrides)
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    table = [f"every job: {' '.join(shared)}"] if shared else []
    table += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *lines]
    ]
    uris = sorted({job["tracking_uri"] for job in jobs if job.get("tracking_uri")})
    table.extend(f"view them: {mlflow_ui_command(uri)}" for uri in uris)
    return "\n".join(table)


# --- handing a job's summary to the Hydra callback (same process) ------------------------------

_LAST_SUMMARY: dict[str, Any] | None = None


def remember_summary(summary: dict[str, Any]) -> None:
    """Keep the summary of the job that just ran, for the Hydra callback's `on_job_end`, which
    runs in the job's own process (whatever the launcher) right after the job returns."""
    global _LAST_SUMMARY
    _LAST_SUMMARY = dict(summary)


def take_summary() -> dict[str, Any] | None:
    """The summary `remember_summary` kept (once), or None."""
    global _LAST_SUMMARY
    summary, _LAST_SUMMARY = _LAST_SUMMARY, None
    return summary
