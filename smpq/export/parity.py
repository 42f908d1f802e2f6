"""Parity checks of an export (docs/export.md): onnxruntime against the PyTorch fake-quantized model, and an
integer-only reference of one layer against its fake-quantized output. Each returns its measurements; the
``check_*`` functions raise ``ExportError`` when a measurement misses its stated tolerance.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from smpq.errors import ExportError
from smpq.export.graph import act_step, integer_weights, quantized_layers, weight_step
from smpq.export.onnx_qdq import INPUT

# An image's logits agree when |onnxruntime − PyTorch| ≤ LOGIT_TOLERANCE · max|PyTorch logit of its batch|. An
# activation whose x/s lands within float rounding of a .5 can round the other way and move that image's later
# logits by a few steps (at 2 bits a step is large), so up to 1 − MIN_LOGIT_AGREEMENT of the images may miss it;
# a graph that is not the model misses it on nearly all of them.
LOGIT_TOLERANCE = 1e-2
MIN_LOGIT_AGREEMENT = 0.99
MIN_TOP1_AGREEMENT = 0.999  # over the whole test split
INTEGER_RTOL = 1e-5  # integer reference vs fake-quant output, relative to the layer's largest |output|
INT32_MAX = 2**31 - 1


def onnx_session(onnx_bytes: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def compare_logits(model: nn.Module, session: ort.InferenceSession, batches: Iterable) -> dict:
    """Top-1 of both, their agreement and the logit gap, over every ``(images, labels)`` batch."""
    model.eval()
    same = right_torch = right_onnx = seen = close = 0
    first_gap = first_scale = max_gap = None
    for images, labels in batches:
        reference = model(images).numpy()
        logits = session.run(None, {INPUT: images.numpy()})[0]
        gap = float(np.abs(logits - reference).max())
        if first_gap is None:
            first_gap, first_scale = gap, float(np.abs(reference).max())
        max_gap = max(max_gap or 0.0, gap)
        close += int((np.abs(logits - reference).max(1) <= LOGIT_TOLERANCE * np.abs(reference).max()).sum())
        same += int((logits.argmax(1) == reference.argmax(1)).sum())
        right_torch += int((reference.argmax(1) == labels.numpy()).sum())
        right_onnx += int((logits.argmax(1) == labels.numpy()).sum())
        seen += len(labels)
    return {"images": seen, "top1_pytorch": right_torch / seen, "top1_onnx": right_onnx / seen,
            "top1_agreement": same / seen, "first_batch_max_logit_gap": first_gap,
            "first_batch_max_logit": first_scale, "max_logit_gap": max_gap, "logit_agreement": close / seen}


def check_logits(result: dict) -> None:
    if result["logit_agreement"] < MIN_LOGIT_AGREEMENT:
        raise ExportError(f"onnxruntime logits differ from PyTorch by more than {LOGIT_TOLERANCE:.0%} of the largest "
                          f"logit on {100 * (1 - result['logit_agreement']):.2f} % of the test images (at most "
                          f"{1 - MIN_LOGIT_AGREEMENT:.0%} may, where an activation rounds the other way at a grid "
                          "boundary); the ONNX graph is not the model")
    if result["top1_agreement"] < MIN_TOP1_AGREEMENT:
        raise ExportError(f"onnxruntime and PyTorch agree on the top-1 class of {100 * result['top1_agreement']:.2f} % "
                          f"of the test images, below {100 * MIN_TOP1_AGREEMENT:.1f} %")


def reference_layer(model: nn.Module) -> str:
    """The layer the integer reference runs: the ungrouped one with the fewest weight bits (first on ties)."""
    layers = [(layer.w_bits, i, name) for i, (name, layer) in enumerate(quantized_layers(model))
              if getattr(layer, "groups", 1) == 1]
    return min(layers)[2]


@torch.no_grad()
def integer_reference(model: nn.Module, name: str, images: torch.Tensor) -> dict:
    """Run layer ``name`` on its input for ``images`` twice: fake-quantized (float) and integer-only —
    ``acc = Σ q_w · q_x`` in int32, then one rescale per output channel ``y = acc · s_x · s_w[c] + bias``."""
    layer = dict(model.named_modules())[name]
    captured = []
    handle = layer.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
    try:
        model.eval()
        model(images)
    finally:
        handle.remove()
    x = captured[0]
    expected = layer(x).numpy().astype(np.float64)
    step = act_step(layer)
    q_x = torch.clamp(x / step, layer.a_quant.qmin, layer.a_quant.qmax).round()
    q_w = integer_weights(layer).numpy().reshape(layer.weight.shape[0], -1).astype(np.int32)
    cols = _columns(layer, q_x)  # [N, K, L] integers
    bound = int(np.abs(cols).max(initial=0)) * int(np.abs(q_w).max(initial=0)) * q_w.shape[1]
    if bound > INT32_MAX:
        raise ExportError(f"layer {name!r}: the worst-case accumulator {bound} overflows int32")
    acc = np.matmul(q_w, cols)  # int32 × int32 → int32 accumulation
    scale = (step * weight_step(layer).numpy().astype(np.float64))[None, :, None]
    bias = layer.bias.numpy().astype(np.float64)[None, :, None] if layer.bias is not None else 0.0
    result = (acc * scale + bias).reshape(expected.shape)
    return {"layer": name, "w_bits": layer.w_bits, "a_bits": layer.a_bits, "images": len(images),
            "accumulator_dtype": str(acc.dtype), "max_abs_accumulator": int(np.abs(acc).max()),
            "max_abs_error": float(np.abs(result - expected).max()), "max_abs_output": float(np.abs(expected).max())}


def check_integer_reference(result: dict) -> None:
    limit = INTEGER_RTOL * result["max_abs_output"]
    if result["max_abs_error"] > limit:
        raise ExportError(f"layer {result['layer']!r}: the integer-only reference differs from the fake-quantized "
                          f"output by {result['max_abs_error']:.3g}, above {limit:.3g}")


def _columns(layer: nn.Module, q_x: torch.Tensor) -> np.ndarray:
    """The integer input as ``[N, K, L]`` columns (im2col for a conv; L = 1 for a linear)."""
    if layer.weight.dim() == 2:
        return q_x.reshape(-1, q_x.shape[-1], 1).numpy().astype(np.int32)
    cols = F.unfold(q_x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    return cols.numpy().astype(np.int32)
