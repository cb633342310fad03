"""Shared fixtures: composing the real Hydra configs and temporary MLflow stores."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from support import CONF, FAST


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> DictConfig from conf/ (Hydra's own compose API)."""

    def _compose(*overrides: str, fast: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*(FAST if fast else []), *overrides])

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A fresh sqlite MLflow store; MLFLOW_TRACKING_URI points at it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
