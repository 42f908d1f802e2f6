"""Budgeted selection: the MCKP solver against brute force, and policies built on a small cost table."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import scipy.optimize

import smpq.select as select
from smpq.cost import CostTable, LayerCost, bitops, size_bytes
from smpq.policy import LayerBits, Policy
from smpq.select import InfeasibleBudget, policy_report, select_policy, solve_mckp, uniform_policy


def brute_force(values, costs, budget, extra_costs=None, extra_budget=None):
    """Best objective over all one-per-group choices within the budget(s); None when none fits."""
    best = None
    for choice in product(*(range(len(g)) for g in values)):
        if math.fsum(c[k] for c, k in zip(costs, choice)) > budget:
            continue
        if extra_costs is not None and math.fsum(c[k] for c, k in zip(extra_costs, choice)) > extra_budget:
            continue
        objective = math.fsum(v[k] for v, k in zip(values, choice))
        best = objective if best is None else max(best, objective)
    return best


def random_instance(rng, integer_costs):
    sizes = rng.integers(1, 5, size=rng.integers(1, 5))
    values = [rng.normal(size=s).tolist() for s in sizes]
    if integer_costs:
        costs = [rng.integers(1, 30, size=s).astype(float).tolist() for s in sizes]
    else:
        costs = [rng.uniform(0.1, 10.0, size=s).tolist() for s in sizes]
    return values, costs


def total(groups, choice):
    return math.fsum(g[k] for g, k in zip(groups, choice))


@pytest.mark.parametrize("integer_costs", [True, False])
def test_solve_mckp_matches_brute_force(integer_costs):
    rng = np.random.default_rng(1 if integer_costs else 2)
    for _ in range(120):
        values, costs = random_instance(rng, integer_costs)
        low, high = sum(min(c) for c in costs), sum(max(c) for c in costs)
        if integer_costs and rng.random() < 0.5:  # budget exactly on a choice's total
            budget = total(costs, [rng.integers(len(c)) for c in costs])
        else:
            budget = rng.uniform(low, high)
        choice = solve_mckp(values, costs, budget)
        assert len(choice) == len(values)
        assert all(0 <= k < len(v) for k, v in zip(choice, values))
        assert total(costs, choice) <= budget
        assert total(values, choice) == pytest.approx(brute_force(values, costs, budget), abs=1e-9)


def test_solve_mckp_with_a_second_budget_matches_brute_force():
    rng = np.random.default_rng(3)
    infeasible = 0
    for _ in range(100):
        values, costs = random_instance(rng, integer_costs=False)
        extra = [rng.uniform(0.1, 10.0, size=len(c)).tolist() for c in costs]
        budget = rng.uniform(sum(min(c) for c in costs), sum(max(c) for c in costs))
        extra_budget = rng.uniform(sum(min(c) for c in extra), sum(max(c) for c in extra))
        best = brute_force(values, costs, budget, extra, extra_budget)
        if best is None:
            infeasible += 1
            with pytest.raises(InfeasibleBudget, match="smallest feasible budget"):
                solve_mckp(values, costs, budget, extra_costs=extra, extra_budget=extra_budget)
            continue
        choice = solve_mckp(values, costs, budget, extra_costs=extra, extra_budget=extra_budget)
        assert total(costs, choice) <= budget and total(extra, choice) <= extra_budget
        assert total(values, choice) == pytest.approx(best, abs=1e-9)
    assert 0 < infeasible < 100


def test_infeasible_budget_names_the_smallest_feasible_budget():
    with pytest.raises(InfeasibleBudget, match=r"budget 4 .*smallest feasible budget is 5") as info:
        solve_mckp([[1.0, 2.0], [0.0, 1.0]], [[3, 5], [2, 4]], 4)
    assert info.value.minimum == 5 and isinstance(info.value, ValueError)


def test_jointly_infeasible_budgets_name_the_smallest_budget_given_the_second():
    with pytest.raises(InfeasibleBudget, match="smallest feasible budget is 10") as info:
        solve_mckp([[0.0, 1.0]], [[1.0, 10.0]], 5.0, extra_costs=[[10.0, 1.0]], extra_budget=5.0)
    assert info.value.minimum == pytest.approx(10.0)


def test_solver_tolerance_overshoot_is_tightened_away(monkeypatch):
    """A solver that admits 1e-8 over the bound must not make the returned choice exceed the budget."""
    real = scipy.optimize.milp

    def sloppy(c, *, constraints, **kwargs):
        loose = [scipy.optimize.LinearConstraint(k.A, k.lb, k.ub + (1e-8 if k.A.shape[0] == 1 else 0))
                 for k in constraints]
        return real(c, constraints=loose, **kwargs)

    monkeypatch.setattr(select, "milp", sloppy)
    budget = 3.0 - 1e-9  # the better item would cost 3.0: over by 1e-9, inside the sloppy tolerance
    choice = solve_mckp([[0.0, 1.0], [0.0]], [[1.0, 2.0], [1.0]], budget)
    assert choice == [0, 0]


def test_bad_mckp_inputs_are_rejected():
    with pytest.raises(ValueError, match="same group sizes"):
        solve_mckp([[1.0, 2.0]], [[1.0]], 5)
    with pytest.raises(ValueError, match="non-empty"):
        solve_mckp([[]], [[]], 5)
    with pytest.raises(ValueError, match="both extra_costs and extra_budget"):
        solve_mckp([[1.0]], [[1.0]], 5, extra_costs=[[1.0]])


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
            policy = select_policy(scores, table, budget, FIXED, w_bits=W_BITS, a_bits=A_BITS, size_budget_bytes=size)
            assert list(policy) == table.names
            assert policy["stem"] == FIXED["stem"] and policy["fc"] == FIXED["fc"]
            assert bitops(table, policy) <= budget
            assert size is None or size_bytes(table, policy) <= size
            assert policy_value(scores, policy, table) == pytest.approx(best, abs=1e-9)


def test_select_policy_errors(table):
    scores = random_scores(table, np.random.default_rng(0))
    del scores[("b2", "a", 4)]
    with pytest.raises(KeyError, match=r"'b2', 'a', 4"):
        select_policy(scores, table, 1e9, FIXED, w_bits=W_BITS, a_bits=A_BITS)
    scores = random_scores(table, np.random.default_rng(0))
    smallest = bitops(table, Policy.uniform(table.names, 2, 2, FIXED))
    with pytest.raises(InfeasibleBudget, match=f"smallest feasible budget is {smallest / 1e9:.6g} GBitOps") as info:
        select_policy(scores, table, smallest - 1, FIXED, w_bits=W_BITS, a_bits=A_BITS)
    assert info.value.minimum == smallest
    with pytest.raises(InfeasibleBudget, match="size budget"):
        select_policy(scores, table, 1e9, FIXED, w_bits=W_BITS, a_bits=A_BITS, size_budget_bytes=100.0)


def uniform_bitops(table, w, a):
    return bitops(table, Policy.uniform(table.names, w, a, FIXED))


def test_uniform_policy_picks_the_highest_fitting_pair_with_documented_ties(table):
    bits = dict(w_bits=(2, 4, 8), a_bits=(2, 4, 8))
    # W2A8, W8A2 and W4A4 have the same BitOps: the larger min(w, a) wins
    assert uniform_policy(table, FIXED, budget_bitops=uniform_bitops(table, 4, 4), **bits)["b1"] == LayerBits(4, 4)
    # W2A4 and W4A2 tie in BitOps and in min(w, a): the larger w wins
    budget = uniform_bitops(table, 4, 2) + 1
    assert uniform_policy(table, FIXED, budget_bitops=budget, **bits) == Policy.uniform(table.names, 4, 2, FIXED)
    # a size budget that excludes 8-bit weights leaves W4A8 as the highest pair
    size = size_bytes(table, Policy.uniform(table.names, 4, 8, FIXED))
    policy = uniform_policy(table, FIXED, budget_bitops=1e12, size_budget_bytes=size, **bits)
    assert policy == Policy.uniform(table.names, 4, 8, FIXED)
    with pytest.raises(InfeasibleBudget, match=f"smallest feasible budget is {uniform_bitops(table, 2, 2) / 1e9:.6g}"):
        uniform_policy(table, FIXED, budget_bitops=uniform_bitops(table, 2, 2) - 1, **bits)


def test_policy_report(table):
    policy = Policy.uniform(table.names, 4, 4, FIXED)
    used = bitops(table, policy)
    report = policy_report(table, policy, used + 2e9)
    assert report["gbitops"] == pytest.approx(used / 1e9) and report["slack"] == pytest.approx(2.0)
    assert report["size_mb"] == pytest.approx(size_bytes(table, policy) / 1e6)
    assert report["budget_gbitops"] == pytest.approx(used / 1e9 + 2) and report["meets_budget"] is True
    assert policy_report(table, policy, used - 1)["meets_budget"] is False
    assert policy_report(table, policy, used, size_budget_bytes=1.0)["meets_budget"] is False
