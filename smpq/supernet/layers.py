"""EdMIPS composite layers (Cai & Vasconcelos, "Rethinking Differentiable Search for Mixed-Precision
Neural Networks", CVPR 2020; SPEC §3.2): one shared float weight, one LSQ quantizer per candidate bit-width.

    p_w = softmax(α_w),  p_a = softmax(α_a)
    W_mix = Σ_i p_w[i] · Q_{b_i}(W),  x_mix = Σ_j p_a[j] · Q_{c_j}(x),  y = conv(x_mix, W_mix) + bias

Weights: signed, one step per output channel; activations: one step per tensor, unsigned after a ReLU
(signedness from calibration). The latent ``weight``/``bias`` keep the float layer's names, so a float
``state_dict`` loads into them; the extra keys are ``w_quants.b{bits}.step``, ``a_quants.b{bits}.step``,
``alpha_w`` and ``alpha_a`` (logits in ascending bit order, zeros = uniform).

Coalitions (SPEC §3.3): ``set_active`` keeps a subset of each group; survivors' probabilities are
renormalised (``softmax(α[S])``), an empty group is a zero tensor. ``freeze`` switches to the cached,
autograd-free inference path of ``smpq.supernet.cache`` (bit-identical values); ``train()`` unfreezes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smpq.quant import Calibration, LSQQuantizer
from smpq.quant.lsq import fp32_region
from smpq.supernet.cache import FrozenCache
from smpq.supernet.mixing import (
    FULL_PRECISION,
    Active,
    activation_terms,
    mix,
    mix_activation,
    mix_activation_inplace,
    survivor_probabilities,
)


def candidate_bits(bits: Iterable[int], kind: str) -> tuple[int, ...]:
    """Candidates ascending; empty or duplicated lists are a ValueError naming ``kind``."""
    values = list(bits)
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{kind} candidates must be a non-empty list without duplicates, got {values}")
    return tuple(sorted(values))


class _MixedQuantLayer:
    """Behaviour shared by the conv and linear composite layers (mixin; state set in ``_init_mixed``)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_mixed(self, out_channels: int, w_bits: Iterable[int], a_bits: Iterable[int], a_signed: bool) -> None:
        w_bits, a_bits = candidate_bits(w_bits, "weight"), candidate_bits(a_bits, "activation")
        self.w_quants = nn.ModuleDict({f"b{b}": LSQQuantizer(b, True, out_channels) for b in w_bits})
        self.a_quants = nn.ModuleDict({f"b{b}": LSQQuantizer(b, a_signed) for b in a_bits})
        like = {"device": self.weight.device, "dtype": self.weight.dtype}
        self.alpha_w = nn.Parameter(torch.zeros(len(w_bits), **like))
        self.alpha_a = nn.Parameter(torch.zeros(len(a_bits), **like))
        self.w_quants.to(**like)
        self.a_quants.to(**like)
        self.active_w: Active = None
        self.active_a: Active = None
        self._frozen = False
        self._cache = FrozenCache()

    @property
    def w_bits(self) -> tuple[int, ...]:
        return tuple(q.bits for q in self.w_quants.values())

    @property
    def a_bits(self) -> tuple[int, ...]:
        return tuple(q.bits for q in self.a_quants.values())

    @property
    def a_signed(self) -> bool:
        return next(iter(self.a_quants.values())).signed

    @property
    def frozen(self) -> bool:
        return self._frozen

    def probabilities(self, kind: str) -> torch.Tensor:
        """``softmax(α_kind)`` over all candidates (the coalition does not enter)."""
        return torch.softmax(self.alpha_w if kind == "w" else self.alpha_a, dim=0)

    def set_active(self, w: Sequence[int] | str | None, a: Sequence[int] | str | None) -> None:
        """Keep only candidates ``w``/``a`` (indices into ``w_bits``/``a_bits``); None keeps all;
        ``FULL_PRECISION`` uses the float tensor itself. Caches are dropped only when something changed."""
        active_w, active_a = _active(w, len(self.w_bits), "weight"), _active(a, len(self.a_bits), "activation")
        if (active_w, active_a) != (self.active_w, self.active_a):
            self.active_w, self.active_a = active_w, active_a
            self._cache.drop_mixture()

    @torch.no_grad()
    def load_calibration(self, calibration: Calibration, name: str) -> None:
        """Every candidate's step from ``calibration`` (layer ``name``); signedness must agree."""
        if calibration.a_signed(name) != self.a_signed:
            raise ValueError(f"layer {name!r}: calibration says a_signed={calibration.a_signed(name)}, "
                             f"the layer was built with a_signed={self.a_signed}")
        for kind, quantizers in (("w", self.w_quants), ("a", self.a_quants)):
            for quantizer in quantizers.values():
                quantizer.set_step(calibration.step(name, kind, quantizer.bits))

    def mixed_weight(self) -> torch.Tensor:
        """``W_mix`` over the kept weight candidates (zeros when none is kept), with autograd."""
        if self.active_w == FULL_PRECISION:
            return self.weight
        active, probs = survivor_probabilities(self.alpha_w, self.active_w)
        if not active:
            return torch.zeros_like(self.weight)
        quantizers = list(self.w_quants.values())
        return mix([quantizers[i](self.weight) for i in active], probs)

    def mixed_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x_mix`` over the kept activation candidates; in place (same value) when autograd is off."""
        if self.active_a == FULL_PRECISION:
            return x
        active, probs = survivor_probabilities(self.alpha_a, self.active_a)
        terms = activation_terms(list(self.a_quants.values()), active, probs, x.numel())
        return mix_activation(x, terms) if torch.is_grad_enabled() else mix_activation_inplace(x, terms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._frozen:
            return self._frozen_forward(x)
        region, x = fp32_region(x)  # the mixtures stay fp32 under autocast; the conv/linear op need not
        with region:
            x_mix, w_mix = self.mixed_input(x), self.mixed_weight()
        return self._op(x_mix, w_mix)

    @torch.no_grad()
    def _frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference only: cached ``W_mix`` and activation terms, activation mixture in place."""
        if self.active_a == FULL_PRECISION:
            return self._op(x, self._cache.weight(self))
        x_mix = mix_activation_inplace(x, self._cache.terms(self, x.numel()), self._cache.scratch(x))
        return self._op(x_mix, self._cache.weight(self))

    def freeze(self) -> None:
        """Use the cached inference path (no autograd); quantizes every weight candidate now."""
        self._frozen = True
        self._cache.weight(self)

    def unfreeze(self) -> None:
        """Back to the live path; the cache is emptied."""
        self._frozen = False
        self._cache = FrozenCache()

    def train(self, mode: bool = True) -> Any:
        if mode:
            self.unfreeze()
        return super().train(mode)  # type: ignore[misc]

    def _op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, w_bits={list(self.w_bits)}, a_bits={list(self.a_bits)}, a_signed={self.a_signed}"


