"""The DMPQ supernet (SPEC §3.2) and its coalition interface for the Shapley game (SPEC §3.3).

``Supernet(model, table, w_bits, a_bits, calibration, fixed)`` converts ``model`` in place: the fixed
layers (first conv, last linear) become ``QuantConv2d``/``QuantLinear`` at their bits through
``smpq.quant.apply_policy`` (which also checks that the cost table covers every Conv2d/Linear), then
every searchable layer becomes an EdMIPS composite layer (``smpq.supernet.layers``). The supernet is an
``nn.Module`` holding the model as ``self.model``: its ``state_dict`` keys are the model's, prefixed with
``model.``; rebuild with the same arguments and ``load_state_dict`` to restore one.

Coalitions: ``set_coalition(mask)`` over ``players()`` keeps, in each layer, only the candidates in the
mask, with their α-probabilities renormalised; an empty group feeds zeros. α and weights are never
touched; ``set_coalition(None)`` (or a full mask) restores the exact unmasked forward.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from smpq.cost import CostTable
from smpq.policy import LayerBits, Policy
from smpq.quant import Calibration, apply_policy
from smpq.supernet import alpha as alpha_stats
from smpq.supernet.layers import MixedLayer, MixedQuantConv2d, MixedQuantLinear, candidate_bits
from smpq.supernet.mixing import FULL_PRECISION
from smpq.supernet.players import Player, as_mask, make_players

log = logging.getLogger(__name__)


class Supernet(nn.Module):
    """A model whose searchable layers mix every (weight, activation) bit-width candidate."""

    def __init__(self, model: nn.Module, table: CostTable, w_bits: Iterable[int], a_bits: Iterable[int],
                 calibration: Calibration, fixed: Mapping[str, LayerBits]) -> None:
        super().__init__()
        self.w_bits = candidate_bits(w_bits, "weight")
        self.a_bits = candidate_bits(a_bits, "activation")
        self.table = table
        self.fixed = _check_fixed(table, fixed)
        placeholder = Policy({name: self.fixed.get(name, LayerBits(self.w_bits[0], self.a_bits[0]))
                              for name in table.names})
        apply_policy(model, placeholder, calibration)  # fixed layers final; searchable ones replaced next
        self.model = model
        self._layers: dict[str, MixedLayer] = {name: self._convert(name, calibration) for name in table.searchable}
        self._players = make_players((name, self.w_bits, self.a_bits) for name in table.searchable)
        self._mask: np.ndarray | None = None
        self._empty_group, self._reference_bits = "zero", None
        log.info("supernet: %d searchable layers, w candidates %s, a candidates %s, %d players",
                 len(self._layers), list(self.w_bits), list(self.a_bits), len(self._players))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # --- structure -------------------------------------------------------------------------------
    @property
    def mixed_layers(self) -> dict[str, MixedLayer]:
        """Searchable layer name -> composite layer, in table order."""
        return dict(self._layers)

    def players(self) -> list[Player]:
        """Every candidate: searchable layers in table order; per layer w ascending, then a ascending."""
        return list(self._players)

    def alpha_parameters(self) -> list[nn.Parameter]:
        """α_w, α_a of every searchable layer (table order), for the architecture optimizer."""
        return [p for layer in self._layers.values() for p in (layer.alpha_w, layer.alpha_a)]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter (weights, biases, batch norm, LSQ steps)."""
        alphas = {id(p) for p in self.alpha_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in alphas]

    # --- α: cost, policy, export -----------------------------------------------------------------
    def expected_bitops(self) -> torch.Tensor:
        """Differentiable Σ_l MACs_l · E_{p_w}[b] · E_{p_a}[c] + the fixed layers' BitOps (per sample)."""
        return alpha_stats.expected_bitops(self._layers, self.table, self.fixed)

    def complexity_loss(self, target_bitops: float, weight: float, form: str = "hinge") -> torch.Tensor:
        """hinge: λ · max(0, E/T − 1); ratio: λ · E/T (see ``smpq.supernet.alpha.complexity_loss``)."""
        return alpha_stats.complexity_loss(self.expected_bitops(), target_bitops, weight, form)

    def argmax_policy(self) -> Policy:
        """The DMPQ policy: argmax α per layer and kind, fixed layers at their bits, table order."""
        return alpha_stats.argmax_policy(self._layers, self.table, self.fixed)

    def alpha_table(self) -> dict[str, dict[str, dict[str, list]]]:
        """Per searchable layer, per kind: bits, logits, probabilities (for ``alpha.json``)."""
        return alpha_stats.alpha_table(self._layers)

    def alpha_entropy(self) -> float:
        """Mean entropy of softmax(α) over all groups, in nats."""
        return alpha_stats.alpha_entropy(self._layers)

    # --- coalitions ------------------------------------------------------------------------------
    @property
    def coalition_mask(self) -> np.ndarray | None:
        """A copy of the current mask over ``players()`` (None: no mask, the full supernet)."""
        return None if self._mask is None else self._mask.copy()

    def set_empty_group(self, mode: str, reference_bits: int | None = None) -> None:
        """What an empty group of a coalition means (SPEC §3.3): ``zero`` — the tensor is zero (Shapley-NAS);
        ``reference`` — the group uses the candidate of ``reference_bits`` alone (None: the float tensor)."""
        for kind, bits in (("weight", self.w_bits), ("activation", self.a_bits)):
            if mode == "reference" and reference_bits is not None and reference_bits not in bits:
                raise ValueError(f"reference_bits {reference_bits} is not a {kind} candidate {list(bits)}")
        self._empty_group, self._reference_bits = mode, reference_bits
        self.set_coalition(self._mask)

    def set_coalition(self, mask: np.ndarray | torch.Tensor | None) -> None:
        """Restrict every layer to the candidates in ``mask`` (boolean, one entry per player); None clears.

        Kept candidates mix with ``softmax(α[S])`` (the α-probabilities renormalised over the survivors); an
        empty weight or activation group is a zero tensor or the reference (``set_empty_group``). Wrong type
        or length: ValueError.
        """
        if mask is None:
            self._mask = None
            for layer in self._layers.values():
                layer.set_active(None, None)
            return
        self._mask = as_mask(mask, len(self._players))
        offset = 0
        for layer in self._layers.values():
            n_w, n_a = len(layer.w_bits), len(layer.a_bits)
            keep_w = self._kept(self._mask[offset:offset + n_w], layer.w_bits)
            keep_a = self._kept(self._mask[offset + n_w:offset + n_w + n_a], layer.a_bits)
            layer.set_active(keep_w, keep_a)
            offset += n_w + n_a

    def _kept(self, group: np.ndarray, bits: tuple[int, ...]) -> list[int] | str:
        """Indices of a group's kept candidates; an empty group in ``reference`` mode is the reference."""
        if group.any() or self._empty_group == "zero":
            return np.flatnonzero(group).tolist()
        return FULL_PRECISION if self._reference_bits is None else [bits.index(self._reference_bits)]

    @contextmanager
    def coalition(self, mask: np.ndarray | torch.Tensor | None) -> Iterator[Supernet]:
        """``with supernet.coalition(mask): ...`` — the previous mask is restored on exit."""
        previous = self._mask
        self.set_coalition(mask)
        try:
            yield self
        finally:
            self.set_coalition(previous)

    # --- frozen inference ------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        """Whether every mixed layer runs the cached inference path."""
        return all(layer.frozen for layer in self._layers.values())

    def freeze(self) -> Supernet:
        """Eval mode plus cached quantized weights: forward is inference only (no autograd) and costs
        about one plain forward per coalition. ``train()`` or ``unfreeze()`` leaves it."""
        self.eval()
        for layer in self._layers.values():
            layer.freeze()
        return self

    def unfreeze(self) -> Supernet:
        """Drop the caches and return to the differentiable path (the train/eval mode is kept)."""
        for layer in self._layers.values():
            layer.unfreeze()
        return self

    def _convert(self, name: str, calibration: Calibration) -> MixedLayer:
        quantized = self.model.get_submodule(name)
        cls = MixedQuantConv2d if isinstance(quantized, nn.Conv2d) else MixedQuantLinear
        try:
            mixed = cls.from_float(quantized, self.w_bits, self.a_bits, calibration, name)
        except (KeyError, ValueError) as err:
            raise ValueError(f"layer {name!r}: {err}") from None
        parent, _, child = name.rpartition(".")
        setattr(self.model.get_submodule(parent), child, mixed)
        return mixed


def _check_fixed(table: CostTable, fixed: Mapping[str, LayerBits]) -> dict[str, LayerBits]:
    """``fixed`` must give bits for exactly the table's non-searchable layers (first and last)."""
    expected = [name for name in table.names if name not in set(table.searchable)]
    if set(fixed) != set(expected):
        raise ValueError(f"fixed bits must cover exactly the non-searchable layers {expected}, got {sorted(fixed)}")
    return {name: fixed[name] for name in expected}
