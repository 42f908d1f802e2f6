"""Deployable outputs of a fine-tuned fake-quantized model (docs/export.md): ONNX with QuantizeLinear /
DequantizeLinear pairs at each layer's bits, a bit-packed weight file with its reader, parity checks and a
size report against the cost model."""

from smpq.export.deploy import ONNX_FILE, PACKED_FILE, export_model
from smpq.export.onnx_qdq import OPSET, check_expressible, export_onnx
from smpq.export.packed import PackedModel, read_packed, write_packed
from smpq.export.restore import integer_grid, load_packed

__all__ = ["ONNX_FILE", "OPSET", "PACKED_FILE", "PackedModel", "check_expressible", "export_model", "export_onnx",
           "integer_grid", "load_packed", "read_packed", "write_packed"]
