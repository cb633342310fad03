"""Fully connected networks of the paper: f(x) = W_m s(... s(W_1 x + b_1) ...) + b_m, eq. (1).

`MLP` is a plain `nn.Module` (no Lightning, no Hydra) so that the measurement code in
`src.analysis` and `src.theory` can use it on its own.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = ("relu", "linear")
INITS = ("identity", "he")


def layer_sizes(d_in: int, d_out: int, depth: int, width: int | None = None) -> list[int]:
    """d_0 = d_in, d_1..d_{m-1} = width (default d_in), d_m = d_out."""
    width = d_in if width is None else width
    return [d_in] + [width] * (depth - 1) + [d_out]


def parameter_count(
    d_in: int, d_out: int, depth: int, width: int | None = None, bias: bool = True
) -> int:
    """The number of parameters of `MLP(d_in, d_out, depth, width, bias=bias)`, without
    building it (the config is checked against it before any data is loaded)."""
    sizes = layer_sizes(d_in, d_out, depth, width)
    return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))


class MLP(nn.Module):
    """Depth-m fully connected net with layer sizes d_0 = d_in, d_1..d_{m-1} = width, d_m = d_out.

    No activation after the last layer, so `activation="linear"` is exactly the deep linear
    network of eq. (1) (with `bias=False`).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        depth: int,
        width: int | None = None,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.depth = depth
        self.activation = activation
        self.sizes = layer_sizes(d_in, d_out, depth, width)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(self.sizes[:-1], self.sizes[1:])
        )

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h) if self.activation == "relu" else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self._act(layer(x))
        return self.layers[-1](x)

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Representations h_1, ..., h_m (after the activation for k < m; h_m is f(x))."""
        outs = []
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < self.depth - 1:
                x = self._act(x)
            outs.append(x)
        return outs

    def weight_matrices(self) -> list[torch.Tensor]:
        """W_1, ..., W_m (each d_k x d_{k-1}), in the order of eq. (1)."""
        return [layer.weight for layer in self.layers]


@torch.no_grad()
def initialize(model: MLP, scheme: str, generator: torch.Generator | None = None) -> MLP:
    """Initialize weights in place.

    identity: W_j = I (the rectangular identity for non-square layers), b_j = 0: the linear
        ResNet zero initialization of Lemma 1.
    he: W_j ~ N(0, 2 / d_{j-1}) (He et al. 2015, fan-in, ReLU gain), b_j = 0.
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}")
    for layer in model.layers:
        if scheme == "identity":
            nn.init.eye_(layer.weight)
        else:
            fan_in = layer.weight.shape[1]
            layer.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()
    return model
