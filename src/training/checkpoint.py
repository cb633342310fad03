"""A run's files on disk: the checkpoint (final weights, with the run's config, status and
history) and the top Hessian eigenvector. Written at the end of a run (src.training.callbacks)
and read back here by whatever measures saved minima (the flat-vs-sharp stage, the linear check),
so the file layout is known in one place.

Each is serialized in memory and written atomically by src.core.files.write_bytes: a full disk
gives a one-line error naming the file and leaves no truncated checkpoint behind (torch.save
straight to a path fails with an iostream error naming neither, after writing part of it)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from src.core.files import write_bytes
from src.domain.models import MLP

CHECKPOINT_FILE = "model.pt"
EIGENVECTOR_FILE = "hessian_eigenvector.pt"
DENSITY_FILE = "hessian_density.json"  # the eigenvalue density (JSON: src.core.files)


def save_torch(path: str | Path, payload: Any) -> Path:
    """`torch.save(payload)` to `path`, written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes(path, buffer.getvalue())


def save_checkpoint(path: str | Path, model: torch.nn.Module, **record: Any) -> Path:
    """The model's state dict and the run's `record` (config, status, reason, metrics,
    history) in one file."""
    return save_torch(path, {"state_dict": model.state_dict(), **record})


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The final weights stored by `save_checkpoint`, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def load_model(path: str | Path, model_cfg: Mapping[str, Any]) -> MLP:
    """The MLP saved at `path`: its layer sizes from the stored weights, its activation and
    bias from the run's `model` config."""
    state = load_state_dict(path)
    weights = [state[k] for k in sorted(state) if k.endswith("weight")]
    model = MLP(
        weights[0].shape[1],
        weights[-1].shape[0],
        int(model_cfg["depth"]),
        weights[0].shape[0],
        model_cfg["activation"],
        model_cfg["bias"],
    )
    model.load_state_dict(state)
    return model


def save_eigenvector(path: str | Path, eigenvector: torch.Tensor, eigenvalue: float) -> Path:
    return save_torch(path, {"eigenvector": eigenvector.cpu(), "eigenvalue": eigenvalue})


def load_eigenvector(path: str | Path) -> torch.Tensor:
    """The top Hessian eigenvector (flat, over the model's parameters) saved by the analysis."""
    return torch.load(path, map_location="cpu", weights_only=False)["eigenvector"]
