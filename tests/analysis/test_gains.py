"""Gain profiles: exact for linear nets (Thm 2), estimated by input ascent for ReLU nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.analysis import flat_parameters, gain_profile, linear_gain_profile
from src.domain.models import MLP, initialize


def _linear_net(width: int, depth: int, seed: int) -> MLP:
    model = MLP(width, width, depth, activation="linear", bias=False)
    initialize(model, "he", torch.Generator().manual_seed(seed))
    return model


def test_linear_profile_is_exact_and_theorem2_holds_at_flattest_minimum():
    # canonical flattest minimum (27) with T = diag(4, 3, 1) in a rotated basis
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    sigma = torch.tensor([4.0, 3.0, 1.0], dtype=torch.float64)
    depth = 5
    root = torch.diag(sigma ** (1 / depth))
    weights = [root @ v.T] + [root] * (depth - 2) + [u @ root]
    profile = linear_gain_profile(weights)
    ks = np.arange(1, depth + 1)
    # Thm 2(i): v has gain sigma_max^(k/m) up to every layer; here it is also the top one
    np.testing.assert_allclose(profile["top_input_gains"], 4.0 ** (ks / depth), rtol=1e-12)
    np.testing.assert_allclose(profile["theorem2_top_input"], 4.0 ** (ks / depth), rtol=1e-12)
    np.testing.assert_allclose(profile["max_gain"], 4.0 ** (ks / depth), rtol=1e-12)
    assert all(np.array(profile["max_gain"]) <= np.array(profile["theorem2_bound"]))
    np.testing.assert_allclose(profile["singular_values"][2], sigma ** (3 / depth), rtol=1e-12)

    # an arbitrary (non-flattest) implementation of the same T, as in (S104): large gains
    a = torch.randn(3, 3, generator=generator, dtype=torch.float64) * 3
    arbitrary = [a @ weights[0], weights[1] @ torch.linalg.inv(a)] + weights[2:]
    arbitrary_profile = linear_gain_profile(arbitrary)
    assert arbitrary_profile["max_gain"][-1] == pytest.approx(4.0, rel=1e-10)
    assert arbitrary_profile["max_gain"][0] > 1.5 * profile["max_gain"][0]


@pytest.mark.parametrize("width,depth,restarts", [(64, 4, 100), (784, 3, 12)])
def test_estimated_linear_gains_match_singular_values(width, depth, restarts):
    model = _linear_net(width, depth, seed=width)
    exact = linear_gain_profile(model.weight_matrices())
    top_two = [s[1] / s[0] for s in exact["singular_values"]]
    if width == 784:
        assert min(top_two) > 0.98  # nearly tied top singular values: the hard case
    estimate = gain_profile(model, input_dim=width, restarts=restarts)
    np.testing.assert_allclose(estimate.max_gain, exact["max_gain"], rtol=1e-3)
    assert all(g <= e * (1 + 1e-5) for g, e in zip(estimate.max_gain, exact["max_gain"]))
    # red circles: gains of the best end-to-end input follow those of v
    np.testing.assert_allclose(estimate.maximal_input_gains, exact["top_input_gains"], rtol=1e-2)
    assert estimate.restart_gains.shape == (depth, restarts)
    assert max(estimate.spread()["late_improvement"]) < 1e-3


def _biased_relu_net(width: int = 48, depth: int = 4, seed: int = 0) -> MLP:
    generator = torch.Generator().manual_seed(seed)
    model = MLP(width, width, depth)
    initialize(model, "he", generator)
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.normal_(0.0, 0.3, generator=generator)
    return model


def test_relu_gain_profile_beats_random_inputs_and_is_consistent():
    model = _biased_relu_net()
    with pytest.raises(ValueError, match="input_norm"):
        gain_profile(model, input_dim=48)
    model.train()
    before = flat_parameters(model)
    profile = gain_profile(model, input_dim=48, restarts=30, steps=200, input_norm=5.0)
    assert torch.equal(flat_parameters(model), before) and model.training

    # no random input on the sphere reaches the optimized gains
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 48, generator=generator)
    x = 5.0 * x / x.norm(dim=1, keepdim=True)
    with torch.no_grad():
        random_best = [h.norm(dim=1).max().item() / 5.0 for h in model.layer_outputs(x)]
    assert all(g > r for g, r in zip(profile.max_gain, random_best))

    # red circles are the layer gains of the reported input, and it is the end-to-end best
    assert profile.maximal_input.norm().item() == pytest.approx(5.0, rel=1e-5)
    with torch.no_grad():
        outs = model.layer_outputs(profile.maximal_input[None])
    recomputed = [h.norm().item() / 5.0 for h in outs]
    np.testing.assert_allclose(profile.maximal_input_gains, recomputed, rtol=1e-5)
    assert profile.maximal_input_gains[-1] == pytest.approx(profile.max_gain[-1], rel=1e-5)
    assert all(r <= m * (1 + 1e-5) for r, m in zip(profile.maximal_input_gains, profile.max_gain))

    # history is the running best, non-decreasing, ending at max_gain
    assert np.all(np.diff(profile.history, axis=1) >= 0)
    np.testing.assert_allclose(profile.history[:, -1], profile.max_gain, rtol=1e-6)
    summary = profile.to_dict()
    assert len(summary["spread"]["top5"]) == 4 and len(summary["spread"]["top5"][0]) == 5

    again = gain_profile(model, input_dim=48, restarts=30, steps=200, input_norm=5.0)
    assert again.max_gain == profile.max_gain  # seeded: deterministic


def test_bias_free_relu_gain_is_scale_invariant():
    model = MLP(32, 32, 3, bias=False)
    initialize(model, "he", torch.Generator().manual_seed(2))
    unit = gain_profile(model, input_dim=32, restarts=10, steps=100)
    assert unit.input_norm == 1.0
    scaled = gain_profile(model, input_dim=32, restarts=10, steps=100, input_norm=30.0)
    np.testing.assert_allclose(unit.max_gain, scaled.max_gain, rtol=1e-5)
