"""``bench.alignment.random_policies``: seeded draws inside the budget band, and a clear end where none fit."""

from __future__ import annotations

import pytest

from bench import alignment
from bench.workspace import default_params
from smpq.cost import Budget, CostTable, LayerCost, bitops
from smpq.policy import fixed_bits

TABLE = CostTable(layers=(LayerCost("stem", "conv", 1000, 100, 8), LayerCost("b1", "conv", 5000, 600, 16),
                          LayerCost("b2", "conv", 3000, 1200, 16), LayerCost("fc", "linear", 640, 640, 10)),
                  input_shape=(1, 8, 8))


def test_policies_fall_in_the_band_and_repeat_with_the_seed():
    params = default_params({"select.budget.avg_bits": 4})
    budget = Budget.from_config(params.select.budget, TABLE, fixed_bits(params.quant.first_last, TABLE)).bitops
    policies = alignment.random_policies(params, TABLE, 3, seed=0)
    assert list(policies) == ["random00", "random01", "random02"]
    assert all(0.85 * budget <= bitops(TABLE, p) <= budget for p in policies.values())
    assert alignment.random_policies(params, TABLE, 3, seed=0) == policies


def test_a_band_the_draws_cannot_fill_is_one_line_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(alignment, "MAX_DRAWS", 20)  # at 2 bits only W2A2 everywhere fits: 1 draw in 256
    with pytest.raises(SystemExit, match=r"^error: 20 random policies gave 0 of 2 within 85–100 % of select\.budget"):
        alignment.random_policies(default_params({"select.budget.avg_bits": 2}), TABLE, 2, seed=0)
