"""Inference-time cache of a frozen mixed layer (SPEC §3.3: the Shapley game evaluates a frozen supernet).

The game evaluates thousands of coalitions of one trained supernet in eval mode without gradients. What
does not depend on the input is computed once and kept:

- each weight candidate's quantized weight ``Q_b(W)`` (recomputed only when ``W`` or a step changes),
- ``W_mix`` of the current coalition (a weighted sum of those cached tensors; recomputed when the coalition
  or α changes),
- the activation terms (effective step and ``s · p``) per input size, dropping candidates whose
  probability underflowed to exactly 0 (their term is exactly 0),
- one scratch slice for the cache-blocked activation mixture.

Staleness is detected from each tensor's storage pointer and in-place version counter, so an optimizer
step or ``load_state_dict`` while frozen can never serve an old value. Every value is computed by the same
functions as the live path (``smpq.supernet.mixing``), hence bit-identical to it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from smpq.supernet.mixing import (
    CHUNK_ELEMENTS,
    FULL_PRECISION,
    ActivationTerm,
    activation_terms,
    mix,
    survivor_probabilities,
)


def signature(tensors: Iterable[torch.Tensor]) -> tuple[tuple[int, int], ...]:
    """Identity of the tensors' current values: (storage pointer, in-place version) of each."""
    return tuple((t.data_ptr(), t._version) for t in tensors)


class FrozenCache:
    """Cached ``W_mix`` and activation terms of one mixed layer; all methods run without autograd.

    ``layer`` is the owning ``smpq.supernet.layers.MixedLayer`` (its weight, quantizers, α and active masks).
    """

    def __init__(self) -> None:
        self._quantized: tuple[tuple, list[torch.Tensor]] | None = None
        self._weight: tuple[tuple, torch.Tensor] | None = None
        self._terms_signature: tuple | None = None
        self._terms: dict[int, list[ActivationTerm]] = {}
        self._scratch: torch.Tensor | None = None

    def drop_mixture(self) -> None:
        """Forget what depends on the coalition (kept: the per-candidate quantized weights)."""
        self._weight = None
        self._terms_signature = None
        self._terms = {}

    @torch.no_grad()
    def weight(self, layer: nn.Module) -> torch.Tensor:
        """``W_mix`` of the layer's current coalition, from the cached ``Q_b(W)``."""
        if layer.active_w == FULL_PRECISION:
            return layer.weight
        quantizers = list(layer.w_quants.values())
        key = signature([layer.weight, *(q.step for q in quantizers)])
        if self._quantized is None or self._quantized[0] != key:
            self._quantized = (key, [q(layer.weight) for q in quantizers])
        key = (key, signature([layer.alpha_w]))
        if self._weight is None or self._weight[0] != key:
            active, probs = survivor_probabilities(layer.alpha_w, layer.active_w)
            cached = self._quantized[1]
            value = mix([cached[i] for i in active], probs) if active else torch.zeros_like(layer.weight)
            self._weight = (key, value)
        return self._weight[1]

    @torch.no_grad()
    def terms(self, layer: nn.Module, numel: int) -> list[ActivationTerm]:
        """Activation terms of the current coalition for an input of ``numel`` elements."""
        quantizers = list(layer.a_quants.values())
        key = signature([layer.alpha_a, *(q.step for q in quantizers)])
        if self._terms_signature != key:
            self._terms_signature, self._terms = key, {}
        if numel not in self._terms:
            active, probs = survivor_probabilities(layer.alpha_a, layer.active_a)
            terms = activation_terms(quantizers, active, probs, numel)
            self._terms[numel] = [term for term in terms if bool(term.coef != 0)]
        return self._terms[numel]

    def scratch(self, like: torch.Tensor) -> torch.Tensor:
        """A reusable ``CHUNK_ELEMENTS`` buffer with ``like``'s dtype and device."""
        if self._scratch is None or self._scratch.dtype != like.dtype or self._scratch.device != like.device:
            self._scratch = like.new_empty(CHUNK_ELEMENTS)
        return self._scratch
