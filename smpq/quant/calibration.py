"""Calibration (SPEC §3.1): the initial LSQ step of every (layer, kind, bit-width) and each layer's
activation signedness, measured once on the float model.

Each candidate bit-width owns its own step, initialised at the MSE-optimal value
(``mse_optimal_step``): weights per output channel from the layer's weight, activations per tensor
from a bounded uniform subsample of the layer's observed inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from smpq.artifacts import load_state_dict, save_state_dict
from smpq.errors import ArtifactError
from smpq.policy import LayerBits
from smpq.quant.activation_sampler import ActivationSampler
from smpq.quant.lsq import mse_optimal_step

log = logging.getLogger(__name__)

KINDS = ("w", "a")
CALIBRATION_FILE = "calibration.pt"  # written by the calibrate stage (``Calibration.save``)


@dataclass(frozen=True, eq=False)
class Calibration:
    """Step tensors keyed by ``(layer, kind, bits)`` plus ``a_signed`` per layer (read-only by convention)."""

    steps: Mapping[tuple[str, str, int], torch.Tensor] = field(default_factory=dict)
    signed: Mapping[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for layer, kind, _ in self.steps:
            if kind not in KINDS:
                raise ValueError(f"step kind must be one of {KINDS}, got {kind!r} for layer {layer!r}")
            if "|" in layer:
                raise ValueError(f"layer name {layer!r} may not contain '|' (used as the state_dict key separator)")
            if layer not in self.signed:
                raise ValueError(f"layer {layer!r} has steps but no activation signedness")

    @property
    def layers(self) -> list[str]:
        return list(self.signed)

    def bits(self, layer: str, kind: str) -> list[int]:
        """Calibrated bit-widths of ``layer`` for ``kind`` ("w" or "a"), ascending."""
        return sorted(b for (name, k, b) in self.steps if name == layer and k == kind)

    def step(self, layer: str, kind: str, bits: int) -> torch.Tensor:
        """A copy of the step for ``(layer, kind, bits)``: shape [out_channels] for "w", scalar for "a"."""
        try:
            return self.steps[(layer, kind, bits)].clone()
        except KeyError:
            raise KeyError(self._missing_message(layer, kind, bits)) from None

    def a_signed(self, layer: str) -> bool:
        """Whether ``layer``'s input took negative values during calibration (signed activation grid)."""
        try:
            return self.signed[layer]
        except KeyError:
            raise KeyError(f"layer {layer!r} is not calibrated; calibrated layers: {self.layers}") from None

    def to_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (``"{layer}|{kind}|{bits}"`` and ``"{layer}|a_signed"``): loads with weights_only."""
        state = {f"{layer}|a_signed": torch.tensor(signed) for layer, signed in self.signed.items()}
        state.update({f"{layer}|{kind}|{bits}": step.detach().cpu().clone()
                      for (layer, kind, bits), step in self.steps.items()})
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> Calibration:
        """Inverse of ``to_state_dict``; an unknown key is an ``ArtifactError`` naming it."""
        steps: dict[tuple[str, str, int], torch.Tensor] = {}
        signed: dict[str, bool] = {}
        for key, value in state.items():
            parts = key.split("|")
            if len(parts) == 2 and parts[1] == "a_signed":
                signed[parts[0]] = bool(value)
            elif len(parts) == 3 and parts[1] in KINDS and parts[2].isdigit():
                steps[(parts[0], parts[1], int(parts[2]))] = value
            else:
                raise ArtifactError(f"not a calibration state_dict: unexpected key {key!r} "
                                    "(expected '<layer>|<w|a>|<bits>' or '<layer>|a_signed')")
        try:
            return cls(steps=steps, signed=signed)
        except ValueError as err:
            raise ArtifactError(f"inconsistent calibration state_dict: {err}") from None

    def save(self, path: str | Path) -> Path:
        """Write atomically with ``torch.save`` (see ``smpq.artifacts.save_state_dict``)."""
        return save_state_dict(path, self.to_state_dict())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_state_dict(load_state_dict(path))

    def summary(self) -> dict[str, dict]:
        """JSON-ready: per layer its signedness and the mean step per kind and bit-width."""
        return {
            layer: {
                "a_signed": self.signed[layer],
                **{f"{kind}_step_mean": {str(b): float(self.steps[(layer, kind, b)].float().mean())
                                         for b in self.bits(layer, kind)} for kind in KINDS},
            }
            for layer in self.layers
        }

    def _missing_message(self, layer: str, kind: str, bits: int) -> str:
        if layer not in self.signed:
            return f"layer {layer!r} is not calibrated; calibrated layers: {self.layers}"
        have = {k: self.bits(layer, k) for k in KINDS}
        return (f"no {kind!r} step for layer {layer!r} at {bits} bits; calibrated for this layer: "
                f"w bits {have['w']}, a bits {have['a']} (add the bit-width to calibrate's candidates)")


def calibrate(
    model: nn.Module,
    layers: list[str],
    batches: Iterable[torch.Tensor],
    w_bits: Iterable[int],
    a_bits: Iterable[int],
    max_activation_samples: int = 200_000,
    seed: int = 0,
    extra: Mapping[str, LayerBits] | None = None,
) -> Calibration:
    """Run the float ``model`` (eval mode, no grad) over ``batches`` and compute every initial step.

    ``layers`` get steps for every bit-width in ``w_bits``/``a_bits``; each layer of ``extra`` (e.g. the
    first/last kept at W8A8) also gets its fixed bits, whether or not it is in ``layers``. A batch may
    also be an ``(inputs, targets)`` pair; only the inputs are used. Activation signedness is
    ``min(observed input) < 0`` over all batches (not just the subsample).
    """
    wanted = _wanted_bits(layers, set(w_bits), set(a_bits), extra or {})
    modules = _resolve_layers(model, list(wanted))
    sampler = ActivationSampler(max_activation_samples, seed)
    _observe(model, modules, batches, sampler)
    steps: dict[tuple[str, str, int], torch.Tensor] = {}
    signed: dict[str, bool] = {}
    for name, (w_set, a_set) in wanted.items():
        signed[name] = sampler.minimum(name) < 0
        try:
            steps.update(_layer_steps(name, modules[name].weight, sampler.sample(name), signed[name], w_set, a_set))
        except ValueError as err:
            raise ValueError(f"layer {name!r}: {err}") from None
        log.info("calibrated %s: a_signed=%s, w bits %s, a bits %s (%d activation samples)",
                 name, signed[name], sorted(w_set), sorted(a_set), sampler.sample(name).numel())
    return Calibration(steps=steps, signed=signed)


def _layer_steps(name: str, weight: torch.Tensor, sample: torch.Tensor, a_signed: bool, w_bits: set[int],
                 a_bits: set[int]) -> dict[tuple[str, str, int], torch.Tensor]:
    """MSE-optimal steps of one layer: weights per output channel (signed), activations per tensor."""
    steps = {(name, "w", b): mse_optimal_step(weight, b, True, per_channel=True).cpu() for b in sorted(w_bits)}
    steps.update({(name, "a", b): mse_optimal_step(sample, b, a_signed, per_channel=False).cpu()
                  for b in sorted(a_bits)})
    return steps


def _wanted_bits(layers: list[str], w_bits: set[int], a_bits: set[int],
                 extra: Mapping[str, LayerBits]) -> dict[str, tuple[set[int], set[int]]]:
    if layers and (not w_bits or not a_bits):
        raise ValueError("calibrate needs at least one weight and one activation bit-width")
    wanted = {name: (set(w_bits), set(a_bits)) for name in layers}
    for name, bits in extra.items():
        w_set, a_set = wanted.setdefault(name, (set(), set()))
        w_set.add(bits.w_bits)
        a_set.add(bits.a_bits)
    if not wanted:
        raise ValueError("calibrate was given no layers (neither `layers` nor `extra`)")
    return wanted


def _resolve_layers(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"layers not in the model: {unknown}")
    wrong = [n for n in names if not isinstance(modules[n], (nn.Conv2d, nn.Linear))]
    if wrong:
        raise ValueError(f"layers that are not Conv2d/Linear cannot be calibrated: {wrong}")
    return {n: modules[n] for n in names}


def _observe(model: nn.Module, modules: Mapping[str, nn.Module], batches: Iterable[torch.Tensor],
             sampler: ActivationSampler) -> None:
    """Forward every batch with pre-hooks feeding each layer's input to the sampler."""
    def hook_for(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        return lambda module, inputs: sampler.observe(name, inputs[0])

    handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in modules.items()]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    count = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(inputs.to(device))
                count += 1
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if count == 0:
        raise ValueError("calibrate was given no batches")
    unseen = [n for n in modules if not sampler.seen(n)]
    if unseen:
        raise ValueError(f"layers never called during the forward pass, cannot calibrate: {unseen}")
