"""Residual building blocks shared by the CIFAR-style models (``compact_resnet``, ``resnet20``).

Every operation that a quantizer must see is a module: convs and linears are ``nn.Conv2d``/``nn.Linear``
(quantizers hook their inputs), and each ReLU is its own non-inplace ``nn.ReLU`` instance so that an
activation observer attached to one place never fires for another.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3×3 conv (no bias) → batch norm → ReLU: the stem of the small residual nets."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class BasicBlock(nn.Module):
    """He et al. (2016) basic block: two 3×3 convs with batch norm and an additive shortcut.

    When stride or width changes, the shortcut is a 1×1 conv + batch norm (option B); otherwise identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, unit/zero batch norm, default linear: the usual ResNet initialisation.

    Callers seed the global RNG (``torch.manual_seed``) before building for a reproducible init.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
