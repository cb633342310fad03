"""The one place where a composed training config is checked before anything runs.

Hydra reports unknown groups and keys itself; this module rejects values that compose but make
no sense (depth < 1, lr <= 0, a CUDA graph without CUDA, an analysis setting the model's size
rules out, a key the chosen optimizer does not use, ...), each with a one-line message that
names the key, before any data is loaded or any run created. `validate` returns a `RunConfig`;
code below it takes that and never re-checks.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.core.errors import UserError
from src.domain.models import parameter_count

log = logging.getLogger(__name__)


class ConfigValueError(UserError, ValueError):
    """A config value is invalid. str(err) is one line: '<key>: <reason> (got <value>)'."""

    def __init__(self, key: str, reason: str, value: Any = ...):
        got = "" if value is ... else f" (got {value!r})"
        super().__init__(f"{key}: {reason}{got}")
        self.key = key


_DATASETS = ("mnist5k", "mnist", "fashion_mnist", "synthetic")
_OPTIMIZERS = ("sgd", "adam", "sam")
_SAM_BASES = ("sgd", "adam")  # what optimizer=sam wraps (optimizer.base)
# The keys each optimizer reads (besides `name`); SAM reads its own and its base's.
_OPTIMIZER_KEYS = {
    "sgd": ("lr", "momentum", "weight_decay"),
    "adam": ("lr", "betas", "eps", "weight_decay"),
    "sam": ("lr", "rho", "base", "weight_decay"),
}
# conf/optimizer/sam.yaml holds both bases' settings, so that `optimizer.base=adam` alone
# switches; the other base's values there are the preset's, not a user's.
_SAM_PRESET = Path(__file__).resolve().parents[2] / "conf" / "optimizer" / "sam.yaml"
_ACTIVATIONS = ("relu", "linear")
_INITS = ("identity", "he")
_DTYPES = ("float32", "float64")
_METHODS = ("auto", "lanczos", "lanczos_torch", "power")


class RunConfig(dict):
    """A resolved training config (plain nested dicts) that has passed `validate`."""


def _get(cfg: Mapping, key: str, default: Any = ...) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is ...:
                raise ConfigValueError(key, "missing")
            return default
        node = node[part]
    return node


def _number(cfg: Mapping, key: str, **bounds):
    """The number at `key`, checked by `_check_number`."""
    return _check_number(key, _get(cfg, key), **bounds)


def _check_number(
    key: str, value: Any, *, minimum=None, exclusive=False, integer=False, below=None
):
    """`value` (reported as `key`) is a finite number, an integer if asked, >= (or >) `minimum`
    and < `below` where given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigValueError(key, "must be a number", value)
    if not math.isfinite(value):
        raise ConfigValueError(key, "must be finite", value)
    if integer and int(value) != value:
        raise ConfigValueError(key, "must be an integer", value)
    if minimum is not None:
        if exclusive and not value > minimum:
            raise ConfigValueError(key, f"must be > {minimum}", value)
        if not exclusive and not value >= minimum:
            raise ConfigValueError(key, f"must be >= {minimum}", value)
    if below is not None and not value < below:
        raise ConfigValueError(key, f"must be < {below:g}", value)
    return value


def _choice(cfg: Mapping, key: str, choices: tuple[str, ...]) -> str:
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigValueError(key, f"must be one of {', '.join(choices)}", value)
    return value


