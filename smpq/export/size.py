"""The size report: packed bytes per layer and in total against the cost model's ``size_bytes`` (SPEC §3.5).

The cost model prices a layer at ``params · b_w / 8`` bytes of weights plus 4 bytes per output channel (its
32-bit bias or folded batch norm). The packed file's ``weights`` and ``biases`` sections hold exactly these, in
one bit stream padded only at its very end, so the two totals agree to the byte (the packed total is the cost
rounded up to a whole byte); the manifest and the float32 scales are reported apart.
"""

from __future__ import annotations

import math

from smpq.cost import CostTable, size_bytes
from smpq.errors import ExportError
from smpq.export.packed import FLOAT, MAGIC
from smpq.policy import Policy


def size_report(manifest: dict, table: CostTable, policy: Policy, file_bytes: int, onnx_bytes: int) -> dict:
    """Per layer and total bytes, packed vs priced; an ``ExportError`` when they disagree."""
    layers = {e["name"]: e for e in manifest["layers"]}
    if list(layers) != table.names:
        raise ExportError(f"the packed layers {list(layers)} are not the cost table's {table.names}")
    if other := [n for n in layers if layers[n]["w_bits"] != policy[n].w_bits]:
        raise ExportError(f"the packed weight bits of layers {other} are not the policy's")
    rows = [_layer_row(layers[cost.name], cost) for cost in table.layers]
    sections = {name: s["bytes"] for name, s in manifest["sections"].items()}
    packed = sections["weights"] + sections["biases"]
    priced = size_bytes(table, policy)
    if packed != math.ceil(priced):
        raise ExportError(f"the packed weights and biases take {packed} bytes, the cost model prices the policy at "
                          f"{priced} bytes; they must agree to the byte")
    return {"layers": rows, "packed_bytes": packed, "cost_model_bytes": priced,
            "weight_bytes": sections["weights"], "bias_bytes": sections["biases"],
            "scale_bytes": sections["scales"], "manifest_bytes": file_bytes - len(MAGIC) - 4 - sum(sections.values()),
            "file_bytes": file_bytes, "onnx_bytes": onnx_bytes}


def _layer_row(entry: dict, cost) -> dict:
    weight_bytes = entry["count"] * entry["w_bits"] / 8
    bias_bytes = entry["shape"][0] * FLOAT.itemsize
    if entry["count"] != cost.params or (weight_bytes + bias_bytes) != cost.size_bytes(entry["w_bits"]):
        raise ExportError(f"layer {entry['name']!r}: packed {weight_bytes} + {bias_bytes} bytes, the cost model "
                          f"prices {cost.size_bytes(entry['w_bits'])}")
    return {"layer": entry["name"], "w_bits": entry["w_bits"], "params": entry["count"],
            "packed_weight_bytes": weight_bytes, "bias_bytes": bias_bytes,
            "cost_model_bytes": cost.size_bytes(entry["w_bits"])}
