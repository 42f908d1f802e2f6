"""torchvision ``resnet18`` and ``mobilenet_v2``, built without weights and adapted for quantization.

Both are built with ``weights=None`` (pretrained weights only ever come from a local file through
``create_model(..., pretrained=path)``) and keep torchvision's module names, so an ImageNet checkpoint
saved from torchvision loads unchanged when ``num_classes=1000, in_channels=3``. Adaptations:

- ``in_channels != 3`` replaces the first conv by one of the same geometry with that many inputs;
- torchvision's ResNet ``BasicBlock`` applies one ReLU module twice; here each block gets a second
  ReLU (``relu2``) so that every activation site is its own module (quantizers hook layer inputs);
- every activation runs out of place (``inplace=False``), so an observed conv input is never
  overwritten later in the forward pass. MobileNetV2 keeps its ReLU6, as designed.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2
from torchvision.models.resnet import BasicBlock as TvBasicBlock
from torchvision.models.resnet import ResNet

from smpq.models.registry import register_model


class SplitReluBasicBlock(TvBasicBlock):
    """torchvision's basic block with a separate ReLU after the residual add (same parameters/keys)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


def _with_inputs(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A freshly initialised copy of ``conv``'s geometry that reads ``in_channels`` planes."""
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _out_of_place(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            module.inplace = False
    return model


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int) -> ResNet:
    """ResNet-18 (torchvision layout, ImageNet stem: 7×7 stride-2 conv + max pool)."""
    model = ResNet(SplitReluBasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    model.conv1 = _with_inputs(model.conv1, in_channels)
    return _out_of_place(model)


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes: int, in_channels: int) -> nn.Module:
    """MobileNetV2 (torchvision, width 1.0): depthwise-separable inverted residual blocks."""
    model = tv_mobilenet_v2(weights=None, num_classes=num_classes)
    model.features[0][0] = _with_inputs(model.features[0][0], in_channels)
    return _out_of_place(model)