def validate(cfg: DictConfig | Mapping) -> RunConfig:
    """Check a composed config; return it resolved as a plain dict (a `RunConfig`, returned as
    it is if `cfg` already is one).

    Raises ConfigValueError (one line, naming the key) on the first invalid value.
    """
    if isinstance(cfg, RunConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as err:  # interpolation to a missing key, bad resolver, ...
            raise ConfigValueError("config", str(err).splitlines()[0]) from err

    dataset = _choice(cfg, "dataset.name", _DATASETS)
    if dataset == "synthetic":
        for key in ("dataset.d_x", "dataset.d_y", "dataset.n", "dataset.n_val"):
            _number(cfg, key, minimum=1, integer=True)
        _choice(cfg, "dataset.teacher", ("gaussian", "spd"))
    _number(cfg, "dataset.noise_std", minimum=0)
    if dataset != "synthetic":
        resolution = _number(cfg, "dataset.resolution", minimum=1, integer=True)
        if 28 % resolution:
            raise ConfigValueError(
                "dataset.resolution", "must divide 28 (28, 14, 7, 4, 2, 1)", resolution
            )
    if dataset == "mnist5k":
        _number(cfg, "dataset.n_train", minimum=1, integer=True)
    if _get(cfg, "dataset.limit_train", None) is not None:
        _number(cfg, "dataset.limit_train", minimum=1, integer=True)

    _number(cfg, "model.depth", minimum=1, integer=True)
    _choice(cfg, "model.activation", _ACTIVATIONS)
    if _get(cfg, "model.width", None) is not None:
        _number(cfg, "model.width", minimum=1, integer=True)
    _choice(cfg, "init.name", _INITS)

    optimizer = _choice(cfg, "optimizer.name", _OPTIMIZERS)
    _number(cfg, "optimizer.lr", minimum=0, exclusive=True)
    _number(cfg, "optimizer.weight_decay", minimum=0)
    base = optimizer
    if optimizer == "sam":  # the ascent radius, then the base optimizer's own settings
        _number(cfg, "optimizer.rho", minimum=0, exclusive=True)
        base = _choice(cfg, "optimizer.base", _SAM_BASES)
    # SAM's settings of both bases are checked: a bad value is an error even where unused.
    checked = _SAM_BASES if optimizer == "sam" else (optimizer,)
    if "sgd" in checked:
        _number(cfg, "optimizer.momentum", minimum=0, below=1.0)
    if "adam" in checked:
        betas = _get(cfg, "optimizer.betas")
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise ConfigValueError("optimizer.betas", "must be two numbers", betas)
        for i, beta in enumerate(betas):
            _check_number(f"optimizer.betas[{i}]", beta, minimum=0, below=1.0)
        _number(cfg, "optimizer.eps", minimum=0, exclusive=True)
    _check_optimizer_keys(cfg["optimizer"], optimizer, base)
    _number(cfg, "batch_size", minimum=1, integer=True)
    _number(cfg, "seed", minimum=0, integer=True)

    _number(cfg, "trainer.max_epochs", minimum=1, integer=True)
    # The step loop is ours (src.training.steps): Lightning's precision plugins and batch limits would
    # not reach it, so only settings it honours are accepted.
    if str(_get(cfg, "trainer.precision", "32-true")) not in ("32-true", "32"):
        raise ConfigValueError(
            "trainer.precision", "must be 32-true (fp32; see performance.tf32)",
            _get(cfg, "trainer.precision"),
        )  # fmt: skip
    if _get(cfg, "trainer.limit_train_batches", 1.0) not in (1, 1.0):
        raise ConfigValueError(
            "trainer.limit_train_batches", "must be 1.0 (use dataset.limit_train or max_steps)",
            _get(cfg, "trainer.limit_train_batches"),
        )  # fmt: skip
    graph = _get(cfg, "performance.cuda_graph")
    if isinstance(graph, bool):  # YAML's true/false
        cfg["performance"]["cuda_graph"] = graph = str(graph).lower()
    _choice(cfg, "performance.cuda_graph", ("auto", "true", "false"))
    _check_capture_possible(cfg)
    if not isinstance(_get(cfg, "performance.tf32"), bool):
        raise ConfigValueError(
            "performance.tf32", "must be true or false", _get(cfg, "performance.tf32")
        )
    if _get(cfg, "progress", None) is not None:  # console only: not part of a result's key
        _choice(cfg, "progress.mode", ("auto", "bar", "lines", "off"))
        _number(cfg, "progress.every_n_epochs", minimum=1, integer=True)
    _number(cfg, "callbacks.convergence.window", minimum=1, integer=True)
    _number(cfg, "callbacks.convergence.tol", minimum=0, exclusive=True)
    _number(cfg, "callbacks.convergence.grad_tol", minimum=0, exclusive=True)
    _number(cfg, "callbacks.convergence.min_epochs", minimum=1, integer=True)
    if _get(cfg, "callbacks.convergence.affine_margin", None) is not None:
        _number(cfg, "callbacks.convergence.affine_margin", minimum=0)
    if not isinstance(_get(cfg, "callbacks.convergence.stop_above_affine", False), bool):
        raise ConfigValueError(
            "callbacks.convergence.stop_above_affine", "must be true or false",
            _get(cfg, "callbacks.convergence.stop_above_affine"),
        )  # fmt: skip
    _number(cfg, "callbacks.divergence.factor", minimum=1, exclusive=True)
    _number(cfg, "callbacks.log_every_n_epochs", minimum=1, integer=True)
    if _get(cfg, "callbacks.convergence.stability_band", None) is not None:
        band = _number(cfg, "callbacks.convergence.stability_band", minimum=0)
        if band >= 1:  # r = lr x lambda / limit: a band of 1 would call r = 0 the edge
            raise ConfigValueError("callbacks.convergence.stability_band", "must be < 1", band)

    if _get(cfg, "analysis.enabled", False):
        _choice(cfg, "analysis.sharpness.method", _METHODS)
        _choice(cfg, "analysis.sharpness.dtype", _DTYPES)
        _number(cfg, "analysis.sharpness.tol", minimum=0, exclusive=True)
        _number(cfg, "analysis.sharpness.max_hvps", minimum=2, integer=True)
        _number(cfg, "analysis.sharpness.k", minimum=1, integer=True)
        _number(cfg, "analysis.sharpness.every_n_epochs", minimum=0, integer=True)
        if _get(cfg, "analysis.sharpness.polish_steps", None) is not None:
            _number(cfg, "analysis.sharpness.polish_steps", minimum=0, integer=True)
        if _get(cfg, "analysis.sharpness.chunk_size", None) not in (None, "auto"):
            _number(cfg, "analysis.sharpness.chunk_size", minimum=1, integer=True)
        share = _number(cfg, "analysis.sharpness.memory_share", minimum=0, exclusive=True)
        if share > 1:  # (0, 1]: the whole free memory is allowed, unlike `below`
            raise ConfigValueError("analysis.sharpness.memory_share", "must be <= 1", share)
        if _get(cfg, "analysis.trace.enabled", False):
            _number(cfg, "analysis.trace.tol", minimum=0, exclusive=True)
            low = _number(cfg, "analysis.trace.min_probes", minimum=2, integer=True)
            _number(cfg, "analysis.trace.max_probes", minimum=low, integer=True)
        if _get(cfg, "analysis.density.enabled", False):
            _number(cfg, "analysis.density.probes", minimum=1, integer=True)
            _number(cfg, "analysis.density.lanczos_steps", minimum=2, integer=True)
            _number(cfg, "analysis.density.broadening", minimum=0, exclusive=True)
            _number(cfg, "analysis.density.grid_points", minimum=10, integer=True)
        if _get(cfg, "analysis.gains.enabled", False):
            _number(cfg, "analysis.gains.restarts", minimum=1, integer=True)
            _number(cfg, "analysis.gains.steps", minimum=1, integer=True)
        _check_analysis_fits_model(cfg)

    logger = _choice(cfg, "logger.name", ("mlflow", "none"))
    if logger == "mlflow" and not _get(cfg, "logger.tracking_uri", None):
        raise ConfigValueError("logger.tracking_uri", "must be set for logger=mlflow")
    return RunConfig(cfg)


def data_dimensions(cfg: Mapping) -> tuple[int, int]:
    """(d_x, d_y) of the configured data set, from the config alone: the synthetic problem's
    d_x and d_y, or resolution^2 pixels in and out for the digits."""
    if _get(cfg, "dataset.name") == "synthetic":
        return int(_get(cfg, "dataset.d_x")), int(_get(cfg, "dataset.d_y"))
    pixels = int(_get(cfg, "dataset.resolution")) ** 2
    return pixels, pixels


def _check_analysis_fits_model(cfg: Mapping) -> None:
    """What the analysis asks of the Hessian must fit its size N (the model's parameters):
    k < N eigenvalues (the solvers' own bound, otherwise met only after training), and at
    most N Lanczos steps per density probe (Lanczos on N dimensions ends after N steps: a
    larger request would run N steps per probe, unbounded by anything the user meant)."""
    n = parameter_count(
        *data_dimensions(cfg),
        int(_get(cfg, "model.depth")),
        _get(cfg, "model.width", None),
        bool(_get(cfg, "model.bias", True)),
    )
    size = f"the model's number of parameters ({n})"
    k = _get(cfg, "analysis.sharpness.k")
    if k >= n:
        raise ConfigValueError("analysis.sharpness.k", f"must be < {size}", k)
    if _get(cfg, "analysis.density.enabled", False):
        steps = _get(cfg, "analysis.density.lanczos_steps")
        if steps > n:
            raise ConfigValueError("analysis.density.lanczos_steps", f"must be <= {size}", steps)


@functools.lru_cache(maxsize=1)
def _sam_preset() -> dict[str, Any]:
    if not _SAM_PRESET.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(_SAM_PRESET).optimizer, resolve=False)