class MixedQuantConv2d(_MixedQuantLayer, nn.Conv2d):
    """``nn.Conv2d`` mixing quantized weight and input candidates (EdMIPS composite convolution)."""

    def __init__(self, *args: Any, w_bits: Iterable[int], a_bits: Iterable[int], a_signed: bool = True,
                 **kwargs: Any) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_mixed(self.out_channels, w_bits, a_bits, a_signed)

    def _op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, self.bias)

    @classmethod
    def from_float(cls, module: nn.Conv2d, w_bits: Iterable[int], a_bits: Iterable[int], calibration: Calibration,
                   name: str) -> MixedQuantConv2d:
        """Same geometry, a copy of weight and bias, every step and the signedness from ``calibration``."""
        mixed = cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                    padding=module.padding, dilation=module.dilation, groups=module.groups,
                    bias=module.bias is not None, padding_mode=module.padding_mode, device=module.weight.device,
                    dtype=module.weight.dtype, w_bits=w_bits, a_bits=a_bits, a_signed=calibration.a_signed(name))
        return _finish(mixed, module, calibration, name)


class MixedQuantLinear(_MixedQuantLayer, nn.Linear):
    """``nn.Linear`` mixing quantized weight and input candidates (EdMIPS composite linear layer)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, w_bits: Iterable[int],
                 a_bits: Iterable[int], a_signed: bool = True, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_mixed(out_features, w_bits, a_bits, a_signed)

    def _op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)

    @classmethod
    def from_float(cls, module: nn.Linear, w_bits: Iterable[int], a_bits: Iterable[int], calibration: Calibration,
                   name: str) -> MixedQuantLinear:
        """Same shape, a copy of weight and bias, every step and the signedness from ``calibration``."""
        mixed = cls(module.in_features, module.out_features, bias=module.bias is not None,
                    device=module.weight.device, dtype=module.weight.dtype, w_bits=w_bits, a_bits=a_bits,
                    a_signed=calibration.a_signed(name))
        return _finish(mixed, module, calibration, name)


MixedLayer = MixedQuantConv2d | MixedQuantLinear


def _active(indices: Sequence[int] | str | None, size: int, kind: str) -> Active:
    """Sorted unique kept indices; the whole group collapses to None (exactly the unmasked forward)."""
    if indices is None or indices == FULL_PRECISION:
        return indices
    kept = tuple(sorted(set(int(i) for i in indices)))
    if any(not 0 <= i < size for i in kept):
        raise ValueError(f"{kind} candidate indices {list(indices)} out of range for {size} candidates")
    return None if len(kept) == size else kept


@torch.no_grad()
def _finish(mixed: MixedLayer, module: nn.Module, calibration: Calibration, name: str) -> MixedLayer:
    mixed.weight.copy_(module.weight)
    if module.bias is not None:
        mixed.bias.copy_(module.bias)
    mixed.load_calibration(calibration, name)
    mixed.train(module.training)
    return mixed
