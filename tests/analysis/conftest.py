"""Fixtures of tests/analysis (helpers live in analysis_problems.py)."""

import os

import pytest
import torch
from analysis_problems import TrainedNet, train_wide_net
from filelock import FileLock


@pytest.fixture(scope="session")
def trained_wide_net(tmp_path_factory) -> TrainedNet:
    """Trained once per `pytest` call, by whichever xdist worker asks first; the others load
    it (its modules run on different workers: `--dist loadfile`). pytest-xdist's recipe: a
    file lock in the temp folder the workers share."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process (or no pytest-xdist)
        return train_wide_net()
    shared = tmp_path_factory.getbasetemp().parent / "trained_wide_net.pt"
    with FileLock(f"{shared}.lock"):
        if shared.exists():
            return torch.load(shared, weights_only=False)
        net = train_wide_net()
        torch.save(net, shared)
        return net


@pytest.fixture(scope="session")
def wide_net_lanczos(trained_wide_net):
    """Default float32 Lanczos on the trained wide net (shared by several tests)."""
    import torch.nn.functional as F

    from src.analysis import top_hessian_eigenvalue

    net = trained_wide_net
    return top_hessian_eigenvalue(net.model, F.mse_loss, net.inputs, net.targets)
