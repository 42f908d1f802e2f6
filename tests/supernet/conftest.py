"""Shared fixtures for the supernet tests: a tiny calibrated CNN and a factory of supernets on it."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from torch import nn

from smpq.cost import CostTable, cost_table
from smpq.policy import LayerBits
from smpq.quant import Calibration, calibrate
from smpq.supernet import Supernet

BITS = (2, 3, 4, 8)
W8A8 = LayerBits(8, 8)


class TinyNet(nn.Module):
    """stem conv -> BN -> ReLU -> conv_a (with bias) -> ReLU -> conv_b -> BN -> pool -> fc.

    conv_a, conv_b are searchable (stem and fc fixed); conv_a has a bias so an empty weight group shows
    as "bias only"; conv_b's input is unsigned (after a ReLU).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.relu0 = nn.ReLU()
        self.conv_a = nn.Conv2d(4, 6, 3, padding=1, bias=True)
        self.relu_a = nn.ReLU()
        self.conv_b = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_a(self.conv_a(self.relu0(self.bn0(self.stem(x)))))
        return self.fc(self.pool(self.bn_b(self.conv_b(x))).flatten(1))


class Setup:
    """A float model with its cost table, fixed W8A8 first/last, calibration and an input batch."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.model = model
        self.table: CostTable = cost_table(model, input_shape)
        self.fixed = {self.table.first: W8A8, self.table.last: W8A8}
        self.x = torch.randn(8, *input_shape, generator=generator)
        self.calibration: Calibration = calibrate(model, self.table.searchable, [self.x], BITS, BITS,
                                                  extra=self.fixed, seed=seed)
        self._generator = generator

    def supernet(self, w_bits: Sequence[int] = BITS, a_bits: Sequence[int] = BITS, *,
                 random_alpha: bool = True) -> Supernet:
        supernet = Supernet(copy.deepcopy(self.model), self.table, w_bits, a_bits, self.calibration, self.fixed)
        if random_alpha:
            generator = torch.Generator().manual_seed(3)
            with torch.no_grad():
                for alpha in supernet.alpha_parameters():
                    alpha.copy_(torch.randn(alpha.shape, generator=generator))
        return supernet


def _warm_batch_norm(model: nn.Module, x: torch.Tensor) -> None:
    """Give batch norm non-trivial running statistics (one train-mode pass)."""
    model.train()
    with torch.no_grad():
        model(x * 1.5 + 0.2)
    model.eval()


@pytest.fixture(scope="module")
def tiny() -> Setup:
    torch.manual_seed(0)
    model = TinyNet()
    _warm_batch_norm(model, torch.randn(8, 1, 10, 10))
    return Setup(model, (1, 10, 10), seed=1)


@pytest.fixture(scope="module")
def resnet() -> Setup:
    from smpq.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("compact_resnet", 10, 1, widths=(4, 8, 8))
    _warm_batch_norm(model, torch.randn(8, 1, 28, 28))
    return Setup(model, (1, 28, 28), seed=2)




@pytest.fixture
def make_setup() -> type[Setup]:
    """The ``Setup`` class, for tests that bring their own float model."""
    return Setup
