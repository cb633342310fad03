"""The full-data training loss of a model as a function of its flat parameter vector.

Everything in `src.analysis` that evaluates the loss, its gradient or Hessian-vector products
goes through `LossLandscape`, which

* evaluates the model with `torch.func.functional_call`, so the caller's parameters are never
  mutated (a float64 or other-device request runs on a deep copy instead);
* splits the fixed training tensors into chunks once and reuses them, weighting chunk c by
  n_c / n so that the sum equals the single-batch mean loss up to float rounding (this assumes
  `loss_fn` is a mean over samples, like `F.mse_loss(..., reduction="mean")`);
* runs the model in eval mode and restores every submodule's train/eval flag afterwards;
* with `chunk_size="auto"`, sizes the chunks from the free memory of the device
  (`auto_chunk_size`).

Flat vectors follow the order of `torch.nn.utils.parameters_to_vector(model.parameters())`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HVP_BACKENDS = ("autograd", "func")
# Peak memory of one HVP over a chunk, in multiples of (input + every leaf module's output) per
# sample. Measured as the peak-RSS increase of one HVP on CPU (784-wide ReLU MLPs, 8192
# samples): autograd 3.9x (depth 2) and 5.3x (depth 6), func 6.7x and 9.0x. 12 covers both
# backends with room for allocator fragmentation and activations that are not modules
# (`torch.relu` in `MLP`).
HVP_MEMORY_FACTOR = 12
# Share of the free memory one chunk may use; the rest is left to the parameter-sized vectors.
# Memory a solver will need besides (the "lanczos_torch" Krylov basis) is set aside first
# (`reserve_bytes`). Processes that share one GPU each see the same free memory: give each
# 1/N of this share (`memory_share`).
CHUNK_MEMORY_SHARE = 0.5


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag on exit."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def resolve_device(device: torch.device | str | None, default: torch.device) -> torch.device:
    """`device` with its index filled in ("cuda" -> "cuda:0"), so it compares equal to a
    parameter's device; `default` if None."""
    if device is None:
        return default
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def norm64(vector: torch.Tensor) -> torch.Tensor:
    """Euclidean norm accumulated in float64 (0-dim float64 tensor, no host sync).

    torch's float32 `norm`/`dot` on CPU go to BLAS with float32 accumulation: for 1.2M entries
    they were off by 1e-5 relative, for 7M by 2e-4, enough to bias a Rayleigh quotient far
    beyond the tolerances used here."""
    return torch.linalg.vector_norm(vector, dtype=torch.float64)


def dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product accumulated in float64 (0-dim float64 tensor); see `norm64`."""
    return torch.dot(a.to(torch.float64), b.to(torch.float64))


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device`: on CUDA what the driver reports free
    (`torch.cuda.mem_get_info`) plus what PyTorch's caching allocator holds without using it
    (reserved - allocated: the driver counts it as taken, yet this process can reuse it, so
    without it auto chunks would shrink run after run in one process); the available physical
    RAM on Linux CPUs; None where unknown."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + max(0, cached)
    if device.type == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # not Linux
            return None
    return None


def activations_per_sample(model: nn.Module, sample: torch.Tensor) -> int:
    """Entries of the input plus the outputs of every leaf module, per sample, from a forward
    pass over `sample` (a batch; its first dimension counts the samples)."""
    counted = [sample.numel()]

    def count(module, args, output) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        counted.extend(o.numel() for o in outputs if isinstance(o, torch.Tensor))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad(), eval_mode(model):
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return max(1, -(-sum(counted) // len(sample)))


def auto_chunk_size(
    model: nn.Module,
    sample: torch.Tensor,
    num_samples: int,
    *,
    free_bytes: int | None = None,
    reserve_bytes: int = 0,
    memory_share: float = CHUNK_MEMORY_SHARE,
) -> int:
    """Samples per HVP chunk such that one chunk needs at most `memory_share` of the memory of
    the model's device that is free once `reserve_bytes` (e.g. a Lanczos basis) are set aside,
    capped at `num_samples` (and at least 1).

    The HVP's peak memory per sample is estimated as `HVP_MEMORY_FACTOR` x
    `activations_per_sample(model, sample)` x the parameters' element size, i.e. a double
    backward keeps a small multiple of the forward's activations. `free_bytes` defaults to
    `free_memory` (CUDA: free plus cached-but-unused; CPU: available RAM); where unknown, one
    chunk.
    """
    if not 0 < memory_share <= 1:
        raise ValueError(f"memory_share must be in (0, 1], got {memory_share}")
    first = next(model.parameters())
    if free_bytes is None:
        free_bytes = free_memory(first.device)
    if free_bytes is None:
        return num_samples
    budget = memory_share * max(0, free_bytes - reserve_bytes)
    per_sample = HVP_MEMORY_FACTOR * activations_per_sample(model, sample) * first.element_size()
    return max(1, min(num_samples, int(budget) // per_sample))


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """Detached copy of the parameters as one flat vector (`parameters_to_vector` order)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class LossLandscape:
    """Full training loss L(theta) = sum_c (n_c / n) loss_fn(f_theta(x_c), y_c).

    Args:
        model: any `nn.Module` mapping a batch of inputs to predictions.
        loss_fn: `loss_fn(prediction, target)`, a mean over the samples of the batch.
        inputs, targets: the whole training set (e.g. the fixed noisy inputs and clean images).
        chunk_size: samples per chunk; None puts the whole set in one chunk, "auto" picks it
            from the device's free memory (`auto_chunk_size`). Peak memory of an HVP is that of
            a double backward pass over one chunk.
        reserve_bytes, memory_share: for chunk_size="auto": memory set aside for the solver,
            and the share of the rest a chunk may take (see `auto_chunk_size`).
        dtype: computation dtype; if it differs from the model's, the model is deep-copied and
            cast, so the caller's model is never touched.
        device: computation device (default: the model's); a different one also implies a copy.
        backend: how Hessian-vector products are formed: "autograd" (double backward, works with
            any loss_fn) or "func" (`torch.func` forward-over-reverse, jvp of grad).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        chunk_size: int | str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        backend: str = "autograd",
        reserve_bytes: int = 0,
        memory_share: float = CHUNK_MEMORY_SHARE,
    ) -> None:
        if backend not in HVP_BACKENDS:
            raise ValueError(f"backend must be one of {HVP_BACKENDS}, got {backend!r}")
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if len(inputs) == 0:
            raise ValueError("empty training set")
        first = next(model.parameters())
        self.dtype = first.dtype if dtype is None else dtype
        self.device = resolve_device(device, first.device)
        if self.dtype != first.dtype or self.device != first.device:
            self.module = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        else:
            self.module = model
        self.loss_fn = loss_fn
        self.backend = backend
        named = list(self.module.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_parameters = sum(self.numels)
        self.theta0 = flat_parameters(self.module)

        n = len(inputs)
        self.num_samples = n
        inputs = self._cast(inputs)
        targets = self._cast(targets)
        if chunk_size == "auto":  # after the cast, so the free memory excludes the data
            chunk_size = auto_chunk_size(
                self.module, inputs[:1], n, reserve_bytes=reserve_bytes, memory_share=memory_share
            )
        elif chunk_size is None:
            chunk_size = n
        elif isinstance(chunk_size, str):
            raise ValueError(f"chunk_size must be an int, None or 'auto', got {chunk_size!r}")
        else:
            chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.chunk_size = chunk_size
        self.chunks = [
            (x, y, len(x) / n)
            for x, y in zip(torch.split(inputs, chunk_size), torch.split(targets, chunk_size))
        ]
        # Forward-over-reverse of F.mse_loss(reduction="mean") fails when the target carries no
        # tangent (pytorch/pytorch#123996, "ZeroTensors are immutable"); a materialized zero
        # tangent for the targets avoids it. Made once and reused by every HVP.
        self._zero_target_tangents = (
            [torch.zeros_like(y) for _, y, _ in self.chunks]
            if backend == "func" and targets.is_floating_point()
            else None
        )

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device=self.device)

    # -- flat vectors ---------------------------------------------------------------------------
    def as_vector(self, vector: torch.Tensor | None) -> torch.Tensor:
        """`vector` (default: the model's own parameters) on the computation device and dtype."""
        if vector is None:
            return self.theta0
        vector = torch.as_tensor(vector).reshape(-1)
        if vector.numel() != self.num_parameters:
            raise ValueError(f"vector has {vector.numel()} entries, model {self.num_parameters}")
        return vector.to(device=self.device, dtype=self.dtype)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a flat vector shaped like the named parameters."""
        return {
            name: piece.view(shape)
            for name, shape, piece in zip(self.names, self.shapes, torch.split(theta, self.numels))
        }

    def chunk_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(functional_call(self.module, self.unflatten(theta), (x,)), y)

    # -- loss, gradient, Hessian-vector product -------------------------------------------------
    def loss(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Full-data loss at theta (0-dim tensor, no graph)."""
        theta = self.as_vector(theta)
        with torch.no_grad(), eval_mode(self.module):
            total = torch.zeros((), device=self.device, dtype=self.dtype)
            for x, y, weight in self.chunks:
                total += weight * self.chunk_loss(theta, x, y)
        return total

    def gradient(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Full-data gradient at theta (flat)."""
        theta = self.as_vector(theta)
        total = torch.zeros_like(theta)
        with eval_mode(self.module):
            for x, y, weight in self.chunks:
                leaf = theta.detach().requires_grad_(True)
                (chunk_grad,) = torch.autograd.grad(self.chunk_loss(leaf, x, y), leaf)
                total.add_(chunk_grad, alpha=weight)
        return total

    def hvp(self, vector: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Full-data Hessian-vector product H(theta) v (flat). No host-device synchronization."""
        theta = self.as_vector(theta)
        vector = self.as_vector(vector)
        total = torch.zeros_like(theta)
        with eval_mode(self.module):
            for index, (x, y, weight) in enumerate(self.chunks):
                if self.backend == "autograd":
                    leaf = theta.detach().requires_grad_(True)
                    (chunk_grad,) = torch.autograd.grad(
                        self.chunk_loss(leaf, x, y), leaf, create_graph=True
                    )
                    (chunk_hvp,) = torch.autograd.grad(chunk_grad, leaf, grad_outputs=vector)
                else:
                    chunk_hvp = self._func_hvp(theta, vector, index, x, y)
                total.add_(chunk_hvp, alpha=weight)
        return total

    def _func_hvp(self, theta, vector, index, x, y) -> torch.Tensor:
        grad_fn = grad(lambda t, target: self.chunk_loss(t, x, target))
        if self._zero_target_tangents is None:
            _, out = jvp(lambda t: grad_fn(t, y), (theta,), (vector,))
        else:
            _, out = jvp(grad_fn, (theta, y), (vector, self._zero_target_tangents[index]))
        return out

    def hessian(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Dense N x N Hessian by `torch.autograd.functional.hessian`: small networks only."""
        theta = self.as_vector(theta)

        def full(t: torch.Tensor) -> torch.Tensor:
            return sum(weight * self.chunk_loss(t, x, y) for x, y, weight in self.chunks)

        with eval_mode(self.module):
            return torch.autograd.functional.hessian(full, theta.detach(), vectorize=True)
