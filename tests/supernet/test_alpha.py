"""Expected BitOps, complexity loss, DMPQ argmax policy and the α export (SPEC §3.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smpq.cost import bitops
from smpq.policy import LayerBits


def _hand_expected_bitops(supernet, table) -> float:
    total = sum(table[name].macs * 64 for name in (table.first, table.last))  # W8A8
    for name, layer in supernet.mixed_layers.items():
        p_w = np.exp(layer.alpha_w.detach().double().numpy())
        p_a = np.exp(layer.alpha_a.detach().double().numpy())
        e_w = float(p_w @ np.array(layer.w_bits) / p_w.sum())
        e_a = float(p_a @ np.array(layer.a_bits) / p_a.sum())
        total += table[name].macs * e_w * e_a
    return total


def test_expected_bitops_matches_hand_computation_and_is_differentiable(tiny) -> None:
    supernet = tiny.supernet()
    expected = supernet.expected_bitops()
    assert math.isclose(float(expected.detach()), _hand_expected_bitops(supernet, tiny.table), rel_tol=1e-9)
    expected.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.alpha_parameters())


def test_expected_bitops_of_one_hot_alpha_is_the_policy_bitops(tiny) -> None:
    supernet = tiny.supernet(random_alpha=False)
    with torch.no_grad():
        for alpha in supernet.alpha_parameters():
            alpha.copy_(torch.tensor([0.0, 0.0, 80.0, 0.0]))  # 4 bits, probability 1 in float64
    assert math.isclose(supernet.expected_bitops().item(), bitops(tiny.table, supernet.argmax_policy()),
                        rel_tol=1e-9)


def test_complexity_loss_forms(tiny) -> None:
    supernet = tiny.supernet()
    expected = supernet.expected_bitops().item()
    low, high = 0.5 * expected, 2.0 * expected
    assert math.isclose(supernet.complexity_loss(low, 3.0, "hinge").item(), 3.0 * (expected / low - 1), rel_tol=1e-6)
    assert supernet.complexity_loss(high, 3.0, "hinge").item() == 0.0
    assert math.isclose(supernet.complexity_loss(high, 3.0, "ratio").item(), 3.0 * expected / high, rel_tol=1e-6)
    assert math.isclose(supernet.complexity_loss(low, 3.0, "ratio").item(), 3.0 * expected / low, rel_tol=1e-6)
    with pytest.raises(ValueError, match="form"):
        supernet.complexity_loss(high, 1.0, "square")
    with pytest.raises(ValueError, match="target"):
        supernet.complexity_loss(0.0, 1.0, "hinge")


def test_argmax_policy_covers_every_layer_in_table_order(tiny) -> None:
    supernet = tiny.supernet(random_alpha=False)
    with torch.no_grad():
        supernet.mixed_layers["conv_a"].alpha_w.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
        supernet.mixed_layers["conv_a"].alpha_a.copy_(torch.tensor([0.0, 2.0, 0.0, 1.0]))
        supernet.mixed_layers["conv_b"].alpha_w.copy_(torch.tensor([0.0, 5.0, 0.0, 1.0]))
    policy = supernet.argmax_policy()
    assert list(policy) == tiny.table.names
    assert policy["stem"] == LayerBits(8, 8) and policy["fc"] == LayerBits(8, 8)
    assert policy["conv_a"] == LayerBits(8, 3)
    assert policy["conv_b"] == LayerBits(3, 2)  # α_a all equal: the tie goes to the lowest bit-width


def test_alpha_table_and_entropy(tiny) -> None:
    supernet = tiny.supernet(a_bits=(2, 4))
    table = supernet.alpha_table()
    assert list(table) == tiny.table.searchable
    for name, entry in table.items():
        assert set(entry) == {"w", "a"}
        assert entry["w"]["bits"] == [2, 3, 4, 8] and entry["a"]["bits"] == [2, 4]
        for kind, alpha in (("w", supernet.mixed_layers[name].alpha_w), ("a", supernet.mixed_layers[name].alpha_a)):
            assert set(entry[kind]) == {"bits", "logits", "probabilities"}
            assert entry[kind]["logits"] == pytest.approx(alpha.tolist())
            assert sum(entry[kind]["probabilities"]) == pytest.approx(1.0)
    uniform = tiny.supernet(a_bits=(2, 4), random_alpha=False)
    assert uniform.alpha_entropy() == pytest.approx((math.log(4) + math.log(2)) / 2)
    assert 0 < supernet.alpha_entropy() < uniform.alpha_entropy()


def test_parameter_split_is_a_partition(tiny) -> None:
    supernet = tiny.supernet()
    alphas, weights = supernet.alpha_parameters(), supernet.weight_parameters()
    assert len(alphas) == 2 * len(tiny.table.searchable)
    ids = {id(p) for p in alphas} | {id(p) for p in weights}
    assert len(ids) == len(alphas) + len(weights) == len(list(supernet.parameters()))
    steps = {id(q.step) for layer in supernet.mixed_layers.values() for q in layer.w_quants.values()}
    assert steps <= {id(p) for p in weights}
