"""The supernet computes what it claims: one candidate = the fixed-policy model; frozen = live path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from smpq.policy import Policy
from smpq.quant import LSQQuantizer, QuantConv2d, QuantLinear, apply_policy
from smpq.supernet import MixedQuantConv2d, mixing
from smpq.supernet.mixing import activation_terms, mix_activation, mix_activation_inplace


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


@pytest.mark.parametrize("setup_name, w, a", [("resnet", 4, 3), ("resnet", 2, 8), ("tiny", 3, 2)])
def test_single_candidate_equals_fixed_policy_model(request, setup_name: str, w: int, a: int) -> None:
    setup = request.getfixturevalue(setup_name)
    supernet = setup.supernet((w,), (a,)).eval()
    policy = Policy.uniform(setup.table.names, w, a, setup.fixed)
    fixed = apply_policy(copy.deepcopy(setup.model), policy, setup.calibration).eval()
    with torch.no_grad():
        assert _max_diff(supernet(setup.x), fixed(setup.x)) <= 1e-6
    assert _max_diff(supernet(setup.x), fixed(setup.x)) <= 1e-6  # the autograd path as well
    assert supernet.argmax_policy() == policy
    modules = dict(supernet.model.named_modules())
    assert isinstance(modules[setup.table.first], QuantConv2d) and isinstance(modules[setup.table.last], QuantLinear)
    assert (modules[setup.table.first].w_bits, modules[setup.table.first].a_bits) == (8, 8)
    assert all(isinstance(modules[name], MixedQuantConv2d) for name in setup.table.searchable)


def test_float_weights_load_into_mixed_layers(tiny) -> None:
    supernet = tiny.supernet()
    layer = supernet.mixed_layers["conv_a"]
    assert torch.equal(layer.weight, tiny.model.conv_a.weight) and torch.equal(layer.bias, tiny.model.conv_a.bias)
    keys = set(layer.state_dict())
    assert {"weight", "bias", "alpha_w", "alpha_a", "w_quants.b2.step", "a_quants.b8.step"} <= keys
    assert torch.equal(layer.w_quants["b3"].step, tiny.calibration.step("conv_a", "w", 3))
    assert torch.equal(layer.a_quants["b4"].step, tiny.calibration.step("conv_a", "a", 4))
    assert supernet.mixed_layers["conv_b"].a_signed is False  # after a ReLU


def test_frozen_cached_path_equals_live_path(resnet) -> None:
    supernet = resnet.supernet().eval()
    rng = np.random.default_rng(0)
    masks = [None, *(rng.random(len(supernet.players())) < 0.6 for _ in range(4))]
    live = []
    for mask in masks:
        with supernet.coalition(mask):
            live.append(supernet(resnet.x).detach())
    supernet.freeze()
    assert supernet.frozen
    with torch.no_grad():
        for mask, expected in zip(masks, live):
            with supernet.coalition(mask):
                assert _max_diff(supernet(resnet.x), expected) <= 1e-6
    supernet.train()
    assert not supernet.frozen and not any(layer.frozen for layer in supernet.mixed_layers.values())


def test_frozen_cache_follows_weight_and_alpha_changes(tiny) -> None:
    supernet = tiny.supernet().freeze()
    before = supernet(tiny.x)
    layer = supernet.mixed_layers["conv_b"]
    with torch.no_grad():
        layer.weight.mul_(-1.0)
        layer.alpha_a.add_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
    after = supernet(tiny.x)
    supernet.unfreeze()
    with torch.no_grad():
        live = supernet(tiny.x)
    assert _max_diff(after, before) > 1e-3
    assert _max_diff(after, live) <= 1e-6


def test_inplace_mixture_equals_autograd_mixture_also_when_cache_blocked(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, 11, 13, generator=generator)  # 5005 elements: 5 full slices and a short one
    quantizers = [LSQQuantizer(b, signed=True) for b in (2, 4, 8)]
    for quantizer in quantizers:
        quantizer.init_step(x)
    probs = torch.softmax(torch.randn(3, generator=generator), 0)
    terms = activation_terms(quantizers, (0, 1, 2), probs, x.numel())
    expected = mix_activation(x, terms).detach()
    assert torch.equal(mix_activation_inplace(x, terms), expected)
    monkeypatch.setattr(mixing, "CHUNK_ELEMENTS", 1000)
    assert torch.equal(mix_activation_inplace(x, terms), expected)
    assert torch.equal(mix_activation_inplace(x, terms, torch.empty(1000)), expected)
    assert torch.equal(mix_activation_inplace(x.transpose(1, 2), terms), expected.transpose(1, 2))
    alone = activation_terms(quantizers[:1], (0,), torch.ones(1), x.numel())  # one candidate: plain LSQ
    assert torch.equal(mix_activation_inplace(x, alone), quantizers[0](x).detach())


def test_frozen_path_equals_live_path_when_cache_blocked(resnet, monkeypatch) -> None:
    monkeypatch.setattr(mixing, "CHUNK_ELEMENTS", 512)
    supernet = resnet.supernet().eval()
    mask = np.random.default_rng(5).random(len(supernet.players())) < 0.7
    with supernet.coalition(mask):
        live = supernet(resnet.x).detach()
        supernet.freeze()
        assert torch.equal(supernet(resnet.x), live)


def test_searchable_linear_layers(make_setup) -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 10),
                              torch.nn.Tanh(), torch.nn.Linear(10, 3))
    setup = make_setup(mlp, (1, 4, 4), seed=4)
    assert setup.table.searchable == ["3"]
    single = setup.supernet((3,), (4,)).eval()
    fixed = apply_policy(copy.deepcopy(mlp), Policy.uniform(setup.table.names, 3, 4, setup.fixed), setup.calibration)
    assert _max_diff(single(setup.x), fixed(setup.x)) <= 1e-6
    supernet = setup.supernet()
    assert supernet.mixed_layers["3"].a_signed is False
    mask = np.array([True, False, True, False, False, True, True, False])
    with supernet.coalition(mask):
        live = supernet(setup.x).detach()
        assert torch.equal(supernet.freeze()(setup.x), live)
