"""Budgeted policy selection (SPEC §3.4): one (b_w, b_a) pair per searchable layer under the budget.

Each searchable layer is one group of a multiple-choice knapsack (``smpq.knapsack``); each (b_w, b_a) pair an
item with value φ(l, w, b_w) + φ(l, a, b_a) and cost MACs · b_w · b_a (plus, optionally, its weight bytes),
solved exactly as an integer program, as HAWQ-V3 (Yao et al. 2021) and LIMPQ (Tang et al. 2022) select
bit-widths with an ILP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from itertools import product

from smpq.config import BudgetConfig
from smpq.cost import Budget, CostTable, bitops, fixed_bitops, size_bytes
from smpq.errors import ArtifactError, InfeasibleBudget
from smpq.knapsack import solve_mckp
from smpq.policy import LayerBits, Policy

logger = logging.getLogger(__name__)


def select_policy(scores: Mapping[tuple[str, str, int], float], table: CostTable, budget: Budget,
                  fixed: Mapping[str, LayerBits], *, w_bits: Sequence[int], a_bits: Sequence[int]) -> Policy:
    """The policy maximising Σ_l φ(l, w, b_w) + φ(l, a, b_a) under the BitOps (and optional size) budget.

    Every table layer not in ``fixed`` is searched (normally ``table.searchable``); the fixed layers'
    BitOps and size are taken off the budgets first. Scores are keyed ``(layer, "w" | "a", bits)``.
    """
    searched = _searched_layers(table, fixed)
    pairs = list(product(w_bits, a_bits))
    values = [[_score(scores, name, "w", w) + _score(scores, name, "a", a) for w, a in pairs] for name in searched]
    costs = [[table[name].bitops(w, a) for w, a in pairs] for name in searched]
    fixed_policy = Policy({name: fixed[name] for name in table.names if name in fixed})
    fixed_ops = fixed_bitops(table, fixed_policy)
    extra = {}
    if budget.size_bytes is not None:
        fixed_size = (sum(table[n].size_bytes(b.w_bits) for n, b in fixed_policy.items())
                      + sum(table[n].bias_bytes for n in searched))
        extra = {"extra_costs": [[table[name].weight_bytes(w) for w, _ in pairs] for name in searched],
                 "extra_budget": budget.size_bytes - fixed_size}
    try:
        choice = solve_mckp(values, costs, budget.bitops - fixed_ops, **extra)
    except InfeasibleBudget as err:
        raise _policy_infeasible(err, fixed_ops, budget, extra) from None
    chosen = {name: LayerBits(*pairs[k]) for name, k in zip(searched, choice)}
    policy = Policy({name: fixed[name] if name in fixed else chosen[name] for name in table.names})
    return policy


def uniform_policy(table: CostTable, fixed: Mapping[str, LayerBits], budget: Budget, *, w_bits: Sequence[int],
                   a_bits: Sequence[int]) -> Policy:
    """The highest uniform bit pair that fits: among pairs (w, a) ∈ w_bits × a_bits applied to every
    non-fixed layer and meeting the budget(s), the one with the most BitOps; ties → larger min(w, a),
    then larger w."""
    _searched_layers(table, fixed)
    candidates = {(w, a): Policy.uniform(table.names, w, a, fixed) for w, a in product(w_bits, a_bits)}
    if not candidates:
        raise ValueError("uniform_policy needs at least one weight and one activation bit-width")
    size_ok = {pair: p for pair, p in candidates.items()
               if budget.size_bytes is None or size_bytes(table, p) <= budget.size_bytes}
    fitting = [(bitops(table, p), min(pair), pair[0], p) for pair, p in size_ok.items()
               if bitops(table, p) <= budget.bitops]
    if fitting:
        return max(fitting, key=lambda item: item[:3])[3]
    if not size_ok:
        smallest = min(size_bytes(table, p) for p in candidates.values())
        raise InfeasibleBudget(f"no uniform bit pair fits the size budget {budget.size_bytes / 1e6:.6g} MB; the "
                               f"smallest uniform model is {smallest / 1e6:.6g} MB", minimum=smallest,
                               budget=budget.size_bytes, constraint="size")
    smallest = min(bitops(table, p) for p in size_ok.values())
    raise InfeasibleBudget(f"no uniform bit pair fits the BitOps budget {budget.bitops / 1e9:.6g} GBitOps; the "
                           f"smallest feasible budget is {smallest / 1e9:.6g} GBitOps", minimum=smallest,
                           budget=budget.bitops)


def policy_report(table: CostTable, policy: Policy, budget: Budget) -> dict:
    """Budget use of a policy: GBitOps, size (MB = 1e6 bytes), budget, slack and whether it meets the budget(s)."""
    used, size = bitops(table, policy), size_bytes(table, policy)
    report = {"gbitops": used / 1e9, "size_mb": size / 1e6, "budget_gbitops": budget.bitops / 1e9,
              "slack": (budget.bitops - used) / 1e9, "meets_budget": used <= budget.bitops}
    if budget.size_bytes is not None:
        report |= {"size_budget_mb": budget.size_bytes / 1e6, "size_slack_mb": (budget.size_bytes - size) / 1e6}
        report["meets_budget"] = report["meets_budget"] and size <= budget.size_bytes
    return report


def _searched_layers(table: CostTable, fixed: Mapping[str, LayerBits]) -> list[str]:
    unknown = sorted(set(fixed) - set(table.names))
    if unknown:
        raise ValueError(f"fixed bits given for layers not in the cost table: {unknown}")
    return [name for name in table.names if name not in fixed]


def _score(scores: Mapping[tuple[str, str, int], float], layer: str, kind: str, bits: int) -> float:
    try:
        return float(scores[(layer, kind, bits)])
    except KeyError:
        raise ArtifactError(f"no score for candidate ({layer!r}, {kind!r}, {bits}); the scores must cover every "
                            f"weight and activation bit-width of every searched layer") from None


def _policy_infeasible(err: InfeasibleBudget, fixed_bitops: float, budget: Budget, extra: dict) -> InfeasibleBudget:
    """Re-state a reduced-budget infeasibility in whole-model units (the fixed layers added back)."""
    budget_bitops, size_budget = budget.bitops, budget.size_bytes
    if err.constraint == "extra_costs":
        minimum = err.minimum + (size_budget - extra["extra_budget"])
        return InfeasibleBudget(f"size budget {size_budget / 1e6:.6g} MB is infeasible: the smallest model "
                                f"is {minimum / 1e6:.6g} MB", minimum=minimum, budget=size_budget,
                                constraint="size")
    minimum = err.minimum + fixed_bitops
    what = " with the size budget" if size_budget is not None else ""
    return InfeasibleBudget(f"BitOps budget {budget_bitops / 1e9:.6g} GBitOps is infeasible{what}: the smallest "
                            f"feasible budget is {minimum / 1e9:.6g} GBitOps (fixed layers included)",
                            minimum=minimum, budget=budget_bitops)


def budget_error(err: InfeasibleBudget, cfg: BudgetConfig, table: CostTable, fixed: Mapping[str, LayerBits],
                 path: str = "select.budget") -> InfeasibleBudget:
    """``err`` restated for the user: the key they wrote and the smallest feasible value in its unit
    (``avg_bits``, ``gbitops`` or ``size_mb``), rounded up so that the value given is itself feasible."""
    if err.constraint == "size":
        key, value, minimum = "size_mb", cfg.size_mb, _ceil(err.minimum / 1e6)
    elif cfg.gbitops is not None:
        key, value, minimum = "gbitops", cfg.gbitops, _ceil(err.minimum / 1e9)
    else:  # invert avg_bits -> BitOps: fixed layers at their precision, searched layers at avg_bits²
        searched = sum(table[name].macs for name in table.names if name not in fixed)
        key, value = "avg_bits", cfg.avg_bits
        minimum = _ceil(math.sqrt(max(err.minimum - fixed_bitops(table, fixed), 0) / searched))
    also = f" with select.budget.size_mb: {cfg.size_mb:g}" if cfg.size_mb is not None and key != "size_mb" else ""
    smallest = (f"the smallest model is {err.minimum / 1e6:.6g} MB" if key == "size_mb" else
                f"the smallest feasible budget is {err.minimum / 1e9:.6g} GBitOps")
    return InfeasibleBudget(f"{path}.{key}: {value:g} is infeasible{also} ({smallest}); the smallest feasible "
                            f"{key} is {minimum:g}: set {path}.{key} to at least that", minimum=minimum,
                            budget=value, constraint=key)


def _ceil(x: float, digits: int = 4) -> float:
    """``x`` rounded up to ``digits`` significant digits."""
    if x <= 0:
        return 0.0
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale - 1e-9) / scale
