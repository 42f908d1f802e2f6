"""Quantization (SPEC §3.1): LSQ fake quantizers, quantized Conv2d/Linear, calibration of the initial
step sizes, and applying a per-layer bit-width ``Policy`` to a float model."""

from smpq.quant.apply import apply_policy, quantizable_layers, quantized_policy
from smpq.quant.calibration import CALIBRATION_FILE, Calibration, calibrate
from smpq.quant.layers import QuantConv2d, QuantLinear
from smpq.quant.lsq import (
    LSQQuantizer,
    fake_quantize,
    grad_scale,
    mse_optimal_step,
    quant_range,
    round_ste,
    set_weight_step_grad,
)

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "LSQQuantizer",
    "QuantConv2d",
    "QuantLinear",
    "apply_policy",
    "calibrate",
    "fake_quantize",
    "grad_scale",
    "mse_optimal_step",
    "quant_range",
    "quantizable_layers",
    "quantized_policy",
    "round_ste",
    "set_weight_step_grad",
]
