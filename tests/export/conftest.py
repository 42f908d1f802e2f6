"""A small fake-quantized residual net (batch norms to fold, unsigned and signed activation grids) for the
export tests, and the policies they export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smpq.cost import cost_table
from smpq.models import create_model
from smpq.policy import LayerBits, Policy
from smpq.quant import apply_policy, calibrate, quantizable_layers

INPUT_SHAPE = (1, 12, 12)
CALIBRATED_BITS = [2, 3, 4, 5, 8]


def float_model() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("compact_resnet", num_classes=5, in_channels=1, widths=(4, 8, 8))
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():  # batch norms that fold into something other than the identity
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=generator)
            module.bias.data = 0.2 * torch.randn(n, generator=generator)
            module.running_mean = 0.1 * torch.randn(n, generator=generator)
            module.running_var = 0.5 + torch.rand(n, generator=generator)
    return model.eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def policy_of(bits: list[tuple[int, int]]) -> Policy:
    names = [name for name, _ in quantizable_layers(float_model())]
    assert len(bits) == len(names)
    return Policy({name: LayerBits(*b) for name, b in zip(names, bits)})


POLICIES = {  # 10 layers: stem, 3 blocks (conv1, conv2, and two shortcuts), fc
    "uniform2": [(8, 8)] + [(2, 2)] * 8 + [(8, 8)],
    "uniform8": [(8, 8)] * 10,
    "mixed": [(8, 8), (3, 2), (2, 4), (5, 3), (4, 8), (3, 3), (2, 5), (5, 2), (3, 4), (8, 8)],
}


def quantized(policy: Policy) -> nn.Module:
    """``float_model`` at ``policy`` with calibrated steps and activation signedness, in eval mode."""
    model = float_model()
    names = [name for name, _ in quantizable_layers(model)]
    calibration = calibrate(model, names, [images(16, seed=5)], CALIBRATED_BITS, CALIBRATED_BITS)
    return apply_policy(model, policy, calibration).eval()


@pytest.fixture
def table():
    return cost_table(float_model(), INPUT_SHAPE)


@pytest.fixture
def mixed() -> tuple[Policy, nn.Module]:
    policy = policy_of(POLICIES["mixed"])
    return policy, quantized(policy)
