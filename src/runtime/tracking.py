"""MLflow plumbing shared by training, analysis and the pipeline stages.

Every entry point that opens a tracking store goes through `prepare_store` first: it checks
that the store can be used (one line naming the URI and the cause otherwise, within seconds),
creates and migrates a sqlite store under an inter-process lock (jobs started together on a new
store would otherwise race MLflow's schema migration and can leave it half-migrated), creates
the experiment, and closes runs left RUNNING by processes of this host that no longer exist.

A new experiment of a sqlite store keeps its artifacts beside the store, in
`<store folder>/mlartifacts/<experiment>/` (MLflow's default is `./mlruns` of whatever
directory the first run started in), unless `logger.artifact_location` names a place.

    python -m src.runtime.tracking close-stale [--uri URI]     # that last step, on demand
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import re
import signal
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
from src.core.files import write_failed
from src.core.signals import deferred

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # beside a sqlite store: its experiments' artifacts
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


def read_only_part(path: Path) -> str | None:
    """What makes the sqlite store at `path` read-only (its file system, its file, or its
    folder, where sqlite writes its journal), as words for an error; None if nothing does.
    Asks the kernel (statvfs, access), so root with its capabilities passes all three."""
    folder = path.parent
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"the file system of {folder} is mounted read-only"
    if path.exists() and not os.access(path, os.W_OK):
        return f"the database file {path} is read-only"
    if not os.access(folder, os.W_OK):
        return f"its folder {folder} is read-only (sqlite writes its journal beside the database)"
    return None


def check_writable(uri: str) -> None:
    """Fail in one line when a local store cannot be written: a missing directory, a file that
    is not a database, a read-only file, directory or file system, before anything is created
    there. sqlite itself is asked too (a write in a transaction that is rolled back), so the
    answer holds for root, and for causes the kernel's permissions do not show."""
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
    if (read_only := read_only_part(path)) is not None:
        raise TrackingError(f"logger.tracking_uri: cannot use {uri}: {read_only}")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            db.execute("PRAGMA schema_version")  # "file is not a database" surfaces here
            db.execute("BEGIN IMMEDIATE")  # a write lock
            db.execute("CREATE TABLE _flatminima_write_probe (x)")  # a write: read-only fails
            db.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        if "locked" in str(err):  # another process is writing to it: it is writable
            return
        cause = read_only_part(path) or str(err)
        raise TrackingError(f"logger.tracking_uri: cannot use {uri}: {cause}") from err
    except sqlite3.Error as err:
        raise TrackingError(f"logger.tracking_uri: cannot use {uri}: {err}") from err


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An inter-process lock on a local sqlite store (`<db>.lock` beside it), held while the
    store is prepared (`open_store`, which closes stale runs) and while a run is closed
    (`end_run`, `end_parent_run`): a process that closes its run and exits between the stale
    check's search and its look at the process would otherwise have its FINISHED run
    overwritten with FAILED."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    try:
        handle = open(f"{path}.lock", "a")  # closed by the `with` below
    except OSError as err:
        raise TrackingError(
            f"logger.tracking_uri: cannot use {uri}: cannot open its lock file {path}.lock "
            f"({err.strerror})"
        ) from err
    with handle:
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


