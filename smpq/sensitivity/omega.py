"""HAWQ-V3's sensitivity score of every bit-width candidate (Yao et al. 2021, eq. 8):

    Ω(l, b) = Tr(H_l)/n_l · ‖Q_b(X_l) − X_l‖²

the second-order estimate of the loss increase (up to the factor ½, which no selection sees) when tensor
X_l is quantized to b bits, with H_l's average trace standing in for the whole Hessian block (HAWQ-V2,
Dong et al. 2020). X_l is a searchable layer's weight (per-channel calibrated LSQ steps, signed) or its
input activation (the calibrated per-tensor step and signedness; ‖·‖² averaged over the samples, matching
the per-sample average trace of ``smpq.sensitivity.hutchinson``). 32 bits or more is full precision: Ω = 0.

Rule for an unusable trace (peer tools shipped both bugs): a non-finite estimate stops the run
(``hutchinson`` raises ``SensitivityError``); a negative mean — the loss is not locally convex in that
tensor, or the estimate is noise around zero — is clamped to 0 with a warning and flagged ``clamped``, so the
candidate's Ω is 0 at every bit-width (the quadratic model sees no cost in quantizing it) instead of a
negative Ω that would reward the coarsest grid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from smpq.quant.calibration import Calibration
from smpq.quant.lsq import fake_quantize, positive_step, quant_range

log = logging.getLogger(__name__)

FULL_PRECISION = 32  # bits at or above this are the float tensor itself


def quantization_error(x: torch.Tensor, step: torch.Tensor, bits: int, signed: bool) -> float:
    """‖Q_b(x) − x‖² with the LSQ grid of ``bits`` and ``step`` (broadcast against ``x``); 0 at full precision."""
    if bits >= FULL_PRECISION:
        return 0.0
    qmin, qmax = quant_range(bits, signed)
    with torch.no_grad():
        return float((fake_quantize(x, positive_step(step), qmin, qmax) - x).pow(2).sum())


def weight_errors(module: nn.Module, name: str, calibration: Calibration, bits: Iterable[int]) -> dict:
    """``{(name, "w", b): ‖Q_b(W) − W‖²}`` with the calibrated per-output-channel steps."""
    weight = module.weight.detach()
    shape = (-1, *([1] * (weight.dim() - 1)))
    return {(name, "w", b): quantization_error(weight, _step(calibration, name, "w", b).view(shape), b, True)
            for b in bits}


def activation_errors(model: nn.Module, layers: Sequence[str], calibration: Calibration,
                      images: Iterable[torch.Tensor], bits: Iterable[int]) -> dict:
    """``{(layer, "a", b): mean over samples of ‖Q_b(a) − a‖²}`` of each layer's input on the float ``model``
    (eval mode), with the calibrated per-tensor step and signedness."""
    modules, bits = dict(model.named_modules()), list(bits)
    sums = {(name, "a", b): 0.0 for name in layers for b in bits}
    count = 0

    def observe(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            for b in bits:
                sums[(name, "a", b)] += quantization_error(inputs[0], _step(calibration, name, "a", b), b,
                                                           calibration.a_signed(name))
        return hook

    handles = [modules[name].register_forward_pre_hook(observe(name)) for name in layers]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for batch in images:
                model(batch)
                count += batch.shape[0]
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return {key: total / max(count, 1) for key, total in sums.items()}


def usable_traces(traces: Mapping[tuple[str, str], tuple[float, float]]
                  ) -> tuple[dict[tuple[str, str], float], list[tuple[str, str]]]:
    """(trace per ``(layer, kind)``, the keys clamped): a negative mean becomes 0 with a warning (module
    docstring); ``traces`` maps each key to its (mean, standard error)."""
    usable, clamped = {}, []
    for (layer, kind), (mean, stderr) in traces.items():
        usable[(layer, kind)] = max(mean, 0.0)
        if mean < 0:
            clamped.append((layer, kind))
            log.warning("hawq: average Hessian trace of %s (%s) is negative (%.3g ± %.2g); clamped to 0, so its "
                        "Ω is 0 at every bit-width", layer, kind, mean, stderr)
    return usable, clamped


def omega_scores(traces: Mapping[tuple[str, str], float],
                 errors: Mapping[tuple[str, str, int], float]) -> dict[tuple[str, str, int], float]:
    """Ω(l, b) = Tr(H_l)/n_l · ‖Q_b(X_l) − X_l‖² for every candidate ``(layer, kind, bits)`` of ``errors``;
    ``traces`` are the usable average traces (``usable_traces``)."""
    return {(layer, kind, b): traces[(layer, kind)] * error for (layer, kind, b), error in errors.items()}


def _step(calibration: Calibration, layer: str, kind: str, bits: int) -> torch.Tensor:
    return torch.ones(()) if bits >= FULL_PRECISION else calibration.step(layer, kind, bits)
