"""ONNX export of a fake-quantized model with QuantizeLinear/DequantizeLinear pairs (docs/export.md).

Convention, ONNX opset ``OPSET`` (13: the first with per-axis QuantizeLinear/DequantizeLinear):
- weights: the integer grid ``q`` stored as an INT8 initializer (``b``-bit values, so within
  ``[-2^(b-1), 2^(b-1)-1]``), dequantized per output channel (``axis=0``) by ``DequantizeLinear(q, s_w, 0)``
  with the LSQ step ``s_w`` as the scale: the weight-side QuantizeLinear is applied at export time;
- activations: each quantized layer's input goes through ``Clip(x, qmin·s_a, qmax·s_a)`` →
  ``QuantizeLinear(·, s_a, 0)`` → ``DequantizeLinear(·, s_a, 0)``, per tensor, INT8 when the activation grid is
  signed and UINT8 when it is unsigned: the Clip narrows the 8-bit saturation of QuantizeLinear to the
  ``b``-bit grid, so ``DequantizeLinear(QuantizeLinear(Clip(x)))`` = ``round(clamp(x/s, qmin, qmax))·s``,
  which is LSQ's forward (both round half to even);
- everything else (batch norm, ReLU, pooling, residual additions) as the float ONNX op.
Bit-widths above 8 have no INT8/UINT8 grid and are refused (``ExportError``) before anything is written.
"""

from __future__ import annotations

import operator

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from smpq.errors import ExportError
from smpq.export.graph import act_step, integer_weights, quantized_layers, trace, weight_step
from smpq.quant import QuantConv2d, QuantLinear

OPSET = 13
MAX_BITS = 8  # INT8/UINT8 storage
INPUT, OUTPUT = "input", "logits"


def check_expressible(model: nn.Module) -> None:
    """Refuse, in one line, a layer whose weight or activation bits have no INT8/UINT8 QDQ grid."""
    for name, layer in quantized_layers(model):
        for kind, bits in (("weight", layer.w_bits), ("activation", layer.a_bits)):
            if bits > MAX_BITS:
                raise ExportError(f"layer {name!r}: {bits}-bit {kind}s cannot be expressed in ONNX opset {OPSET} "
                                  f"QDQ (INT8/UINT8 storage holds at most {MAX_BITS} bits); export a policy with "
                                  f"{MAX_BITS} bits or fewer per layer")


