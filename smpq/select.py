"""Budgeted policy selection (SPEC §3.4): an exact multiple-choice knapsack over per-layer bit pairs.

Each searchable layer is one group; each (b_w, b_a) pair an item with value φ(l, w, b_w) + φ(l, a, b_a) and
cost MACs · b_w · b_a (plus, optionally, a weight-size cost). Choosing exactly one item per group under the
budget is solved as an integer program with HiGHS through ``scipy.optimize.milp``, as HAWQ-V3 (Yao et al.
2021) and LIMPQ (Tang et al. 2022) select bit-widths with an ILP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from itertools import product

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from smpq.cost import CostTable, bitops, size_bytes
from smpq.policy import LayerBits, Policy

logger = logging.getLogger(__name__)

_TIGHTEN_ATTEMPTS = 8
_BIAS_BYTES = 4  # per output channel: 32-bit bias / folded batch norm, as smpq.cost.size_bytes


class InfeasibleBudget(ValueError):
    """No choice fits the budget; ``minimum`` is the smallest ``budget`` of ``constraint`` that admits one."""

    def __init__(self, message: str, *, minimum: float, budget: float, constraint: str = "costs"):
        super().__init__(message)
        self.minimum = minimum
        self.budget = budget
        self.constraint = constraint


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


def select_policy(scores: Mapping[tuple[str, str, int], float], table: CostTable, budget_bitops: float,
                  fixed: Mapping[str, LayerBits], *, w_bits: Sequence[int], a_bits: Sequence[int],
                  size_budget_bytes: float | None = None) -> Policy:
    """The policy maximising Σ_l φ(l, w, b_w) + φ(l, a, b_a) under the BitOps (and optional size) budget.

    Every table layer not in ``fixed`` is searched (normally ``table.searchable``); the fixed layers'
    BitOps and size are taken off the budgets first. Scores are keyed ``(layer, "w" | "a", bits)``.
    """
    searched = _searched_layers(table, fixed)
    pairs = list(product(w_bits, a_bits))
    values = [[_score(scores, name, "w", w) + _score(scores, name, "a", a) for w, a in pairs] for name in searched]
    costs = [[table[name].macs * w * a for w, a in pairs] for name in searched]
    fixed_policy = Policy({name: fixed[name] for name in table.names if name in fixed})
    fixed_bitops = sum(table[n].macs * b.w_bits * b.a_bits for n, b in fixed_policy.items())
    extra = {}
    if size_budget_bytes is not None:
        fixed_size = _fixed_size(table, fixed_policy) + sum(_BIAS_BYTES * table[n].out_channels for n in searched)
        extra = {"extra_costs": [[table[name].params * w / 8 for w, _ in pairs] for name in searched],
                 "extra_budget": size_budget_bytes - fixed_size}
    try:
        choice = solve_mckp(values, costs, budget_bitops - fixed_bitops, **extra)
    except InfeasibleBudget as err:
        raise _policy_infeasible(err, fixed_bitops, budget_bitops, extra, size_budget_bytes) from None
    chosen = {name: LayerBits(*pairs[k]) for name, k in zip(searched, choice)}
    policy = Policy({name: fixed[name] if name in fixed else chosen[name] for name in table.names})
    logger.info("selected policy: %.4g of %.4g GBitOps", bitops(table, policy) / 1e9, budget_bitops / 1e9)
    return policy


def uniform_policy(table: CostTable, fixed: Mapping[str, LayerBits], *, w_bits: Sequence[int],
                   a_bits: Sequence[int], budget_bitops: float, size_budget_bytes: float | None = None) -> Policy:
    """The highest uniform bit pair that fits: among pairs (w, a) ∈ w_bits × a_bits applied to every
    non-fixed layer and meeting the budget(s), the one with the most BitOps; ties → larger min(w, a),
    then larger w."""
    _searched_layers(table, fixed)
    candidates = {(w, a): Policy.uniform(table.names, w, a, fixed) for w, a in product(w_bits, a_bits)}
    if not candidates:
        raise ValueError("uniform_policy needs at least one weight and one activation bit-width")
    size_ok = {pair: p for pair, p in candidates.items()
               if size_budget_bytes is None or size_bytes(table, p) <= size_budget_bytes}
    fitting = [(bitops(table, p), min(pair), pair[0], p) for pair, p in size_ok.items()
               if bitops(table, p) <= budget_bitops]
    if fitting:
        return max(fitting, key=lambda item: item[:3])[3]
    if not size_ok:
        smallest = min(size_bytes(table, p) for p in candidates.values())
        raise InfeasibleBudget(f"no uniform bit pair fits the size budget {size_budget_bytes / 1e6:.6g} MB; the "
                               f"smallest uniform model is {smallest / 1e6:.6g} MB", minimum=smallest,
                               budget=size_budget_bytes)
    smallest = min(bitops(table, p) for p in size_ok.values())
    raise InfeasibleBudget(f"no uniform bit pair fits the BitOps budget {budget_bitops / 1e9:.6g} GBitOps; the "
                           f"smallest feasible budget is {smallest / 1e9:.6g} GBitOps", minimum=smallest,
                           budget=budget_bitops)


def policy_report(table: CostTable, policy: Policy, budget_bitops: float,
                  size_budget_bytes: float | None = None) -> dict:
    """Budget use of a policy: GBitOps, size (MB = 1e6 bytes), budget, slack and whether it meets the budget(s)."""
    used, size = bitops(table, policy), size_bytes(table, policy)
    report = {"gbitops": used / 1e9, "size_mb": size / 1e6, "budget_gbitops": budget_bitops / 1e9,
              "slack": (budget_bitops - used) / 1e9, "meets_budget": used <= budget_bitops}
    if size_budget_bytes is not None:
        report |= {"size_budget_mb": size_budget_bytes / 1e6, "size_slack_mb": (size_budget_bytes - size) / 1e6}
        report["meets_budget"] = report["meets_budget"] and size <= size_budget_bytes
    return report


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


def _searched_layers(table: CostTable, fixed: Mapping[str, LayerBits]) -> list[str]:
    unknown = sorted(set(fixed) - set(table.names))
    if unknown:
        raise ValueError(f"fixed bits given for layers not in the cost table: {unknown}")
    return [name for name in table.names if name not in fixed]


def _score(scores: Mapping[tuple[str, str, int], float], layer: str, kind: str, bits: int) -> float:
    try:
        return float(scores[(layer, kind, bits)])
    except KeyError:
        raise KeyError(f"no score for candidate ({layer!r}, {kind!r}, {bits}); the scores must cover every "
                       f"weight and activation bit-width of every searched layer") from None


def _fixed_size(table: CostTable, fixed_policy: Policy) -> float:
    return sum(table[n].params * b.w_bits / 8 + _BIAS_BYTES * table[n].out_channels for n, b in fixed_policy.items())


def _policy_infeasible(err: InfeasibleBudget, fixed_bitops: float, budget_bitops: float, extra: dict,
                       size_budget: float | None) -> InfeasibleBudget:
    """Re-state a reduced-budget infeasibility in whole-model units (the fixed layers added back)."""
    if err.constraint == "extra_costs":
        minimum = err.minimum + (size_budget - extra["extra_budget"])
        return InfeasibleBudget(f"size budget {size_budget / 1e6:.6g} MB is infeasible: the smallest model "
                                f"is {minimum / 1e6:.6g} MB", minimum=minimum, budget=size_budget)
    minimum = err.minimum + fixed_bitops
    what = " with the size budget" if size_budget is not None else ""
    return InfeasibleBudget(f"BitOps budget {budget_bitops / 1e9:.6g} GBitOps is infeasible{what}: the smallest "
                            f"feasible budget is {minimum / 1e9:.6g} GBitOps (fixed layers included)",
                            minimum=minimum, budget=budget_bitops)
