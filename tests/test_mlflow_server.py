"""A real `mlflow server` on 127.0.0.1: train a tiny run over HTTP and read it back."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from src.training.run import train

pytestmark = pytest.mark.slow  # end to end: see `make test-fast`


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin) if mlflow_bin.exists() else shutil.which("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGTERM)
            pytest.fail(
                "mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:]
            )
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def test_train_against_real_server_round_trip(compose_cfg, tmp_path, mlflow_server, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_cfg(
        "depth=2",
        "trainer.max_epochs=2",
        "logger=mlflow",
        f"logger.tracking_uri={mlflow_server}",
        "logger.experiment_name=server-roundtrip",
    )
    result = train(cfg, output_dir=tmp_path / "run")

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("server-roundtrip")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == result.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["model.depth"] == "2"
    assert run.data.tags["status"] == result.status
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.value for m in history] == pytest.approx(result.history["train_loss"])
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]
    local = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / "back"))
    assert Path(local).read_bytes() == (tmp_path / "run" / "model.pt").read_bytes()
