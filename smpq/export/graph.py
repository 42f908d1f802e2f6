"""What the exporters read off a fake-quantized model: its traced graph, each layer's integer weights and
activation grid, and which batch norms fold onto which layer.

The graph comes from ``torch.fx`` with ``QuantConv2d``/``QuantLinear`` kept as leaves (their LSQ quantizers are
exported as QDQ pairs, not traced op by op).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from smpq.errors import ExportError
from smpq.quant import QuantConv2d, QuantLinear, quantizable_layers
from smpq.quant.lsq import positive_step

QUANTIZED = (QuantConv2d, QuantLinear)


class _QuantLeafTracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, QUANTIZED) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.Graph:
    """The model's forward as an fx graph whose quantized layers are single ``call_module`` nodes."""
    try:
        return _QuantLeafTracer().trace(model)
    except Exception as err:  # fx raises many types for data-dependent control flow
        raise ExportError(f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); "
                          "the exporters need a model without data-dependent control flow") from None


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantConv2d | QuantLinear]]:
    """Every Conv2d/Linear of the model in registration order; a float one is an ``ExportError``."""
    layers = quantizable_layers(model)
    floats = [name for name, module in layers if not isinstance(module, QUANTIZED)]
    if floats or not layers:
        raise ExportError(f"only fake-quantized models can be exported; float Conv2d/Linear layers: {floats or 'all'}")
    return layers


def weight_step(layer: QuantConv2d | QuantLinear) -> torch.Tensor:
    """The per-output-channel weight step as the forward pass uses it (``positive_step``), float32."""
    return positive_step(layer.w_quant.step.detach().float())


def act_step(layer: QuantConv2d | QuantLinear) -> float:
    """The per-tensor activation step as the forward pass uses it (``positive_step``)."""
    return float(positive_step(layer.a_quant.step.detach().float()))


def integer_weights(layer: QuantConv2d | QuantLinear) -> torch.Tensor:
    """``round(clamp(W / s, qmin, qmax))`` (int64): the grid points behind the layer's fake-quantized weight,
    computed exactly as ``smpq.quant.lsq.fake_quantize`` does, so ``q · s`` is the weight the layer uses."""
    step = weight_step(layer).view(-1, *([1] * (layer.weight.dim() - 1)))
    quant = layer.w_quant
    return torch.clamp(layer.weight.detach().float() / step, quant.qmin, quant.qmax).round().to(torch.int64)


@dataclass(frozen=True)
class FoldedNorm:
    """A ``BatchNorm2d`` whose only input is a quantized conv with no other user: in deployment it becomes the
    conv's per-channel output multiplier and its 32-bit bias (the bias the cost model counts)."""

    layer: str
    norm: str


def foldable_norms(model: nn.Module, graph: fx.Graph) -> dict[str, FoldedNorm]:
    """Layer name -> its folded batch norm, for every conv directly followed by an eval-mode-style BN."""
    modules = dict(model.named_modules())
    folded = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(modules[source.target], QuantConv2d) and modules[node.target].track_running_stats):
            folded[source.target] = FoldedNorm(layer=source.target, norm=node.target)
    return folded


def fold_norm(layer: QuantConv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(multiplier, bias) per channel with ``BN(conv(x) + b) = m · conv(x) + bias``:
    ``m = γ / sqrt(var + eps)``, ``bias = β + m · (b − mean)`` (float32)."""
    multiplier = (norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)).float()
    own = layer.bias.detach().float() if layer.bias is not None else torch.zeros_like(multiplier)
    return multiplier, (norm.bias.detach().float() + multiplier * (own - norm.running_mean.float()))


def layer_bias(layer: QuantConv2d | QuantLinear) -> torch.Tensor:
    """The layer's own float32 bias, zeros when it has none (its 32-bit bias slot in the cost model)."""
    if layer.bias is not None:
        return layer.bias.detach().float()
    return torch.zeros(layer.weight.shape[0])
