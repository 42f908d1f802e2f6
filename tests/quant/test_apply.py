"""apply_policy / quantized_policy on the tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smpq.policy import LayerBits, Policy
from smpq.quant import QuantConv2d, QuantLinear, apply_policy, calibrate, quantizable_layers, quantized_policy

NAMES = ["conv1", "conv2", "fc"]
FIXED = {"conv1": LayerBits(8, 8), "fc": LayerBits(8, 8)}


def test_quantizable_layers_in_order(tiny_net) -> None:
    assert [name for name, _ in quantizable_layers(tiny_net)] == NAMES


def test_uniform_policy_with_fixed_first_last(tiny_net, batches) -> None:
    relu, pool = tiny_net.relu1, tiny_net.pool
    calib = calibrate(tiny_net, ["conv2"], batches, w_bits=[4], a_bits=[4], extra=FIXED)
    policy = Policy.uniform(NAMES, 4, 4, fixed=FIXED)
    model = apply_policy(tiny_net, policy, calib)
    assert model is tiny_net
    assert isinstance(model.conv1, QuantConv2d) and isinstance(model.conv2, QuantConv2d)
    assert isinstance(model.fc, QuantLinear)
    assert (model.conv1.w_bits, model.conv1.a_bits) == (8, 8) and (model.fc.w_bits, model.fc.a_bits) == (8, 8)
    assert (model.conv2.w_bits, model.conv2.a_bits) == (4, 4)
    assert model.relu1 is relu and model.pool is pool  # untouched modules stay
    assert model.conv1.a_signed and not model.conv2.a_signed and not model.fc.a_signed
    assert torch.equal(model.conv2.w_quant.step.detach(), calib.step("conv2", "w", 4))
    assert torch.equal(model.fc.a_quant.step.detach(), calib.step("fc", "a", 8))
    assert quantized_policy(model) == policy


def test_quantized_model_close_to_float_at_8_bits(tiny_net, batches) -> None:
    ref = tiny_net(batches[0]).detach()
    calib = calibrate(tiny_net, NAMES, batches, w_bits=[8], a_bits=[8])
    model = apply_policy(tiny_net, Policy.uniform(NAMES, 8, 8), calib)
    out = model(batches[0]).detach()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_nested_names_and_without_calibration() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.Flatten(), nn.Linear(2, 3)))
    policy = Policy({"0": LayerBits(6, 5), "1.1": LayerBits(3, 2)})
    apply_policy(model, policy)
    assert isinstance(model[1][1], QuantLinear) and isinstance(model[1][0], nn.Flatten)
    assert model[1][1].a_signed and model[1][1].a_quant.step.item() == 1.0  # set later by the caller
    assert (model[1][1].w_quant.step.detach() != 1.0).all()  # weight steps initialised from the weights
    assert quantized_policy(model) == policy
    model(torch.randn(2, 1, 3, 3)).sum().backward()


def test_policy_layer_not_in_model(tiny_net) -> None:
    policy = Policy.uniform(NAMES + ["head.fc"], 4, 4)
    with pytest.raises(ValueError, match=r"policy layers not in the model: \['head.fc'\]"):
        apply_policy(tiny_net, policy)
    assert isinstance(tiny_net.conv1, nn.Conv2d) and not isinstance(tiny_net.conv1, QuantConv2d)


def test_policy_layer_not_quantizable(tiny_net) -> None:
    with pytest.raises(ValueError, match=r"not Conv2d/Linear: \['pool \(AdaptiveAvgPool2d\)'\]"):
        apply_policy(tiny_net, Policy.uniform(NAMES + ["pool"], 4, 4))


def test_policy_missing_layers(tiny_net) -> None:
    with pytest.raises(ValueError, match=r"missing from the policy: \['conv1', 'fc'\]"):
        apply_policy(tiny_net, Policy.uniform(["conv2"], 4, 4))
    assert not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in tiny_net.modules())  # nothing touched


def test_bits_beyond_quantizer_range_name_the_layer(tiny_net) -> None:
    policy = Policy.uniform(NAMES, 4, 4, fixed={"conv2": LayerBits(32, 4)})
    with pytest.raises(ValueError, match=r"layer 'conv2' at W32A4.*\[2, 16\]"):
        apply_policy(tiny_net, policy)
    assert not isinstance(tiny_net.conv1, QuantConv2d)


def test_uncalibrated_bits_is_key_error(tiny_net, batches) -> None:
    calib = calibrate(tiny_net, NAMES, batches, w_bits=[4], a_bits=[4])
    with pytest.raises(KeyError, match="no 'w' step for layer 'conv1' at 8 bits"):
        apply_policy(tiny_net, Policy.uniform(NAMES, 4, 4, fixed=FIXED), calib)


def test_quantized_policy_rejects_float_model(tiny_net) -> None:
    with pytest.raises(ValueError, match=r"float \(unquantized\).*\['conv1', 'conv2', 'fc'\]"):
        quantized_policy(tiny_net)


def test_model_that_is_a_single_layer() -> None:
    quant = apply_policy(nn.Linear(3, 2), Policy({"": LayerBits(4, 4)}))
    assert isinstance(quant, QuantLinear) and quant.w_bits == 4