def export_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """The model (eval semantics) as a checked ONNX graph with a dynamic batch dimension."""
    check_expressible(model)
    builder = _Builder(dict(model.named_modules()))
    for node in trace(model).nodes:
        builder.add(node)
    graph = helper.make_graph(builder.nodes, "smpq", [
        helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", None])], builder.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="smpq")
    onnx.checker.check_model(proto, full_check=True)
    return proto


class _Builder:
    """Turns fx nodes into ONNX nodes; each fx value is the ONNX tensor named after the node."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules, self.nodes, self.initializers, self.names = modules, [], [], {}

    def add(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.names[node.name] = INPUT
        elif node.op == "output":
            self._op("Identity", [self._arg(node.args[0])], name=OUTPUT)
        elif node.op == "call_module":
            self.names[node.name] = self._module(self.modules[node.target], node)
        elif node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add):
            self.names[node.name] = self._op("Add", [self._arg(a) for a in node.args[:2]])
        elif node.op == "call_function" and node.target in (torch.relu, nn.functional.relu):
            self.names[node.name] = self._op("Relu", [self._arg(node.args[0])])
        elif _is_flatten(node):
            self.names[node.name] = self._op("Flatten", [self._arg(node.args[0])], axis=1)
        else:
            raise ExportError(f"cannot export {node.op} {node.target!r} to ONNX; supported: quantized conv/linear, "
                              "batch norm, ReLU/ReLU6, pooling, flatten(1), addition")

    def _module(self, module: nn.Module, node: fx.Node) -> str:
        x = self._arg(node.args[0])
        if isinstance(module, (QuantConv2d, QuantLinear)):
            return self._quantized(module, node.target, x)
        if isinstance(module, nn.BatchNorm2d):
            if not module.track_running_stats:
                raise ExportError(f"batch norm {node.target!r} keeps no running statistics; it cannot be exported")
            params = [self._const(f"{node.target}.{k}", getattr(module, k).detach().float().numpy())
                      for k in ("weight", "bias", "running_mean", "running_var")]
            return self._op("BatchNormalization", [x, *params], epsilon=float(module.eps))
        if isinstance(module, (nn.Identity, nn.Dropout)):
            return x
        return self._simple(module, x)

    def _simple(self, module: nn.Module, x: str) -> str:
        if isinstance(module, nn.ReLU):
            return self._op("Relu", [x])
        if isinstance(module, nn.ReLU6):
            return self._op("Clip", [x, self._scalar(0.0), self._scalar(6.0)])
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            return self._op("GlobalAveragePool", [x])
        if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            return self._op("Flatten", [x], axis=1)
        if isinstance(module, nn.MaxPool2d) and module.dilation in (1, (1, 1)) and not module.ceil_mode:
            return self._op("MaxPool", [x], **_window(module))
        raise ExportError(f"cannot export {type(module).__name__} ({module}) to ONNX; supported: quantized "
                          "conv/linear, batch norm, ReLU/ReLU6, global average pool, max pool, flatten(1), addition")

    def _quantized(self, layer: QuantConv2d | QuantLinear, name: str, x: str) -> str:
        a = self._activation_qdq(layer, name, x)
        q = integer_weights(layer).numpy().astype(np.int8)
        w = self._op("DequantizeLinear", [self._const(f"{name}.weight_int", q),
                                          self._const(f"{name}.weight_scale", weight_step(layer).numpy()),
                                          self._const(f"{name}.weight_zero_point", np.zeros(q.shape[0], np.int8))],
                     axis=0)
        inputs = [a, w] + ([self._const(f"{name}.bias", layer.bias.detach().float().numpy())]
                           if layer.bias is not None else [])
        if isinstance(layer, QuantLinear):
            return self._op("Gemm", inputs, transB=1)
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ExportError(f"layer {name!r}: only explicit zero padding is exported, got "
                              f"{layer.padding!r} ({layer.padding_mode})")
        return self._op("Conv", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                        pads=list(layer.padding) * 2, dilations=list(layer.dilation), group=layer.groups)

    def _activation_qdq(self, layer, name: str, x: str) -> str:
        quant, step = layer.a_quant, act_step(layer)
        zero = np.array(0, np.int8 if quant.signed else np.uint8)
        scale, point = self._const(f"{name}.input_scale", np.array(step, np.float32)), \
            self._const(f"{name}.input_zero_point", zero)
        clipped = self._op("Clip", [x, self._scalar(quant.qmin * step), self._scalar(quant.qmax * step)])
        return self._op("DequantizeLinear", [self._op("QuantizeLinear", [clipped, scale, point]), scale, point])

    def _op(self, kind: str, inputs: list[str], name: str | None = None, **attributes) -> str:
        output = name or f"{kind.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, inputs, [output], name=f"{kind}_{len(self.nodes)}", **attributes))
        return output

    def _const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _scalar(self, value: float) -> str:
        return self._const(f"const_{len(self.initializers)}", np.array(value, np.float32))

    def _arg(self, arg) -> str:
        if not isinstance(arg, fx.Node):
            raise ExportError(f"cannot export a constant operand {arg!r} to ONNX")
        return self.names[arg.name]


def _is_flatten(node: fx.Node) -> bool:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    flat = (node.op == "call_function" and node.target is torch.flatten) or \
        (node.op == "call_method" and node.target == "flatten")
    return flat and start == 1 and end == -1


def _window(module: nn.MaxPool2d) -> dict:
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]
    return {"kernel_shape": pair(module.kernel_size), "strides": pair(module.stride),
            "pads": pair(module.padding) * 2}
