"""One method's export: the ONNX QDQ graph, the bit-packed weights, their parity checks and the size report.

Nothing is left behind unless every check passes: the files are written into a temporary folder that replaces
``out`` only at the end (``smpq.artifacts.replace_folder``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from torch import nn

from smpq.artifacts import atomic_write, replace_folder
from smpq.cost import CostTable
from smpq.errors import ExportError
from smpq.export.onnx_qdq import OPSET, check_expressible, export_onnx
from smpq.export.packed import read_packed, write_packed
from smpq.export.parity import (
    check_integer_reference,
    check_logits,
    compare_logits,
    integer_reference,
    onnx_session,
    reference_layer,
)
from smpq.export.restore import integer_grid, load_packed
from smpq.export.size import size_report
from smpq.policy import Policy

ONNX_FILE, PACKED_FILE = "model.onnx", "weights.smpq"
REFERENCE_IMAGES = 64  # images of the first test batch that the integer-only reference runs on


def export_model(model: nn.Module, blank: nn.Module, *, input_shape: tuple[int, ...], table: CostTable,
                 policy: Policy, out: Path, batches: Callable[[], Iterable], threads: int) -> dict:
    """Export ``model`` (fake-quantized, loaded from its checkpoint) into ``out``; ``blank`` is the same
    architecture at the same policy, which the packed file is unpacked into. ``batches()`` yields the test
    split as ``(images, labels)``. Returns the checks' measurements and the size report."""
    check_expressible(model)
    model.eval()
    result: dict = {}

    def fill(folder: Path) -> None:
        onnx_bytes = export_onnx(model, input_shape).SerializeToString()
        atomic_write(folder / ONNX_FILE, lambda tmp: tmp.write_bytes(onnx_bytes))
        manifest = write_packed(model, folder / PACKED_FILE)
        result["unpacked"] = check_unpacked(model, blank, folder / PACKED_FILE)
        result["onnx"] = compare_logits(model, onnx_session(onnx_bytes, threads), batches())
        check_logits(result["onnx"])
        images = next(iter(batches()))[0][:REFERENCE_IMAGES]
        result["integer_reference"] = integer_reference(model, reference_layer(model), images)
        check_integer_reference(result["integer_reference"])
        result["size"] = size_report(manifest, table, policy, (folder / PACKED_FILE).stat().st_size,
                                     len(onnx_bytes))

    replace_folder(out, fill)
    return {"opset": OPSET, **result}


def check_unpacked(model: nn.Module, blank: nn.Module, path: Path) -> dict:
    """Read the packed file back into ``blank``: its integer weights must be the checkpoint's, exactly."""
    packed = read_packed(path)
    load_packed(blank, packed)
    wanted, restored = integer_grid(model), integer_grid(blank)
    differ = [name for name in wanted if not (np.array_equal(packed.integers[name], wanted[name])
                                              and np.array_equal(restored[name], wanted[name]))]
    if differ:
        raise ExportError(f"the unpacked integer weights of layers {differ} differ from the checkpoint's")
    return {"layers": len(wanted), "weights": int(sum(v.size for v in wanted.values())), "equal": True}