def artifact_location(uri: str, experiment_name: str, configured: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: `configured` (logger.artifact_location) if
    set; beside a sqlite store, `<store folder>/mlartifacts/<experiment>`; else None (the
    store's own default: a server's artifact root, a file store's folder)."""
    if configured:
        return resolve_tracking_uri(configured) if "://" not in configured else configured
    path = sqlite_path(uri)
    if path is None:
        return None
    folder = re.sub(r"[^\w.-]+", "_", experiment_name).strip("._") or "experiment"
    return (path.parent / ARTIFACTS_DIR / folder).as_uri()


_PREPARED: set[tuple[str, str | None]] = set()


def prepare_store(
    uri: str, experiment_name: str | None = None, artifact_root: str | None = None
) -> str:
    """Make the store at `uri` ready for this process (`open_store`); return the absolute URI.
    Cheap after the first call for a (uri, experiment)."""
    uri = resolve_tracking_uri(uri)
    if (uri, experiment_name) not in _PREPARED:
        open_store(uri, experiment_name, artifact_root)
        _PREPARED.add((uri, experiment_name))
    return uri


def open_store(
    uri: str, experiment_name: str | None = None, artifact_root: str | None = None
) -> list[str]:
    """Check the store at the absolute `uri`, create and migrate it under the lock, create the
    experiment (its artifacts: `artifact_location`, `artifact_root` being the configured
    one), and close stale runs (see the module docstring); return the closed runs' ids."""
    check_reachable(uri)
    check_writable(uri)
    import mlflow

    with store_lock(uri):
        try:
            client = mlflow.MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # creates and migrates the schema
            if experiment_name and client.get_experiment_by_name(experiment_name) is None:
                client.create_experiment(
                    experiment_name, artifact_location(uri, experiment_name, artifact_root)
                )
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
        # Its process may have closed the run and exited since the search: read it again.
        # (With a sqlite store the owner closes it under the same lock: `close_run`.)
        if client.get_run(run.info.run_id).info.status != "RUNNING":
            continue
        reason = f"process {tags['pid']} on {host} ended without closing the run"
        client.set_tag(run.info.run_id, "failure_reason", reason)
        client.set_terminated(run.info.run_id, "FAILED")
        log.warning("MLflow run %s: %s; marked FAILED", run.info.run_id, reason)
        stale.append(run.info.run_id)
    return stale


class SignalSafeClient:
    """An MlflowClient whose every call holds SIGTERM / SIGINT until it returns
    (src.core.signals.deferred): Python raises a signal's exception wherever the main thread
    is, and one raised inside a sqlite transaction leaves the connection in it, the store
    locked for every other process (two workers stopped together: "database is locked")."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            with deferred():
                return attr(*args, **kwargs)

        return call


def make_mlflow_logger(
    tracking_uri: str,
    experiment_name: str,
    run_name: str,
    tags: dict[str, Any],
    *,
    artifact_root: str | None = None,
):
    """A Lightning MLFlowLogger whose run exists once this returns (the store is prepared
    first: `prepare_store`)."""
    from pytorch_lightning.loggers import MLFlowLogger

    uri = prepare_store(tracking_uri, experiment_name, artifact_root)
    logger = MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        tags={k: str(v) for k, v in {**tags, **process_tags()}.items()},
        log_model=False,
    )
    # Every call Lightning and this project make through the logger goes through this client.
    logger._mlflow_client = SignalSafeClient(logger._mlflow_client)
    _ = logger.run_id  # create the run now, so errors surface before training starts
    return logger


def _signal_exit(error: BaseException) -> bool:
    """A signal ended the process: Ctrl-C, or an exit with a signal's status (128 + n)."""
    if isinstance(error, KeyboardInterrupt):
        return True
    return isinstance(error, SystemExit) and isinstance(error.code, int) and error.code > 128


def failure_reason(error: BaseException) -> str:
    """The `failure_reason` of a run that `error` ended: "terminated (SIGTERM)" for a signal,
    the message of an exit with one, a user error's own line, else the exception's type and
    first line."""
    if _signal_exit(error):
        code = getattr(error, "code", 128 + signal.SIGINT)  # KeyboardInterrupt: Ctrl-C
        with contextlib.suppress(ValueError):
            code = signal.Signals(code - 128).name
        return f"terminated ({getattr(error, 'reason', code)})"
    if isinstance(error, SystemExit):
        code = error.code
        return code if isinstance(code, str) else f"exit status {code}"
    lines = str(error).strip().splitlines()
    if isinstance(error, UserError) and lines:
        return lines[0]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def closed_status(error: BaseException | None) -> str:
    """FINISHED without an error, KILLED for a signal, FAILED otherwise."""
    if error is None:
        return "FINISHED"
    return "KILLED" if _signal_exit(error) else "FAILED"


def end_run(logger, error: BaseException | None) -> None:
    """Close a run: FINISHED without `error`; KILLED for a signal (SIGTERM, SIGINT);
    FAILED otherwise, with the reason as the tag `failure_reason`. A signal that comes
    meanwhile waits until the run is closed (src.core.signals.deferred)."""
    if (ml := _mlflow(logger)) is None:
        return
    with deferred(), store_lock(ml._tracking_uri):
        if error is None:
            ml.finalize("success")
            return
        ml.experiment.set_tag(ml.run_id, "failure_reason", failure_reason(error))
        ml.experiment.set_terminated(ml.run_id, closed_status(error))


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
    """Copy `path` into the run's artifacts; a local artifact store that cannot take it (a
    full disk) is a one-line error naming the copy, which is removed."""
    if (ml := _mlflow(logger)) is None:
        return
    try:
        ml.experiment.log_artifact(ml.run_id, str(path), artifact_path)
    except OSError as err:
        root = ml.experiment.get_run(ml.run_id).info.artifact_uri
        target = f"{root}/{artifact_path or '.'}/{Path(path).name}"
        if root.startswith(("file:", "/")):  # a local store: no partial copy stays there
            target = Path(urllib.request.url2pathname(root.removeprefix("file:")))
            target = target / (artifact_path or "") / Path(path).name
            target.unlink(missing_ok=True)
        raise write_failed(target, err) from err


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
    """Create the (RUNNING) run a multirun's jobs are nested under; return its id (the store
    and experiment are prepared: `prepare_store`)."""
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


def end_parent_run(
    uri: str, run: str, metrics: dict[str, float], status: str, reason: str | None = None
) -> None:
    """Close a multirun's parent run with `status` (FINISHED, FAILED, KILLED), its job counts
    as metrics and, when given, `reason` as its `failure_reason`."""
    import mlflow

    uri = resolve_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    with deferred(), store_lock(uri):
        for key, value in metrics.items():
            client.log_metric(run, key, float(value))
        if reason:
            client.set_tag(run, "failure_reason", reason)
        client.set_terminated(run, status)


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