_WARNED: set[str] = set()


def _check_optimizer_keys(settings: Mapping, optimizer: str, base: str) -> None:
    """A key that the chosen optimizer never reads (`+optimizer.betas=...` with sgd) is an
    error naming it and the optimizer. With optimizer=sam, the other base's keys are in the
    preset (sam.yaml carries both, so `optimizer.base` alone switches), so the composed config
    cannot tell a user's value from the preset's: a value that differs from the preset's is
    a warning (once per process), not an error: a sweep over `optimizer.base=sgd,adam` with
    Adam's betas set is meant, and its sgd jobs must still run."""
    used = set(_OPTIMIZER_KEYS[optimizer]) | set(_OPTIMIZER_KEYS[base])
    known = (
        used | {k for b in _SAM_BASES for k in _OPTIMIZER_KEYS[b]} if optimizer == "sam" else used
    )
    named = f"optimizer={optimizer}" + (
        f" with optimizer.base={base}" if optimizer == "sam" else ""
    )
    for key in settings:
        if key == "name" or key in used:
            continue
        if key not in known:
            raise ConfigValueError(
                f"optimizer.{key}",
                f"is not used by {named} (its keys: {', '.join(sorted(used))})",
                settings[key],
            )
        preset = _sam_preset().get(key, settings[key])
        message = (
            f"optimizer.{key}={settings[key]!r} is not used by {named}: ignored "
            f"(it applies with optimizer.base={'adam' if base == 'sgd' else 'sgd'})"
        )
        if settings[key] != preset and message not in _WARNED:
            _WARNED.add(message)
            log.warning(message)


