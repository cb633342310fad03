"""Fixtures of tests/analysis (helpers live in analysis_problems.py)."""

import pytest
from analysis_problems import TrainedNet, train_wide_net


@pytest.fixture(scope="session")
def trained_wide_net() -> TrainedNet:
    return train_wide_net()


@pytest.fixture(scope="session")
def wide_net_lanczos(trained_wide_net):
    """Default float32 Lanczos on the trained wide net (shared by several tests)."""
    import torch.nn.functional as F

    from src.analysis import top_hessian_eigenvalue

    net = trained_wide_net
    return top_hessian_eigenvalue(net.model, F.mse_loss, net.inputs, net.targets)
