"""The arithmetic of the EdMIPS composite layer (Cai & Vasconcelos, CVPR 2020; SPEC §3.2, §3.3).

    p = softmax(α[S]) over the surviving candidates S of a group (all of them when unmasked),
    W_mix = Σ_{i∈S} p_i · Q_{b_i}(W),        x_mix = Σ_{j∈S} p_j · Q_{c_j}(x),

with Q the LSQ fake quantizer ``round(clamp(x / s, Q_min, Q_max)) · s`` (Esser et al. 2020). softmax over
the survivors equals the full softmax renormalised over them: p_i / Σ_{k∈S} p_k. An empty group is a zero
tensor. The activation term is evaluated as ``round(clamp(x / s, ·)) · (s · p_j)``, one multiplication less
per candidate than ``(Q(x) · p_j)``; with a single candidate (p = 1) it is exactly ``LSQQuantizer``'s value.

There are two implementations of the activation mixture with the *same floating-point operations in the
same order*, so their results are bit-identical (up to the sign of zeros): ``mix_activation`` builds an
autograd graph (straight-through round, LSQ step gradient), ``mix_activation_inplace`` runs without autograd,
in place and cache-blocked — the cheap path of evaluation and of the Shapley game. Elementwise operations
give the same result per element whatever the slicing, so blocking does not change a single bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from smpq.quant.lsq import LSQQuantizer, grad_scale, positive_step, round_ste

FULL_PRECISION = "full_precision"  # a group that uses the float tensor itself (the game's reference, SPEC §3.3)
Active = tuple[int, ...] | None | str  # kept candidate indices of a group; None = all of them; or FULL_PRECISION
CHUNK_ELEMENTS = 1 << 20  # 4 MiB of float32 per slice of the in-place CPU mixture: stays in L2/L3 cache


@dataclass(frozen=True)
class ActivationTerm:
    """One candidate of an activation mixture: ``round(clamp(x / step, qmin, qmax)) · coef``."""

    step: torch.Tensor  # the step LSQQuantizer.forward uses (0-dim)
    coef: torch.Tensor  # step · p_j (0-dim)
    qmin: int
    qmax: int


def survivor_probabilities(alpha: torch.Tensor, active: Active) -> tuple[tuple[int, ...], torch.Tensor]:
    """Indices kept and their probabilities ``softmax(α[S])`` (= softmax(α) renormalised over S)."""
    if active is None:
        return tuple(range(alpha.numel())), torch.softmax(alpha, dim=0)
    if not active:
        return (), alpha.new_zeros(0)
    return active, torch.softmax(alpha[list(active)], dim=0)


def mix(tensors: Sequence[torch.Tensor], probs: torch.Tensor) -> torch.Tensor:
    """``Σ_i probs[i] · tensors[i]``, summed left to right (a fixed order keeps cached and live paths equal)."""
    total = tensors[0] * probs[0]
    for i in range(1, len(tensors)):
        total = total + tensors[i] * probs[i]
    return total


def effective_step(quantizer: LSQQuantizer, numel: int) -> torch.Tensor:
    """The per-tensor step value that ``LSQQuantizer.forward`` uses for an input of ``numel`` elements.

    LSQ scales the step gradient by g = 1 / sqrt(N · Q_max) (Esser et al. 2020, §2.2) through
    ``grad_scale``, whose forward value can differ from the raw step in the last bit; reproducing it
    keeps a one-candidate mixture bit-identical to ``QuantConv2d``/``QuantLinear``.
    """
    scale = 1.0 / math.sqrt(max(numel * quantizer.batch_shards, 1) * quantizer.qmax)
    return positive_step(grad_scale(quantizer.step, scale))


def activation_terms(quantizers: Sequence[LSQQuantizer], active: tuple[int, ...], probs: torch.Tensor,
                     numel: int) -> list[ActivationTerm]:
    """The terms of ``x_mix`` for the kept candidates (differentiable in steps and α unless under no_grad)."""
    terms = []
    for index, p in zip(active, probs):
        quantizer = quantizers[index]
        step = effective_step(quantizer, numel)
        terms.append(ActivationTerm(step, step * p, quantizer.qmin, quantizer.qmax))
    return terms


def mix_activation(x: torch.Tensor, terms: Sequence[ActivationTerm]) -> torch.Tensor:
    """``Σ_j round_ste(clamp(x / s_j)) · (s_j p_j)`` with autograd; zeros when ``terms`` is empty."""
    total = None
    for term in terms:
        value = round_ste(torch.clamp(x / term.step, term.qmin, term.qmax)) * term.coef
        total = value if total is None else total + value
    return torch.zeros_like(x) if total is None else total


@torch.no_grad()
def mix_activation_inplace(x: torch.Tensor, terms: Sequence[ActivationTerm],
                           scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Same value as ``mix_activation`` (same operations per element, same order), no autograd, in place.

    Per candidate: divide into a buffer, then clamp, round and scale it in place and add it to the result:
    four passes for the first candidate, five for each further one. On the CPU a large contiguous input is
    processed in slices of ``CHUNK_ELEMENTS`` so that all passes over a slice stay in cache (the passes are
    memory-bound); ``scratch`` (at least ``CHUNK_ELEMENTS`` elements, x's dtype) may be supplied to reuse.
    """
    if not terms:
        return torch.zeros_like(x)
    out = torch.empty_like(x)
    if x.device.type != "cpu" or not x.is_contiguous() or x.numel() <= CHUNK_ELEMENTS:
        _mix_into(x, terms, out, None)
        return out
    if len(terms) > 1 and (scratch is None or scratch.numel() < CHUNK_ELEMENTS or scratch.dtype != x.dtype):
        scratch = x.new_empty(CHUNK_ELEMENTS)
    flat_x, flat_out = x.view(-1), out.view(-1)
    for start in range(0, flat_x.numel(), CHUNK_ELEMENTS):
        piece = flat_x[start:start + CHUNK_ELEMENTS]
        _mix_into(piece, terms, flat_out[start:start + CHUNK_ELEMENTS],
                  None if scratch is None else scratch[:piece.numel()])
    return out


def _mix_into(x: torch.Tensor, terms: Sequence[ActivationTerm], out: torch.Tensor,
              scratch: torch.Tensor | None) -> None:
    """``out = Σ_j round(clamp(x / s_j)) · coef_j`` with in-place passes (``scratch`` shaped like ``x``)."""
    first, *rest = terms
    torch.div(x, first.step, out=out).clamp_(first.qmin, first.qmax).round_().mul_(first.coef)
    for term in rest:
        scratch = torch.empty_like(x) if scratch is None else scratch
        torch.div(x, term.step, out=scratch).clamp_(term.qmin, term.qmax).round_().mul_(term.coef)
        out.add_(scratch)
