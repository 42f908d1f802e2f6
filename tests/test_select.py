"""Budgeted selection: policies built on a small cost table, against brute force, at a ``Budget``."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from smpq.cost import Budget, CostTable, LayerCost, bitops, size_bytes
from smpq.errors import ArtifactError, InfeasibleBudget
from smpq.policy import LayerBits, Policy
from smpq.select import policy_report, select_policy, uniform_policy

W_BITS, A_BITS = (2, 4, 8), (2, 4)
FIXED = {"stem": LayerBits(8, 8), "fc": LayerBits(8, 8)}


@pytest.fixture
def table():
    return CostTable(layers=(
        LayerCost("stem", "conv", 1000, 100, 8),
        LayerCost("b1", "conv", 5000, 600, 16),
        LayerCost("b2", "conv", 3000, 1200, 16),
        LayerCost("b3", "conv", 800, 2400, 32),
        LayerCost("fc", "linear", 640, 640, 10),
    ), input_shape=(1, 8, 8))


def random_scores(table, rng):
    return {(name, kind, b): float(rng.normal()) for name in table.searchable
            for kind, bits in (("w", W_BITS), ("a", A_BITS)) for b in bits}


def brute_force_policy(scores, table, budget, size_budget=None):
    best, best_policy = None, None
    for pairs in product(product(W_BITS, A_BITS), repeat=len(table.searchable)):
        policy = Policy({**FIXED, **dict(zip(table.searchable, pairs))})
        if bitops(table, policy) > budget or (size_budget is not None and size_bytes(table, policy) > size_budget):
            continue
        value = sum(scores[(n, "w", w)] + scores[(n, "a", a)] for n, (w, a) in zip(table.searchable, pairs))
        if best is None or value > best:
            best, best_policy = value, policy
    return best, best_policy


def policy_value(scores, policy, table):
    return sum(scores[(n, "w", policy[n].w_bits)] + scores[(n, "a", policy[n].a_bits)] for n in table.searchable)


def test_select_policy_matches_brute_force(table):
    rng = np.random.default_rng(5)
    low = bitops(table, Policy.uniform(table.names, 2, 2, FIXED))
    high = bitops(table, Policy.uniform(table.names, 8, 4, FIXED))
    for _ in range(15):
        scores = random_scores(table, rng)
        budget = rng.uniform(low, high)
        size_budget = rng.uniform(size_bytes(table, Policy.uniform(table.names, 4, 2, FIXED)),
                                  size_bytes(table, Policy.uniform(table.names, 8, 2, FIXED)))
        for size in (None, size_budget):
            best, _ = brute_force_policy(scores, table, budget, size)
            policy = select_policy(scores, table, Budget(budget, size), FIXED, w_bits=W_BITS, a_bits=A_BITS)
            assert list(policy) == table.names
            assert policy["stem"] == FIXED["stem"] and policy["fc"] == FIXED["fc"]
            assert bitops(table, policy) <= budget
            assert size is None or size_bytes(table, policy) <= size
            assert policy_value(scores, policy, table) == pytest.approx(best, abs=1e-9)


def test_select_policy_errors(table):
    scores = random_scores(table, np.random.default_rng(0))
    del scores[("b2", "a", 4)]
    with pytest.raises(ArtifactError, match=r"'b2', 'a', 4"):
        select_policy(scores, table, Budget(1e9), FIXED, w_bits=W_BITS, a_bits=A_BITS)
    scores = random_scores(table, np.random.default_rng(0))
    smallest = bitops(table, Policy.uniform(table.names, 2, 2, FIXED))
    with pytest.raises(InfeasibleBudget, match=f"smallest feasible budget is {smallest / 1e9:.6g} GBitOps") as info:
        select_policy(scores, table, Budget(smallest - 1), FIXED, w_bits=W_BITS, a_bits=A_BITS)
    assert info.value.minimum == smallest
    with pytest.raises(InfeasibleBudget, match="size budget"):
        select_policy(scores, table, Budget(1e9, 100.0), FIXED, w_bits=W_BITS, a_bits=A_BITS)


def uniform_bitops(table, w, a):
    return bitops(table, Policy.uniform(table.names, w, a, FIXED))


def test_uniform_policy_picks_the_highest_fitting_pair_with_documented_ties(table):
    bits = dict(w_bits=(2, 4, 8), a_bits=(2, 4, 8))
    # W2A8, W8A2 and W4A4 have the same BitOps: the larger min(w, a) wins
    assert uniform_policy(table, FIXED, Budget(uniform_bitops(table, 4, 4)), **bits)["b1"] == LayerBits(4, 4)
    # W2A4 and W4A2 tie in BitOps and in min(w, a): the larger w wins
    budget = uniform_bitops(table, 4, 2) + 1
    assert uniform_policy(table, FIXED, Budget(budget), **bits) == Policy.uniform(table.names, 4, 2, FIXED)
    # a size budget that excludes 8-bit weights leaves W4A8 as the highest pair
    size = size_bytes(table, Policy.uniform(table.names, 4, 8, FIXED))
    policy = uniform_policy(table, FIXED, Budget(1e12, size), **bits)
    assert policy == Policy.uniform(table.names, 4, 8, FIXED)
    with pytest.raises(InfeasibleBudget, match=f"smallest feasible budget is {uniform_bitops(table, 2, 2) / 1e9:.6g}"):
        uniform_policy(table, FIXED, Budget(uniform_bitops(table, 2, 2) - 1), **bits)


def test_policy_report(table):
    policy = Policy.uniform(table.names, 4, 4, FIXED)
    used = bitops(table, policy)
    report = policy_report(table, policy, Budget(used + 2e9))
    assert report["gbitops"] == pytest.approx(used / 1e9) and report["slack"] == pytest.approx(2.0)
    assert report["size_mb"] == pytest.approx(size_bytes(table, policy) / 1e6)
    assert report["budget_gbitops"] == pytest.approx(used / 1e9 + 2) and report["meets_budget"] is True
    assert policy_report(table, policy, Budget(used - 1))["meets_budget"] is False
    assert policy_report(table, policy, Budget(used, 1.0))["meets_budget"] is False


@pytest.mark.parametrize("form", ["avg_bits", "gbitops", "size_mb"])
def test_an_infeasible_budget_names_its_key_and_the_smallest_feasible_value_in_its_unit(table, form):
    from smpq.config import BudgetConfig
    from smpq.cost import budget_bitops
    from smpq.select import budget_error

    scores = random_scores(table, np.random.default_rng(0))
    cfg = {"avg_bits": BudgetConfig(avg_bits=1.5), "gbitops": BudgetConfig(gbitops=1e-6),
           "size_mb": BudgetConfig(avg_bits=8, size_mb=1e-4)}[form]
    budget = Budget.from_config(cfg, table, FIXED)
    with pytest.raises(InfeasibleBudget) as info:
        select_policy(scores, table, budget, FIXED, w_bits=W_BITS, a_bits=A_BITS)
    err = budget_error(info.value, cfg, table, FIXED)
    message = str(err)
    assert message.startswith(f"select.budget.{form}: {getattr(cfg, form):g} is infeasible")
    assert message.endswith(f"the smallest feasible {form} is {err.minimum:g}: set select.budget.{form} to at least "
                            "that")
    minimum = err.minimum
    fitting = {"avg_bits": BudgetConfig(avg_bits=minimum), "gbitops": BudgetConfig(gbitops=minimum),
               "size_mb": BudgetConfig(avg_bits=8, size_mb=minimum)}[form]
    select_policy(scores, table, Budget.from_config(fitting, table, FIXED), FIXED, w_bits=W_BITS, a_bits=A_BITS)
    below = minimum * (1 - 2e-3)  # the value is rounded up to 4 significant digits, not further
    if form == "avg_bits":
        assert budget_bitops(table, FIXED, avg_bits=below) < info.value.minimum
    else:
        assert below < info.value.minimum / (1e9 if form == "gbitops" else 1e6)