def _check_capture_possible(cfg: Mapping) -> None:
    """performance.cuda_graph=true needs training on a CUDA device."""
    if _get(cfg, "performance.cuda_graph") != "true":
        return
    accelerator = str(_get(cfg, "trainer.accelerator", "auto"))
    if accelerator == "cpu" or not torch.cuda.is_available():
        raise ConfigValueError(
            "performance.cuda_graph",
            f"true needs a CUDA device (trainer.accelerator={accelerator}, "
            f"CUDA available: {torch.cuda.is_available()})",
        )


def batching_enabled(batch_models: str | bool) -> bool:
    """compute.batch_models: "auto" batches grid runs when a GPU is present (on CPUs K nets
    cost about K times one), or true / false."""
    value = str(batch_models).lower()
    if value not in ("auto", "true", "false"):
        raise ConfigValueError("compute.batch_models", "must be auto, true or false", batch_models)
    if value == "auto":
        return torch.cuda.is_available()
    return value == "true"


def check_model_fits_data(cfg: Mapping, d_x: int, d_y: int, n_train: int | None = None) -> None:
    """Assumption A1: every hidden width is at least min(d_x, d_y); and a batch is no larger
    than the training set (a larger one would silently be the full set at every step)."""
    if n_train is not None and _get(cfg, "batch_size") > n_train:
        raise ConfigValueError(
            "batch_size", f"must be <= the training set size ({n_train})", _get(cfg, "batch_size")
        )
    width = _get(cfg, "model.width", None)
    if width is not None and _get(cfg, "model.depth") > 1 and width < min(d_x, d_y):
        raise ConfigValueError(
            "model.width", f"must be >= min(d_x, d_y) = {min(d_x, d_y)} (assumption A1)", width
        )


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'model': {'depth': 6}} -> {'model.depth': 6}; lists become strings (MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat
