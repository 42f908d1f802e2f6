"""Cost model (SPEC §3.5): MACs, parameters, BitOps, size and budgets against hand counts and anchors."""

from __future__ import annotations

import json
from dataclasses import astuple

import pytest
import torch
import torchvision
from torch import nn

from smpq.config import BitsPair, BudgetConfig
from smpq.cost import (
    COST_TABLE_FILE,
    Budget,
    CostTable,
    LayerCost,
    bitops,
    budget_bitops,
    cost_table,
    fixed_bitops,
    size_bytes,
)
from smpq.errors import ArtifactError
from smpq.policy import LayerBits, Policy, fixed_bits

RESNET18_MACS = 1_814_073_344  # torchvision ResNet-18, 224×224, conv + fc (the 1.82 G anchor)


def single(layer: nn.Module, input_shape: tuple[int, ...]) -> LayerCost:
    table = cost_table(nn.Sequential(layer), input_shape)
    assert len(table.layers) == 1
    return table.layers[0]


@pytest.mark.parametrize(
    ("layer", "input_shape", "macs", "params", "out_channels"),
    [
        # plain 3×3, padding 1: 8 · 3 · 3·3 · 10·10
        (nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10), 8 * 3 * 9 * 100, 8 * 3 * 9, 8),
        # stride 2, padding 1 on 9×9: H_out = (9 + 2 − 3) // 2 + 1 = 5
        (nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), (4, 9, 9), 6 * 4 * 9 * 25, 6 * 4 * 9, 6),
        # depthwise: groups = channels, so C_in / groups = 1
        (nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), (8, 6, 6), 8 * 1 * 9 * 36, 8 * 9, 8),
        # grouped, no padding: 4 groups, 2 inputs per group, 7×7 → 5×5
        (nn.Conv2d(8, 12, 3, groups=4), (8, 7, 7), 12 * 2 * 9 * 25, 12 * 2 * 9, 12),
        # rectangular kernel 1×3 on 4×5 → 4×3
        (nn.Conv2d(2, 3, (1, 3)), (2, 4, 5), 3 * 2 * 3 * 12, 3 * 2 * 3, 3),
        # linear: in · out, bias excluded from params
        (nn.Linear(20, 5), (20,), 20 * 5, 100, 5),
        # linear over 4 tokens: in · out per token
        (nn.Linear(6, 3), (4, 6), 4 * 6 * 3, 18, 3),
    ],
    ids=["plain", "strided-padded", "depthwise", "grouped", "rectangular", "linear", "linear-tokens"],
)
def test_layer_macs_and_params_by_hand(layer, input_shape, macs, params, out_channels) -> None:
    cost = single(layer, input_shape)
    assert (cost.macs, cost.params, cost.out_channels) == (macs, params, out_channels)
    assert cost.kind == ("linear" if isinstance(layer, nn.Linear) else "conv")
    assert cost.name == "0"


@pytest.fixture(scope="module")
def resnet18_table() -> CostTable:
    return cost_table(torchvision.models.resnet18(weights=None), (3, 224, 224))


def test_resnet18_anchor(resnet18_table: CostTable) -> None:
    table = resnet18_table
    assert table.total_macs == RESNET18_MACS
    kinds = [layer.kind for layer in table.layers]
    assert len(table.layers) == 21 and kinds.count("conv") == 20 and kinds == ["conv"] * 20 + ["linear"]
    assert sum("downsample" in name for name in table.names) == 3
    assert (table.first, table.last) == ("conv1", "fc")
    assert len(table.searchable) == 19
    assert table["conv1"].macs == 64 * 3 * 49 * 112 * 112
    assert table["fc"].macs == 512 * 1000
    model = torchvision.models.resnet18(weights=None)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert sum(layer.params for layer in table.layers) == weights


def test_resnet18_w8a8_bitops_anchor(resnet18_table: CostTable) -> None:
    """HAWQ-V3 reports 116 GBitOps for W8A8 ResNet-18 = MACs · 8 · 8."""
    policy = Policy.uniform(resnet18_table.names, 8, 8)
    total = bitops(resnet18_table, policy)
    assert total == RESNET18_MACS * 64
    assert round(total / 1e9) == 116


