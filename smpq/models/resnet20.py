"""``resnet20``: the CIFAR ResNet-20 of He et al. (2016), the usual MPQ benchmark on CIFAR-10.

3 stages × 3 basic blocks at 16/32/64 channels (stride 2 at the start of stages 2 and 3), global average
pool, linear. Where the shape changes, the shortcut is a 1×1 conv + batch norm (option B) — a quantizable
layer like any other. About 41 M MACs per 32×32 image; 19 convs + 2 shortcuts + 1 linear.
"""

from __future__ import annotations

import torch
from torch import nn

from smpq.models.blocks import BasicBlock, conv_bn_relu, init_weights
from smpq.models.registry import register_model


class CifarResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2): ``blocks_per_stage`` = n basic blocks per stage."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        blocks_per_stage: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, widths[0])
        stages, previous = [], widths[0]
        for index, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(previous, width, stride))
                previous = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(previous, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int) -> CifarResNet:
    """ResNet-20 (n = 3) with option-B shortcuts."""
    return CifarResNet(num_classes=num_classes, in_channels=in_channels, blocks_per_stage=3)
