"""MLflow plumbing shared by training, analysis and the pipeline stages.

Every entry point that opens a tracking store goes through `prepare_store` first: it checks
that the store can be used (one line naming the URI and the cause otherwise, within seconds),
creates and migrates a sqlite store under an inter-process lock (jobs started together on a new
store would otherwise race MLflow's schema migration and can leave it half-migrated), creates
the experiment, and closes runs left RUNNING by processes of this host that no longer exist.

    python -m src.runtime.tracking close-stale [--uri URI]     # that last step, on demand
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from src.core.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
LOCK_TIMEOUT_S = 120.0  # how long to wait for another process preparing the same store


class TrackingError(UserError, RuntimeError):
    """The tracking server cannot be used (one-line message naming the URI)."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Make a relative sqlite/file store absolute, so a changed working directory cannot move it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    if "://" not in uri:  # a plain directory path: MLflow's file store
        return Path(uri).resolve().as_uri()
    return uri


def environment_first_uri(configured: str | None) -> str:
    """$MLFLOW_TRACKING_URI if set, else `configured` (e.g. params.yaml's), else the default;
    made absolute. The pipeline stages log where the training runs they start log."""
    return resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or configured)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (instead of MLflow's minutes of retries) when an HTTP server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            if reply.status != 200:
                raise TrackingError(
                    f"logger.tracking_uri: MLflow server at {uri} answered {reply.status}"
                )
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"logger.tracking_uri: cannot reach MLflow server at {uri} ({reason})"
        ) from err


def sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite:/// store, None for other stores."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_writable(uri: str) -> None:
    """Fail in one line when a local store cannot be written: a missing directory, a file that
    is not a database, a read-only file, directory or file system. sqlite itself is asked
    (a write transaction that is rolled back), so the answer holds for root too."""
    path = sqlite_path(uri)
    if path is None:
        if uri.startswith("file:"):
            folder = Path(urllib.request.url2pathname(uri[len("file:") :]))
            folder = folder if folder.exists() else folder.parent
            if not (folder.is_dir() and os.access(folder, os.W_OK)):
                raise TrackingError(f"logger.tracking_uri: cannot write the store {uri}")
        return
    if not path.parent.is_dir():
        raise TrackingError(
            f"logger.tracking_uri: cannot use {uri}: directory {path.parent} does not exist"
        )
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            db.execute("PRAGMA schema_version")  # "file is not a database" surfaces here
            db.execute("BEGIN IMMEDIATE")  # a write lock: read-only files and folders fail
            db.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        if "locked" in str(err):  # another process is writing to it: it is writable
            return
        raise TrackingError(f"logger.tracking_uri: cannot use {uri}: {err}") from err
    except sqlite3.Error as err:
        raise TrackingError(f"logger.tracking_uri: cannot use {uri}: {err}") from err


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An inter-process lock for preparing a local sqlite store (`<db>.lock` beside it)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingError(
                        f"logger.tracking_uri: {uri} is locked by another process "
                        f"for more than {LOCK_TIMEOUT_S:.0f} s ({path}.lock)"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_PREPARED: set[tuple[str, str | None]] = set()


def prepare_store(uri: str, experiment_name: str | None = None) -> str:
    """Make the store at `uri` ready for this process (`open_store`); return the absolute URI.
    Cheap after the first call for a (uri, experiment)."""
    uri = resolve_tracking_uri(uri)
    if (uri, experiment_name) not in _PREPARED:
        open_store(uri, experiment_name)
        _PREPARED.add((uri, experiment_name))
    return uri


def open_store(uri: str, experiment_name: str | None = None) -> list[str]:
    """Check the store at the absolute `uri`, create and migrate it under the lock, create the
    experiment, and close stale runs (see the module docstring); return the closed runs' ids."""
    check_reachable(uri)
    check_writable(uri)
    import mlflow

    with store_lock(uri):
        try:
            client = mlflow.MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # creates and migrates the schema
            if experiment_name and client.get_experiment_by_name(experiment_name) is None:
                client.create_experiment(experiment_name)
            return close_stale_runs(client)
        except mlflow.exceptions.MlflowException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TrackingError(f"logger.tracking_uri: cannot use {uri}: {first}") from err


def process_tags() -> dict[str, str]:
    """Tags that let a later process tell whether the run's process still exists."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def close_stale_runs(client) -> list[str]:
    """Mark FAILED the runs still RUNNING whose process (tagged host and pid) was on this host
    and no longer exists (e.g. killed with SIGKILL); return their ids."""
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    stale = []
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=5000):
        tags = run.data.tags
        if tags.get("host") != host or not tags.get("pid", "").isdigit():
            continue
        pid = int(tags["pid"])
        if pid == os.getpid() or _process_exists(pid):
            continue
        reason = f"process {tags['pid']} on {host} ended without closing the run"
        client.set_tag(run.info.run_id, "failure_reason", reason)
        client.set_terminated(run.info.run_id, "FAILED")
        log.warning("MLflow run %s: %s; marked FAILED", run.info.run_id, reason)
        stale.append(run.info.run_id)
    return stale


def make_mlflow_logger(
    tracking_uri: str, experiment_name: str, run_name: str, tags: dict[str, Any]
):
    """A Lightning MLFlowLogger whose run exists once this returns (the store is prepared
    first: `prepare_store`)."""
    from pytorch_lightning.loggers import MLFlowLogger

    uri = prepare_store(tracking_uri, experiment_name)
    logger = MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        tags={k: str(v) for k, v in {**tags, **process_tags()}.items()},
        log_model=False,
    )
    _ = logger.run_id  # create the run now, so errors surface before training starts
    return logger


def end_run(logger, error: BaseException | None) -> None:
    """Close a run: FINISHED without `error`; KILLED for a signal (SIGTERM, SIGINT);
    FAILED otherwise, with the reason as the tag `failure_reason`."""
    if (ml := _mlflow(logger)) is None:
        return
    if error is None:
        ml.finalize("success")
        return
    killed = isinstance(error, (KeyboardInterrupt, SystemExit))
    if isinstance(error, SystemExit):
        reason = f"terminated ({getattr(error, 'reason', f'exit status {error.code}')})"
    else:
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    ml.experiment.set_tag(ml.run_id, "failure_reason", reason)
    ml.experiment.set_terminated(ml.run_id, "KILLED" if killed else "FAILED")


def _mlflow(logger):
    from pytorch_lightning.loggers import MLFlowLogger

    return logger if isinstance(logger, MLFlowLogger) else None


def set_tags(logger, tags: dict[str, Any]) -> None:
    if (ml := _mlflow(logger)) is not None:
        for key, value in tags.items():
            ml.experiment.set_tag(ml.run_id, key, str(value))


def log_metrics(logger, metrics: dict[str, float], step: int | None = None) -> None:
    if logger:
        logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(logger, path: str | Path, artifact_path: str | None = None) -> None:
    if (ml := _mlflow(logger)) is not None:
        ml.experiment.log_artifact(ml.run_id, str(path), artifact_path)


def log_metric_series(logger, rows: list[tuple[dict[str, float], int]]) -> None:
    """Log many (metrics, step) rows at once: one MLflow `log_batch` per 1,000 values instead
    of one store transaction per row (a batched member's whole history is logged after
    training: hundreds of rows)."""
    if not rows or not logger:
        return
    if (ml := _mlflow(logger)) is None:
        for metrics, step in rows:
            log_metrics(logger, metrics, step=step)
        return
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    values = [
        Metric(key, float(value), stamp, int(step))
        for metrics, step in rows
        for key, value in metrics.items()
    ]
    for start in range(0, len(values), 1000):  # MLflow's limit per batch
        ml.experiment.log_batch(ml.run_id, metrics=values[start : start + 1000])


def log_params(logger, params: dict[str, Any]) -> None:
    if (ml := _mlflow(logger)) is not None:
        ml.log_hyperparams(params)


def log_dataset_input(logger, name: str, description: dict[str, Any], context: str = "training"):
    """Log the data set a run trained on as an MLflow dataset input (the run page's "Datasets"
    and the runs table's Dataset column): a metadata-only dataset named `name`, whose profile is
    `description` (resolution, noise std, sizes) and whose source is the loader's config."""
    if (ml := _mlflow(logger)) is None:
        return
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = CodeDatasetSource(tags={"loader": "src.domain.data.load_dataset", **description})
    # MLflow's own digest and source of a metadata-only dataset, with our profile added
    # (MetaDataset has no profile of its own).
    meta = MetaDataset(source, name=name).to_dict()
    entity = Dataset(
        name=meta["name"],
        digest=meta["digest"],
        source_type=meta["source_type"],
        source=meta["source"],
        schema=meta.get("schema"),
        profile=json.dumps(description, default=str),
    )
    ml.experiment.log_inputs(
        ml.run_id,
        datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])],
    )


