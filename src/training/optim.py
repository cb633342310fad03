"""The optimizers of the training loop: torch.optim's SGD and Adam for one run, and their update
applied member by member to the stacked parameters of a batched model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def make_optimizer(params, cfg: dict, capturable: bool = False) -> torch.optim.Optimizer:
    """torch.optim.SGD / Adam from an `optimizer` config. `capturable` keeps Adam's step count
    on the device, which a CUDA graph needs (SGD has no step count)."""
    if cfg["name"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg.get("momentum", 0.0),
            weight_decay=cfg.get("weight_decay", 0.0),
        )
    if cfg["name"] == "adam":
        return torch.optim.Adam(
            params,
            lr=cfg["lr"],
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
            eps=cfg.get("eps", 1e-8),
            weight_decay=cfg.get("weight_decay", 0.0),
            capturable=capturable,
        )
    raise ValueError(f"optimizer.name: unknown optimizer {cfg['name']!r}")


class BatchedOptimizer(torch.optim.Optimizer):
    """SGD (heavy-ball momentum, weight decay) or Adam over stacked parameters, with one step
    size per member: the update of torch.optim.SGD / Adam applied to each member.

    Adam's step count is a device tensor, so the step can be captured in a CUDA graph."""

    def __init__(self, params, cfg: Mapping[str, Any], lrs: torch.Tensor) -> None:
        self.kind = cfg["name"]
        if self.kind not in ("sgd", "adam"):
            raise ValueError(f"optimizer.name: unknown optimizer {self.kind!r}")
        defaults = {
            "momentum": float(cfg.get("momentum", 0.0)),
            "weight_decay": float(cfg.get("weight_decay", 0.0)),
            "betas": tuple(cfg.get("betas", (0.9, 0.999))),
            "eps": float(cfg.get("eps", 1e-8)),
        }
        super().__init__(params, defaults)
        self.lrs = lrs

    def _lr(self, param: torch.Tensor) -> torch.Tensor:
        return self.lrs.view(-1, *([1] * (param.dim() - 1)))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                if self.kind == "sgd":
                    self._sgd(param, grad, group)
                else:
                    self._adam(param, grad, group)

    def _sgd(self, param, grad, group) -> None:
        if group["momentum"]:
            state = self.state[param]
            if "momentum_buffer" not in state:  # torch.optim.SGD: the first buffer is the grad
                state["momentum_buffer"] = grad.clone()
            else:
                state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
            grad = state["momentum_buffer"]
        param.sub_(self._lr(param) * grad)

    def _adam(self, param, grad, group) -> None:
        beta1, beta2 = group["betas"]
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), device=param.device, dtype=param.dtype)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction1 = 1 - torch.pow(beta1, state["step"])
        correction2_sqrt = (1 - torch.pow(beta2, state["step"])).sqrt()
        denom = (state["exp_avg_sq"].sqrt() / correction2_sqrt).add_(group["eps"])
        param.sub_((self._lr(param) / correction1) * state["exp_avg"] / denom)

    def moved_to(self, params: Sequence[torch.Tensor], members: torch.Tensor):
        """A new optimizer over `params` (the kept members' parameters) carrying their state."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        other = BatchedOptimizer(
            list(params), {"name": self.kind, **group}, self.lrs.index_select(0, members)
        )
        for old, new in zip(self.param_groups[0]["params"], params):
            other.state[new] = {
                k: v if v.dim() == 0 else v.index_select(0, members)
                for k, v in self.state.get(old, {}).items()
            }
            if not other.state[new]:
                del other.state[new]
        return other
