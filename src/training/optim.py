"""The optimizers of the training loop: torch.optim's SGD and Adam for one run, their update
applied member by member to the stacked parameters of a batched model, and sharpness-aware
minimization (SAM, Foret et al. 2021) around either."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def gradients_per_step(cfg: Mapping[str, Any]) -> int:
    """Forward-backward passes per optimizer step of an `optimizer` config: 2 for SAM (the
    ascent step's gradient, then the one it steps with), 1 otherwise. What a step costs, for
    scheduling runs and estimating their time."""
    return 2 if cfg["name"] == "sam" else 1


def make_optimizer(params, cfg: dict, capturable: bool = False) -> torch.optim.Optimizer:
    """torch.optim.SGD / Adam from an `optimizer` config, or `SAM` around one of them
    (optimizer.base). `capturable` keeps Adam's step count on the device, which a CUDA graph
    needs (SGD has no step count)."""
    if cfg["name"] == "sam":
        base = make_optimizer(params, {**cfg, "name": cfg["base"]}, capturable=capturable)
        return SAM(base, rho=cfg["rho"])
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


def make_batched_optimizer(params, cfg: Mapping[str, Any], lrs: torch.Tensor):
    """`BatchedOptimizer` for a batched model's stacked parameters (one step size per member),
    or `SAM` around it with one ascent step per member (optimizer.name=sam)."""
    if cfg["name"] == "sam":
        base = BatchedOptimizer(params, {**cfg, "name": cfg["base"]}, lrs)
        return SAM(base, rho=cfg["rho"], per_member=True)
    return BatchedOptimizer(params, cfg, lrs)


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization (Foret et al. 2021) around a base optimizer.

    One step on a batch with loss L: g = grad L(w); e = rho g / (||g|| + eps); g' = grad L(w + e)
    on the same batch; w is restored and the base optimizer (SGD, Adam, or a
    `BatchedOptimizer`) updates it with g'. ||.|| runs over all parameters of the net; with
    `per_member` (stacked parameters of a batched model, member k at index k of the leading
    dim) it is member k's own norm, so each member takes its own SAM step. eps = 1e-12 (as in
    Foret et al.'s code) makes e = 0 where g = 0, without a branch on a tensor's value.

    `step(closure)` is the whole step. It contains no host synchronisation (no `.item()`, no
    branch on tensor values), so a CUDA graph can capture it:
    * g comes from `torch.autograd.grad` and never touches `param.grad`, so no gradient has to
      be zeroed between the two passes: `param.grad` receives g' alone, from the second
      backward, after the caller's `zero_grad(set_to_none=True)` before the step (as for the
      base optimizers; StepRunner does this before each eager step and before capture);
    * the weights at w are kept in buffers allocated at the first step (an eager warm-up step
      before any capture) and rewritten in place: restoring copies them back, exactly, rather
      than subtracting e (w + e - e is not w in floating point).

    The parameter groups and state are the base optimizer's (lr, zero_grad and state_dict act
    on it); the saved weights are scratch, not state."""

    def __init__(
        self,
        base: torch.optim.Optimizer,
        rho: float,
        per_member: bool = False,
        eps: float = 1e-12,
    ) -> None:
        params = [p for group in base.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.base = base
        self.rho = float(rho)
        self.per_member = per_member
        self.eps = float(eps)
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults
        self._saved: list[torch.Tensor] = []  # w while the weights are at w + e

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _scale(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        """rho / (||g|| + eps): a scalar, or one per member (K,) with `per_member`."""
        if self.per_member:  # over every axis but the member's (no reshape: no copy of a view)
            norms = [torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))) for g in grads]
        else:
            norms = [torch.linalg.vector_norm(g) for g in grads]
        return self.rho / (torch.stack(norms).pow(2).sum(dim=0).sqrt() + self.eps)

    @torch.no_grad()
    def perturb(self, grads: Sequence[torch.Tensor]) -> None:
        """w += e = rho g / ||g|| for the gradients `grads` (one per parameter, in order),
        keeping w to restore."""
        params = self._params()
        if len(grads) != len(params):
            raise ValueError(f"SAM.perturb: {len(grads)} gradients for {len(params)} parameters")
        scale = self._scale(grads)
        if not self._saved:
            self._saved = [torch.empty_like(param) for param in params]
        torch._foreach_copy_(self._saved, params)
        for param, grad in zip(params, grads):
            factor = scale.view(-1, *([1] * (param.dim() - 1))) if self.per_member else scale
            param.addcmul_(grad, factor)  # in place: no g x factor temporary (a hot path)

    @torch.no_grad()
    def restore(self) -> None:
        """w + e -> w (the weights `perturb` kept)."""
        torch._foreach_copy_(self._params(), self._saved)

    def restore_and_step(self) -> None:
        """Restore w and apply the base optimizer's update with the gradients in `param.grad`
        (those at w + e)."""
        self.restore()
        self.base.step()

    def step(self, closure=None):
        """One SAM step. `closure()` computes the loss on the batch at the current weights and
        returns it without calling backward (a tensor; a batched model's per-member losses are
        summed, each member's gradient being that of its own loss). `param.grad` must be None
        or zero on entry. Returns the closure's loss at w (the first pass), detached."""
        if closure is None:
            raise ValueError("SAM.step needs a closure: the loss is evaluated twice per step")
        params = self._params()
        with torch.enable_grad():
            loss = closure()
            grads = torch.autograd.grad(loss.sum(), params)
        self.perturb(grads)
        with torch.enable_grad():
            closure().sum().backward()
        self.restore_and_step()
        return loss.detach()

    def moved_to(self, params: Sequence[torch.Tensor], members: torch.Tensor):
        """A new SAM over `params` (the kept members' parameters) carrying the base optimizer's
        state (batched models only: see `BatchedOptimizer.moved_to`)."""
        return SAM(
            self.base.moved_to(params, members), self.rho, per_member=self.per_member,
            eps=self.eps,
        )  # fmt: skip

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.base.load_state_dict(state_dict)
        self.param_groups, self.state = self.base.param_groups, self.base.state