class TwoLayer(nn.Module):
    """fc is declared before conv but runs after it: first/last must follow execution order."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.mid = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.mid(self.conv(x)), 1))


@pytest.fixture
def small_table() -> CostTable:
    return cost_table(TwoLayer(), (3, 8, 8))


def test_first_last_follow_execution_order(small_table: CostTable) -> None:
    assert small_table.names == ["conv", "mid", "fc"]
    assert (small_table.first, small_table.last, small_table.searchable) == ("conv", "fc", ["mid"])


def test_small_table_hand_counts(small_table: CostTable) -> None:
    assert small_table["conv"].macs == 8 * 3 * 9 * 16
    assert small_table["mid"].macs == 8 * 8 * 9 * 16
    assert small_table["fc"].macs == 128 * 10


def test_bitops_mixed_policy(small_table: CostTable) -> None:
    policy = Policy({"conv": (8, 8), "mid": (2, 4), "fc": (8, 8)})
    assert bitops(small_table, policy) == 3456 * 64 + 9216 * 2 * 4 + 1280 * 64


def test_size_bytes_by_hand(small_table: CostTable) -> None:
    policy = Policy({"conv": (8, 8), "mid": (3, 4), "fc": (4, 8)})
    expected = (216 * 8 / 8 + 4 * 8) + (576 * 3 / 8 + 4 * 8) + (1280 * 4 / 8 + 4 * 10)
    assert size_bytes(small_table, policy) == pytest.approx(expected)


def test_budget_avg_bits_keeps_fixed_layers_at_their_bits(small_table: CostTable) -> None:
    fixed = {"conv": LayerBits(8, 8), "fc": LayerBits(8, 8)}
    assert budget_bitops(small_table, fixed, avg_bits=2.5) == pytest.approx(3456 * 64 + 9216 * 6.25 + 1280 * 64)
    uniform3 = Policy.uniform(small_table.names, 3, 3, fixed=fixed)
    assert budget_bitops(small_table, fixed, avg_bits=3) == bitops(small_table, uniform3)
    assert budget_bitops(small_table, {}, avg_bits=4) == small_table.total_macs * 16


def test_budget_gbitops_form(small_table: CostTable) -> None:
    assert budget_bitops(small_table, {}, gbitops=1.25) == 1.25e9


@pytest.mark.parametrize("forms", [{}, {"avg_bits": 3, "gbitops": 1.0}])
def test_budget_needs_exactly_one_form(small_table: CostTable, forms: dict) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        budget_bitops(small_table, {}, **forms)


def test_cost_table_round_trip(small_table: CostTable) -> None:
    data = json.loads(json.dumps(small_table.to_dict()))
    assert CostTable.from_dict(data) == small_table
    assert CostTable.from_dict(data).input_shape == (3, 8, 8)


@pytest.mark.parametrize("measure", [bitops, size_bytes])
def test_policy_missing_a_layer_names_it(small_table: CostTable, measure) -> None:
    policy = Policy({"conv": (8, 8), "fc": (8, 8)})
    with pytest.raises(ArtifactError, match="'mid'"):
        measure(small_table, policy)


def test_unknown_layer_lookup(small_table: CostTable) -> None:
    with pytest.raises(KeyError, match="'nope'"):
        small_table["nope"]


def test_no_quantizable_layer_is_an_error() -> None:
    with pytest.raises(ValueError, match="no quantizable"):
        cost_table(nn.Sequential(nn.ReLU()), (4,))


def test_reused_module_counts_once_and_mode_is_restored() -> None:
    layer = nn.Linear(4, 4)
    model = nn.Sequential(layer, nn.ReLU(), layer)
    model.train()
    table = cost_table(model, (4,))
    assert table.names == ["0"] and table.total_macs == 16
    assert model.training


def test_layer_cost_formulas_match_the_model_totals(small_table: CostTable) -> None:
    policy = Policy({"conv": (8, 8), "mid": (3, 4), "fc": (4, 8)})
    layers = small_table.layers
    assert bitops(small_table, policy) == sum(c.bitops(*astuple(policy[c.name])) for c in layers)
    assert size_bytes(small_table, policy) == sum(c.weight_bytes(policy[c.name].w_bits) + c.bias_bytes for c in layers)
    assert layers[1].bitops(3, 4) == layers[1].macs * 12 and layers[1].bias_bytes == 4 * layers[1].out_channels


def test_fixed_bits_budget_and_fixed_bitops(small_table: CostTable) -> None:
    fixed = fixed_bits(BitsPair(8, 4), small_table)
    assert fixed == {"conv": LayerBits(8, 4), "fc": LayerBits(8, 4)}
    assert fixed_bitops(small_table, fixed) == (3456 + 1280) * 32
    budget = Budget.from_config(BudgetConfig(avg_bits=2.5, size_mb=0.5), small_table, fixed)
    assert budget == Budget(budget_bitops(small_table, fixed, avg_bits=2.5), 0.5e6)
    assert Budget.from_config(BudgetConfig(gbitops=1.25), small_table, fixed) == Budget(1.25e9, None)


def test_cost_table_file_round_trip_and_errors(small_table: CostTable, tmp_path) -> None:
    assert small_table.save(tmp_path) == tmp_path / COST_TABLE_FILE
    assert CostTable.load(tmp_path) == small_table
    with pytest.raises(ArtifactError, match="file not found"):
        CostTable.load(tmp_path / "missing")
    (tmp_path / COST_TABLE_FILE).write_text('{"layers": []}')
    with pytest.raises(ArtifactError, match="not a valid cost table.*rerun the calibrate stage"):
        CostTable.load(tmp_path)
