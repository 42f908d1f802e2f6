"""Drop-in fake-quantized Conv2d / Linear layers (SPEC §3.1, §3.6).

Each holds ``w_quant`` (signed, one LSQ step per output channel) and ``a_quant`` (one LSQ step for
the layer's input, unsigned after a ReLU, signed otherwise). Forward is the float op on
``(a_quant(x), w_quant(weight))`` with the float bias. The latent ``weight``/``bias`` keep the float
layer's parameter names, so a float ``state_dict`` loads into them; the extra keys are
``w_quant.step`` and ``a_quant.step``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smpq.quant.lsq import LSQQuantizer


class _QuantizedLayer:
    """Shared behaviour: quantizer construction and bit-width read-back (mixin, no state of its own)."""

    w_quant: LSQQuantizer
    a_quant: LSQQuantizer

    def _init_quantizers(self, out_channels: int, w_bits: int, a_bits: int, a_signed: bool) -> None:
        self.w_quant = LSQQuantizer(w_bits, signed=True, channels=out_channels)
        self.a_quant = LSQQuantizer(a_bits, signed=a_signed)

    @property
    def w_bits(self) -> int:
        return self.w_quant.bits

    @property
    def a_bits(self) -> int:
        return self.a_quant.bits

    @property
    def a_signed(self) -> bool:
        return self.a_quant.signed


class QuantConv2d(_QuantizedLayer, nn.Conv2d):
    """``nn.Conv2d`` whose input and weight pass through LSQ fake quantizers."""

    def __init__(self, *args: Any, w_bits: int, a_bits: int, a_signed: bool = True, **kwargs: Any) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_quantizers(self.out_channels, w_bits, a_bits, a_signed)
        self.w_quant.to(self.weight)
        self.a_quant.to(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.a_quant(x), self.w_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, module: nn.Conv2d, w_bits: int, a_bits: int, a_signed: bool = True) -> QuantConv2d:
        """Same geometry, a copy of the weight and bias; step sizes still to be set (1.0)."""
        quant = cls(
            module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
            padding=module.padding, dilation=module.dilation, groups=module.groups,
            bias=module.bias is not None, padding_mode=module.padding_mode,
            device=module.weight.device, dtype=module.weight.dtype,
            w_bits=w_bits, a_bits=a_bits, a_signed=a_signed,
        )
        _copy_parameters(module, quant)
        return quant


class QuantLinear(_QuantizedLayer, nn.Linear):
    """``nn.Linear`` whose input and weight pass through LSQ fake quantizers."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, w_bits: int, a_bits: int,
                 a_signed: bool = True, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_quantizers(out_features, w_bits, a_bits, a_signed)
        self.w_quant.to(self.weight)
        self.a_quant.to(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.a_quant(x), self.w_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, module: nn.Linear, w_bits: int, a_bits: int, a_signed: bool = True) -> QuantLinear:
        """Same shape, a copy of the weight and bias; step sizes still to be set (1.0)."""
        quant = cls(
            module.in_features, module.out_features, bias=module.bias is not None,
            device=module.weight.device, dtype=module.weight.dtype,
            w_bits=w_bits, a_bits=a_bits, a_signed=a_signed,
        )
        _copy_parameters(module, quant)
        return quant


@torch.no_grad()
def _copy_parameters(source: nn.Module, target: nn.Module) -> None:
    target.weight.copy_(source.weight)
    if source.bias is not None:
        target.bias.copy_(source.bias)
    target.train(source.training)
