"""Exact multiple-choice knapsack: pick one item per group maximising the total score under one or two
cost budgets, as an integer program solved by HiGHS through ``scipy.optimize.milp``.

Generic: groups of items, each item a score and a cost (and optionally a second cost); no notion of layers
or bits here (``smpq.select`` builds the groups from a policy search).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from smpq.errors import InfeasibleBudget

logger = logging.getLogger(__name__)

_TIGHTEN_ATTEMPTS = 8


def solve_mckp(values: Sequence[Sequence[float]], costs: Sequence[Sequence[float]], budget: float,
               extra_costs: Sequence[Sequence[float]] | None = None,
               extra_budget: float | None = None) -> list[int]:
    """Exact multiple-choice knapsack: one item index per group maximising Σ values under Σ costs ≤ budget
    (and Σ extra_costs ≤ extra_budget when given).

    The returned choice never exceeds a budget (checked in exact float sums; the solver's feasibility
    tolerance is undone by tightening the right-hand side and solving again). Optimal up to HiGHS's
    absolute gap of 1e-6 on the objective normalised to a spread of 1.
    """
    groups = _as_groups("values", values)
    rows = [("costs", _as_groups("costs", costs), float(budget))]
    if (extra_costs is None) != (extra_budget is None):
        raise ValueError("give both extra_costs and extra_budget, or neither")
    if extra_costs is not None:
        rows.append(("extra_costs", _as_groups("extra_costs", extra_costs), float(extra_budget)))
    for name, row, _ in rows:
        if [len(g) for g in row] != [len(g) for g in groups]:
            raise ValueError(f"{name} must have the same group sizes as values: "
                             f"{[len(g) for g in row]} vs {[len(g) for g in groups]}")
    _check_feasible(rows)
    choice = _solve_tightened(groups, rows)
    if choice is None:
        raise _joint_infeasible(groups, rows)
    return choice


def _as_groups(name: str, groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if not arrays:
        raise ValueError(f"{name}: need at least one group")
    for index, array in enumerate(arrays):
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name}[{index}] must be a non-empty 1-D sequence")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}[{index}] contains a non-finite number")
    return arrays


def _check_feasible(rows: list) -> None:
    for name, row, budget in rows:
        minimum = math.fsum(float(g.min()) for g in row)
        if minimum > budget:
            raise InfeasibleBudget(f"budget {budget:.10g} on {name} is infeasible: the smallest feasible budget is "
                                   f"{minimum:.10g} (the cheapest item of every group)", minimum=minimum, budget=budget,
                                   constraint=name)


def _solve_tightened(groups: list[np.ndarray], rows: list) -> list[int] | None:
    """Solve; if the chosen items overshoot a budget (solver tolerance), lower that row's bound and retry."""
    bounds = [_initial_bound(row, budget) for _, row, budget in rows]
    for attempt in range(_TIGHTEN_ATTEMPTS):
        choice = _solve_milp(groups, [row for _, row, _ in rows], bounds)
        if choice is None:
            return None
        excess = [_total(row, choice) - budget for _, row, budget in rows]
        if all(e <= 0 for e in excess):
            return choice
        for index, e in enumerate(excess):
            if e > 0:  # step back by at least the overshoot, doubling until the solver's tolerance is absorbed
                bounds[index] -= max(2 * e, 1e-9 * max(1.0, abs(rows[index][2]))) * 2 ** attempt
        logger.debug("MCKP solution over budget by %s; tightening and re-solving", excess)
    raise RuntimeError("MCKP: the solver kept returning over-budget choices; costs may be badly scaled")


def _initial_bound(row: list[np.ndarray], budget: float) -> float:
    """Integer costs can only sum to integers, so floor(budget) loses nothing and guards the tolerance."""
    integral = all(np.all(g == np.round(g)) for g in row)
    return math.floor(budget) if integral else budget


def _solve_milp(groups: list[np.ndarray], cost_rows: list[list[np.ndarray]], bounds: list[float]) -> list[int] | None:
    """One binary per item; Σ per group = 1; each cost row ≤ its bound. Values are shifted per group (the
    choice is unchanged, exactly one item per group) and scaled to a spread of 1 for the solver's gaps."""
    sizes = [g.size for g in groups]
    starts = np.cumsum([0, *sizes])
    objective = np.concatenate([g - g.max() for g in groups])
    spread = float(np.max(np.abs(objective)))
    objective = -objective / spread if spread > 0 else -objective
    constraints = [LinearConstraint(_membership(sizes), 1, 1)]
    for row, bound in zip(cost_rows, bounds):
        constraints.append(LinearConstraint(np.concatenate(row)[None, :], -np.inf, bound))
    result = milp(objective, integrality=np.ones(starts[-1]), bounds=Bounds(0, 1), constraints=constraints,
                  options={"mip_rel_gap": 0.0})
    if result.x is None:
        return None
    return [int(np.argmax(result.x[starts[g]:starts[g + 1]])) for g in range(len(groups))]


def _membership(sizes: list[int]) -> csr_array:
    """Group-membership matrix: row g has ones on the items of group g."""
    total = sum(sizes)
    return csr_array((np.ones(total), np.arange(total), np.cumsum([0, *sizes])), shape=(len(sizes), total))


def _total(row: list[np.ndarray], choice: list[int]) -> float:
    return math.fsum(float(g[k]) for g, k in zip(row, choice))


def _joint_infeasible(groups: list[np.ndarray], rows: list) -> InfeasibleBudget:
    """Each budget alone is feasible but not both: the smallest first budget given the second."""
    (_, costs, budget), (extra_name, extra, extra_budget) = rows
    cheapest = _solve_milp([-g for g in costs], [extra], [extra_budget])
    minimum = _total(costs, cheapest) if cheapest is not None else math.inf
    return InfeasibleBudget(f"budget {budget:.10g} on costs is infeasible together with {extra_name} ≤ "
                            f"{extra_budget:.10g}: the smallest feasible budget is {minimum:.10g}",
                            minimum=minimum, budget=budget)
