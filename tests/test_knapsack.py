"""The multiple-choice knapsack solver against brute force, its tolerance handling and its input checks."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import scipy.optimize

import smpq.knapsack as knapsack
from smpq.errors import InfeasibleBudget
from smpq.knapsack import solve_mckp


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

    monkeypatch.setattr(knapsack, "milp", sloppy)
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
