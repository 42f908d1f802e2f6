"""What the supernet's architecture parameters α say (SPEC §3.2): expected cost, complexity loss, the
DMPQ argmax policy, and their export for ``alpha.json``.

Expected BitOps (EdMIPS, Cai & Vasconcelos CVPR 2020, complexity term):

    E[BitOps] = Σ_{l searchable} MACs_l · E_{p_w}[b] · E_{p_a}[c]  +  Σ_{l fixed} MACs_l · w_l · a_l,
    E_{p_w}[b] = Σ_i softmax(α_w[l])_i · b_i

MACs are per input sample (``smpq.cost``), so this is per-sample BitOps like every budget in the project.
It always uses the full softmax(α): a coalition mask does not change it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from smpq.config import COMPLEXITY_FORMS
from smpq.cost import CostTable, fixed_bitops
from smpq.errors import BudgetError
from smpq.policy import LayerBits, Policy
from smpq.supernet.layers import MixedLayer


def expected_bits(layer: MixedLayer, kind: str) -> torch.Tensor:
    """``E_p[bits] = Σ_i softmax(α)_i · bits_i`` of one group, in float64 (differentiable in α)."""
    bits, alpha = (layer.w_bits, layer.alpha_w) if kind == "w" else (layer.a_bits, layer.alpha_a)
    probs = torch.softmax(alpha.double(), dim=0)
    return (probs * torch.tensor(bits, dtype=torch.float64, device=probs.device)).sum()


def expected_bitops(layers: Mapping[str, MixedLayer], table: CostTable, fixed: Mapping[str, LayerBits]) -> torch.Tensor:
    """Differentiable expected BitOps per sample (formula in the module docstring), float64 scalar."""
    total = torch.tensor(float(fixed_bitops(table, fixed)), dtype=torch.float64)
    for name, layer in layers.items():
        term = table[name].bitops(expected_bits(layer, "w"), expected_bits(layer, "a"))
        total = total.to(term.device) + term
    return total


def complexity_loss(expected: torch.Tensor, target_bitops: float, weight: float, form: str = "hinge") -> torch.Tensor:
    """λ-weighted complexity loss of the expected BitOps ``E`` against the supernet's own target T.

    - ``hinge``: ``λ · max(0, E / T − 1)`` — no pressure once the expected cost is within the target, so
      α is free to favour accuracy below it (the default; it does not push below the budget).
    - ``ratio``: ``λ · E / T`` — EdMIPS' form: a constant pull toward cheaper candidates at any cost.

    T is ``supernet.target``, not the selection budget (SPEC §3.2), so one trained supernet serves a
    sweep of selection budgets.
    """
    if form not in COMPLEXITY_FORMS:
        raise ValueError(f"complexity form must be one of {COMPLEXITY_FORMS}, got {form!r}")
    if not math.isfinite(target_bitops) or target_bitops <= 0:
        raise BudgetError(f"target BitOps must be a positive number, got {target_bitops!r}; "
                          "set supernet.target in params.yaml to a positive budget")
    ratio = expected / float(target_bitops)
    return weight * (torch.relu(ratio - 1.0) if form == "hinge" else ratio)


def argmax_policy(layers: Mapping[str, MixedLayer], table: CostTable, fixed: Mapping[str, LayerBits]) -> Policy:
    """DMPQ policy: per searchable layer the argmax of α_w and of α_a (ties: the lower bit-width); fixed
    layers at their bits; every table layer, in table order."""
    bits = {}
    for name in table.names:
        if name in fixed:
            bits[name] = fixed[name]
        else:
            layer = layers[name]
            bits[name] = LayerBits(layer.w_bits[int(torch.argmax(layer.alpha_w))],
                                   layer.a_bits[int(torch.argmax(layer.alpha_a))])
    return Policy(bits)


def alpha_table(layers: Mapping[str, MixedLayer]) -> dict[str, dict[str, dict[str, list]]]:
    """JSON-ready ``{layer: {"w"|"a": {"bits", "logits", "probabilities"}}}`` in table order."""
    table = {}
    for name, layer in layers.items():
        table[name] = {
            kind: {"bits": list(bits), "logits": alpha.detach().cpu().tolist(),
                   "probabilities": layer.probabilities(kind).detach().cpu().tolist()}
            for kind, bits, alpha in (("w", layer.w_bits, layer.alpha_w), ("a", layer.a_bits, layer.alpha_a))
        }
    return table


@torch.no_grad()
def alpha_entropy(layers: Mapping[str, MixedLayer]) -> float:
    """Mean entropy (nats) of softmax(α) over all groups: log K when uniform, 0 when one-hot."""
    entropies = []
    for layer in layers.values():
        for kind in ("w", "a"):
            probs = layer.probabilities(kind)
            entropies.append(float(-(probs * torch.log(probs.clamp_min(1e-30))).sum()))
    return sum(entropies) / max(len(entropies), 1)
