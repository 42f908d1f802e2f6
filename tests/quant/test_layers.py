"""QuantConv2d / QuantLinear against their float layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smpq.quant import QuantConv2d, QuantLinear


def _init_from(quant: QuantConv2d | QuantLinear, x: torch.Tensor) -> None:
    quant.w_quant.init_step(quant.weight)
    quant.a_quant.init_step(x)


def test_conv_16bit_matches_float() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, padding_mode="reflect")
    x = torch.randn(2, 3, 9, 9)
    quant = QuantConv2d.from_float(conv, w_bits=16, a_bits=16, a_signed=True)
    _init_from(quant, x)
    ref = conv(x)
    assert torch.allclose(quant(x), ref, atol=1e-3 * ref.abs().max().item())


def test_linear_16bit_matches_float_unsigned() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(20, 7)
    x = torch.rand(5, 20)
    quant = QuantLinear.from_float(linear, w_bits=16, a_bits=16, a_signed=False)
    _init_from(quant, x)
    ref = linear(x)
    assert torch.allclose(quant(x), ref, atol=1e-3 * ref.abs().max().item())


def test_low_bits_differ_and_forward_uses_quantized_operands() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 4)
    x = torch.randn(3, 16)
    quant = QuantLinear.from_float(linear, w_bits=2, a_bits=2, a_signed=True)
    _init_from(quant, x)
    expected = F.linear(quant.a_quant(x), quant.w_quant(quant.weight), linear.bias)
    assert torch.equal(quant(x), expected)
    assert not torch.allclose(quant(x), linear(x), atol=1e-2)


@pytest.mark.parametrize("bias", [True, False])
def test_from_float_keeps_weights_and_state_dict_keys(bias: bool) -> None:
    conv = nn.Conv2d(2, 4, 3, bias=bias)
    quant = QuantConv2d.from_float(conv, w_bits=4, a_bits=8, a_signed=False)
    assert torch.equal(quant.weight, conv.weight) and quant.weight is not conv.weight
    assert (quant.bias is None) == (not bias)
    if bias:
        assert torch.equal(quant.bias, conv.bias)
    expected = {"weight", "w_quant.step", "a_quant.step"} | ({"bias"} if bias else set())
    assert set(quant.state_dict()) == expected
    assert quant.state_dict()["w_quant.step"].shape == (4,) and quant.state_dict()["a_quant.step"].shape == ()
    assert (quant.w_bits, quant.a_bits, quant.a_signed) == (4, 8, False)
    assert isinstance(quant, nn.Conv2d)


def test_float_state_dict_loads_into_quantized_layer() -> None:
    linear = nn.Linear(5, 3)
    quant = QuantLinear.from_float(nn.Linear(5, 3), w_bits=4, a_bits=4)
    result = quant.load_state_dict(linear.state_dict(), strict=False)
    assert set(result.missing_keys) == {"w_quant.step", "a_quant.step"} and not result.unexpected_keys
    assert torch.equal(quant.weight, linear.weight) and torch.equal(quant.bias, linear.bias)


def test_gradients_reach_weight_and_both_steps() -> None:
    torch.manual_seed(0)
    quant = QuantConv2d.from_float(nn.Conv2d(3, 4, 3), w_bits=4, a_bits=4)
    x = torch.randn(2, 3, 6, 6)
    _init_from(quant, x)
    quant(x).pow(2).sum().backward()
    for param in (quant.weight, quant.bias, quant.w_quant.step, quant.a_quant.step):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_bad_bits_rejected() -> None:
    with pytest.raises(ValueError, match=r"signed quantizer bits must be an integer in \[2, 16\]"):
        QuantLinear.from_float(nn.Linear(2, 2), w_bits=1, a_bits=4)