# --- one run for a whole stage's outcome ----------------------------------------------------


def log_summary_run(
    configured_uri: str | None,
    experiment_name: str,
    run_name: str,
    *,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, Any] | None = None,
    artifacts: Sequence[tuple[str | Path, str | None]] = (),
    dicts: dict[str, Any] | None = None,
) -> str:
    """One MLflow run that records what a pipeline stage concluded (the theory checks, the
    report): params, metrics (a non-finite value as 1e300: MLflow rejects it, and a failed
    computation must stay visible), tags, files [(path, artifact folder)] and JSON documents
    {artifact file: payload}. The store is $MLFLOW_TRACKING_URI, else `configured_uri`;
    returns the run's id."""
    import mlflow

    uri = prepare_store(environment_first_uri(configured_uri), experiment_name)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_name)
    with mlflow.start_run(run_name=run_name, tags=process_tags()) as run:
        if tags:
            mlflow.set_tags(tags)
        if params:
            mlflow.log_params(params)
        if metrics:
            mlflow.log_metrics({k: v if math.isfinite(v) else 1e300 for k, v in metrics.items()})
        for path, folder in artifacts:
            mlflow.log_artifact(str(path), artifact_path=folder)
        for name, payload in (dicts or {}).items():
            mlflow.log_dict(payload, name)
        return run.info.run_id


# --- a parent run per Hydra multirun ---------------------------------------------------------

PARENT_RUN_FILE = "mlflow_parent_run.json"  # in the sweep directory, read by each job
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under its parent


def start_parent_run(uri: str, experiment_name: str, name: str, tags: dict[str, Any]) -> str:
    """Create the (RUNNING) run a multirun's jobs are nested under; return its id."""
    import mlflow

    uri = prepare_store(uri, experiment_name)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    run = client.create_run(
        experiment.experiment_id,
        run_name=name,
        tags={k: str(v) for k, v in {**tags, **process_tags()}.items()},
    )
    return run.info.run_id


def end_parent_run(uri: str, run: str, metrics: dict[str, float], failed: bool) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(uri))
    for key, value in metrics.items():
        client.log_metric(run, key, float(value))
    client.set_terminated(run, "FAILED" if failed else "FINISHED")


def run_id(logger) -> str | None:
    ml = _mlflow(logger)
    return None if ml is None else ml.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tracking-store maintenance")
    parser.add_argument("command", choices=["close-stale"])
    parser.add_argument("--uri", default=None, help="default: $MLFLOW_TRACKING_URI or mlflow.db")
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.uri)
    try:
        closed = open_store(uri)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"closed {len(closed)} stale run(s) in {uri}" + "".join(f"\n  {r}" for r in closed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
