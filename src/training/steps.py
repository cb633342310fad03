"""Optimizer steps over device-resident data, replayed from a CUDA graph on a GPU.

At the paper's sizes (784-wide nets, batch 100) one SGD step is ~2 GFLOP, about 0.05 ms of
H100 arithmetic, while eager PyTorch spends milliseconds launching its kernels: the step is
bound by launch overhead, not by the GPU. `StepRunner` therefore

* keeps everything a step needs in static device tensors: the epoch's sample order, a step
  counter and the loss sum, so a step needs no host input (no Python ints, no `.item()`);
* captures one step in a CUDA graph (`torch.cuda.graph`, after a few warm-up steps on a side
  stream, as the PyTorch CUDA-graph notes prescribe for whole-network capture) and replays it;
* runs the very same step function uncaptured on a CPU, or wherever capture is switched off,
  so the CPU tests exercise the code the GPU replays.

A step function reads its batch positions as `arange(batch) + counter * batch` into the order
buffer, updates the parameters, and increments the counter and the loss sum in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before capture (lazy state, allocator)


def capture_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def use_capture(mode: str, device: torch.device) -> bool:
    """Whether to replay the step from a CUDA graph for a validated `performance.cuda_graph`
    ("auto": on CUDA devices; "true": required, which validation allows only with CUDA;
    "false": never)."""
    if mode == "false":
        return False
    if mode == "true" and not capture_supported(device):
        raise RuntimeError(f"performance.cuda_graph=true, but training runs on {device}")
    return capture_supported(device)


@contextmanager
def matmul_precision(tf32: bool):
    """TF32 matmuls (and convolutions) on or off for a block; restores the previous settings.

    Off by default in this project: TF32 keeps 10 mantissa bits, i.e. ~1e-3 relative error per
    product, which moves lambda_max and loss curves far beyond fp32 rounding."""
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


class StepRunner:
    """Runs `step()` a given number of times, from a CUDA graph when `capture` is set.

    Args:
        step: one optimizer step on static tensors (see the module docstring); it must leave
            gradients to be cleared by `zero_grad` and allocate nothing that outlives it.
        zero_grad: sets the gradients to None before each uncaptured step and before capture,
            so the captured backward pass owns (and rewrites) the gradient tensors.
        capture: replay from a CUDA graph (after WARMUP_STEPS eager steps).
        required: a failed capture raises (performance.cuda_graph=true) instead of going on
            uncaptured with a warning (auto).
    """

    def __init__(
        self,
        step: Callable[[], None],
        zero_grad: Callable[[], None],
        capture: bool,
        required: bool = False,
    ):
        self.step = step
        self.zero_grad = zero_grad
        self.capture = capture
        self.required = required
        self.graph: torch.cuda.CUDAGraph | None = None
        self._warm = 0
        self.captures = 0  # how often a graph was recorded (once, plus after each reset)

    def reset(self) -> None:
        """Forget the graph (call after the static tensors' shapes or identities change)."""
        self.graph = None
        self._warm = 0

    def run(self, steps: int) -> None:
        if steps <= 0:
            return
        if not self.capture:
            for _ in range(steps):
                self.zero_grad()
                self.step()
            return
        if self.graph is None:
            warm = min(steps, WARMUP_STEPS - self._warm)
            if warm > 0:
                self._run_on_side_stream(warm)
                self._warm += warm
                steps -= warm
            if steps == 0:
                return
            try:
                self._record()
            except RuntimeError as err:  # an op that cannot be captured
                if self.required:
                    raise
                log.warning("CUDA graph capture failed (%s); running the step uncaptured", err)
                self.capture = False
                self.run(steps)
                return
        for _ in range(steps):
            self.graph.replay()

    def _run_on_side_stream(self, steps: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(steps):
                self.zero_grad()
                self.step()
        torch.cuda.current_stream().wait_stream(side)

    def _record(self) -> None:
        graph = torch.cuda.CUDAGraph()
        self.zero_grad()
        with torch.cuda.graph(graph):
            self.step()
        # Recording runs nothing: the step recorded here is executed by the first replay.
        self.graph = graph
        self.captures += 1
        log.debug("captured the training step in a CUDA graph")
