"""Per-layer average Hessian traces of a model's loss by Hutchinson's method (the ``hawq`` sensitivity).

Hutchinson (1990): for a Rademacher vector v (entries ±1, independent), E[vᵀHv] = Tr(H), so the mean of
vᵀHv over probes estimates the trace, with the standard error of that mean. Hv is a Hessian-vector product
by double backward (Pearlmutter 1994): Hv = ∂(gᵀv)/∂θ with g = ∂L/∂θ built with ``create_graph``.

One probe covers every tensor at once: with v = (v_1, …, v_k) drawn independently per tensor,
E[v_iᵀ(Hv)_i] = Tr(H_ii) because the cross blocks have mean zero, so one HVP yields an unbiased sample of
every layer's block trace, as PyHessian and HAWQ-V2 (Dong et al. 2020) do.

The tensors of a model are each searchable layer's weight and its input activation. The activation is
reached through a zero tensor δ added to the layer's input (a forward pre-hook): derivatives at δ = 0 are
those of the loss with respect to that layer's input only, as its activation quantizer would perturb it.
The average trace is Tr(H)/n: n = the weight's elements, and for an activation the elements of one sample
(the batch loss is a mean, so Tr(H_δ) over the batch is the mean per-sample trace).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smpq.errors import SensitivityError

KINDS = ("w", "a")  # a layer's weight and its input activation, as in smpq.quant.calibration


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimates of Tr(H) per tensor: mean and standard error over ``samples`` probes."""

    names: tuple
    mean: np.ndarray
    stderr: np.ndarray
    samples: int  # vᵀHv samples per tensor (rounds × batches)
    rounds: int  # rounds of one probe per batch
    hvps: int  # Hessian-vector products computed
    converged: bool  # the tolerance stopped it before the last round


def rademacher(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A tensor shaped like ``tensor`` with independent entries ±1 (probability ½ each)."""
    bits = torch.randint(0, 2, tensor.shape, generator=generator, dtype=torch.int64)
    return (2 * bits - 1).to(tensor.dtype)


def quadratic_forms(loss: torch.Tensor, tensors: Sequence[torch.Tensor], generator: torch.Generator) -> np.ndarray:
    """vᵢᵀ(Hv)ᵢ for every tensor i, for one joint Rademacher probe v: one Hessian-vector product."""
    grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
    probes = [rademacher(t, generator) for t in tensors]
    curved = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    forms = np.zeros(len(tensors))  # a tensor the gradient is constant in has a zero Hessian block
    if curved:
        products = torch.autograd.grad([grads[i] for i in curved], tensors,
                                       grad_outputs=[probes[i] for i in curved], allow_unused=True)
        for i, (probe, product) in enumerate(zip(probes, products)):
            forms[i] = 0.0 if product is None else float((probe * product).sum())
    return forms


def hutchinson(sample: Callable[[int], np.ndarray], names: Sequence, *, probes: int, batches: int,
               tolerance: float | None) -> TraceEstimate:
    """Rounds of one probe per batch (``sample(b)`` → vᵀHv per tensor on batch b), at most ``probes`` rounds.

    After each round from the second on, it stops when the running mean of every tensor changed by at most
    ``tolerance`` relative to the previous round's (|m_r − m_{r−1}| ≤ tolerance · |m_{r−1}|). A non-finite
    sample is a ``SensitivityError`` naming the tensor, never a silent NaN in the selection.
    """
    if probes < 1 or batches < 1:
        raise SensitivityError(f"hutchinson needs at least one probe and one batch, got {probes} and {batches}")
    rows: list[np.ndarray] = []
    previous, converged = None, False
    for round_ in range(1, probes + 1):
        rows += [_finite(sample(b), names, round_) for b in range(batches)]
        mean = np.mean(rows, axis=0)
        if tolerance is not None and previous is not None and np.all(np.abs(mean - previous)
                                                                       <= tolerance * np.abs(previous)):
            converged = round_ < probes
            break
        previous = mean
    table = np.asarray(rows)
    stderr = (table.std(axis=0, ddof=1) / math.sqrt(len(rows)) if len(rows) > 1
              else np.full(len(names), np.inf))
    return TraceEstimate(tuple(names), table.mean(axis=0), stderr, len(rows), round_, len(rows), converged)


def _finite(forms: np.ndarray, names: Sequence, round_: int) -> np.ndarray:
    bad = [names[i] for i in np.flatnonzero(~np.isfinite(forms))]
    if bad:
        raise SensitivityError(f"Hessian trace sample of {bad[0]} is not finite (probe round {round_}): the loss or "
                               "its curvature overflowed; check that the pretrained model is sound (finite loss "
                               "on search_val)")
    return forms


def layer_traces(model: nn.Module, layers: Sequence[str], batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                 probes: int, tolerance: float | None, generator: torch.Generator) -> dict:
    """Average Hessian traces Tr(H)/n of the cross-entropy loss of ``model`` (eval mode) for the weight
    (``"w"``) and input activation (``"a"``) of every layer in ``layers``, over the ``(images, labels)``
    ``batches``: ``{"traces": {(layer, kind): (mean, stderr)}, "estimate": TraceEstimate}``."""
    modules = _resolve(model, layers)
    names = [(name, kind) for kind in KINDS for name in layers]
    weight_size = {name: modules[name].weight.numel() for name in layers}
    sample_size: dict[str, int] = {}

    def sample(index: int) -> np.ndarray:
        images, labels = batches[index]
        deltas: dict[str, torch.Tensor] = {}

        def perturb(name: str):
            def hook(module: nn.Module, inputs: tuple) -> tuple:
                deltas[name] = torch.zeros_like(inputs[0], requires_grad=True)
                sample_size[name] = inputs[0][0].numel()
                return (inputs[0] + deltas[name], *inputs[1:])
            return hook

        handles = [modules[name].register_forward_pre_hook(perturb(name)) for name in layers]
        try:
            loss = F.cross_entropy(model(images), labels)
        finally:
            for handle in handles:
                handle.remove()
        tensors = [modules[name].weight for name in layers] + [deltas[name] for name in layers]
        return quadratic_forms(loss, tensors, generator)

    with _only_weights_trainable(model, [modules[name].weight for name in layers]):
        estimate = hutchinson(sample, names, probes=probes, batches=len(batches), tolerance=tolerance)
    sizes = [weight_size[name] for name in layers] + [sample_size[name] for name in layers]
    traces = {key: (float(m) / n, float(e) / n) for key, m, e, n in zip(names, estimate.mean, estimate.stderr, sizes)}
    return {"traces": traces, "estimate": estimate}


@contextmanager
def _only_weights_trainable(model: nn.Module, weights: list[torch.Tensor]) -> Iterator[None]:
    """Eval mode, and gradients for ``weights`` only, for the duration; both restored afterwards."""
    training, flags = model.training, [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(any(p is w for w in weights))
        yield
    finally:
        model.train(training)
        for p, flag in flags:
            p.requires_grad_(flag)


def _resolve(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in layers if not isinstance(modules.get(name), (nn.Conv2d, nn.Linear))]
    if unknown or not layers:
        raise SensitivityError("Hessian traces need Conv2d/Linear layers of the model; not found: "
                               f"{unknown or 'none given'}")
    return {name: modules[name] for name in layers}
