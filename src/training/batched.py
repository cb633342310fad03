"""Several runs of one architecture as one batched model, and which runs may share one.

The grids of Figs. 4-5 train many nets that differ only in step size or seed. On a GPU one
784-wide step is bound by kernel-launch overhead, so K nets stepped together in batched
matmuls (`torch.baddbmm` over stacked (K, d_out, d_in) weights) cost little more than one.
The training loop (src.training.module) trains such a model exactly as it trains one net, member
by member: each member has its own initial weights, batch order, step size and stopping rule.
With optimizer=sam each member also takes its own ascent step, normalized by its own gradient
norm (src.training.optim.SAM).

Not batchable (trained one by one instead): noise re-sampled every epoch (it would need one
copy of the training set per member), sharpness tracked during training, and step limits.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from src.domain.models import MLP

# What may differ between the members of one batch.
# What may differ between the members of a batch: their seed and step size, where they log and
# write, and which optional measurements their analysis makes after training (each member is
# analysed on its own).
MEMBER_KEYS = (
    "seed",
    "lr",
    "optimizer.lr",
    "logger.run_name",
    "output_dir",
    "results_dir",
    "analysis.trace.enabled",
    "analysis.density.enabled",
)


class BatchedMLP(nn.Module):
    """K copies of an `MLP` architecture with their own weights: weights[j] is (K, d_j, d_j-1).

    forward maps (K, B, d_in) to (K, B, d_out); member k computes exactly its own MLP.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        super().__init__()
        first = models[0]
        for model in models:
            if model.sizes != first.sizes or model.activation != first.activation:
                raise ValueError("batched members must share one architecture")
        self.sizes = list(first.sizes)
        self.activation = first.activation
        self.has_bias = first.layers[0].bias is not None
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[j].weight.detach() for m in models]))
            for j in range(first.depth)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[j].bias.detach() for m in models]))
            for j in range(first.depth)
            if self.has_bias
        )

    @property
    def num_members(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Activations are carried as (K, d, B), h_j = W_j h_j-1 + b_j: each weight's gradient
        # (dh_j h_j-1^T) then comes out in the weight's own (K, d_j, d_j-1) layout, not as a
        # transposed view that would be copied into .grad, or walked with strides by SAM's
        # elementwise ops on autograd.grad's output, every step.
        last = len(self.weights) - 1
        h = x.transpose(1, 2).contiguous()
        for j, weight in enumerate(self.weights):
            if self.has_bias:
                h = torch.baddbmm(self.biases[j].unsqueeze(2), weight, h)
            else:
                h = torch.bmm(weight, h)
            if j < last and self.activation == "relu":
                h = torch.relu(h)
        return h.transpose(1, 2)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as an `MLP` state dict."""
        state = {}
        for j, weight in enumerate(self.weights):
            state[f"layers.{j}.weight"] = weight.detach()[k].clone()
            if self.has_bias:
                state[f"layers.{j}.bias"] = self.biases[j].detach()[k].clone()
        return state

    @torch.no_grad()
    def keep(self, members: torch.Tensor) -> None:
        """Keep only the listed members (new, smaller parameters)."""
        for plist in (self.weights, self.biases):
            for j in range(len(plist)):
                plist[j] = nn.Parameter(plist[j].index_select(0, members))


def batch_key(resolved: Mapping[str, Any]) -> str:
    """Runs with equal keys can share a batch: everything but MEMBER_KEYS is equal."""
    content = copy.deepcopy(dict(resolved))
    for dotted in MEMBER_KEYS:
        node = content
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part, {})
        if isinstance(node, dict):
            node.pop(leaf, None)
    content.pop("hydra", None)
    return json.dumps(content, sort_keys=True, default=str)


def batchable(resolved: Mapping[str, Any]) -> str | None:
    """Why a run cannot join a batch (None: it can)."""
    if resolved["dataset"].get("resample_noise", False):
        return "dataset.resample_noise"
    analysis = resolved.get("analysis", {})
    if analysis.get("enabled") and analysis["sharpness"].get("every_n_epochs", 0) > 0:
        return "analysis.sharpness.every_n_epochs"
    if resolved["trainer"].get("max_steps", -1) not in (-1, None):
        return "trainer.max_steps"
    if resolved["trainer"].get("fast_dev_run"):
        return "trainer.fast_dev_run"
    return None
