"""Turn a float model into a fake-quantized one for a ``Policy`` (SPEC §3.1, §3.6), and back to the policy.

Every Conv2d/Linear of the model must be in the policy (first and last at their fixed precision), so
the trained model and the cost model (BitOps, size) always describe the same network.
"""

from __future__ import annotations

from torch import nn

from smpq.policy import LayerBits, Policy
from smpq.quant.calibration import Calibration
from smpq.quant.layers import QuantConv2d, QuantLinear

QUANTIZABLE = (nn.Conv2d, nn.Linear)
QUANTIZED = (QuantConv2d, QuantLinear)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Conv2d`` and ``nn.Linear`` (quantized ones included), in registration order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)]


def apply_policy(model: nn.Module, policy: Policy, calibration: Calibration | None = None) -> nn.Module:
    """Replace each policy layer, in place on its parent, by ``QuantConv2d``/``QuantLinear`` at its bits.

    With a ``calibration``: both steps and the activation signedness come from it (a missing bit-width
    is a KeyError naming what is calibrated). Without one: weight steps are MSE-initialised from the
    weights, activations are signed with step 1.0 and must be set by the caller (e.g.
    ``layer.a_quant.init_step(x)``) before use. An already-quantized layer is rebuilt from its latent
    float weight. Everything is validated before the model is touched. Returns ``model`` (or the new
    layer when the model itself is the single layer, name ``""``).
    """
    _check_policy(model, policy)
    modules = dict(model.named_modules())
    replacements = {name: _quantized(name, modules[name], policy[name], calibration) for name in policy}
    for name, quant in replacements.items():
        if name == "":
            return quant
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, quant)
    return model


def quantized_policy(model: nn.Module) -> Policy:
    """The ``Policy`` of a model built by ``apply_policy`` (every Conv2d/Linear must be quantized)."""
    layers = quantizable_layers(model)
    floats = [name for name, module in layers if not isinstance(module, QUANTIZED)]
    if floats:
        raise ValueError(f"model has float (unquantized) Conv2d/Linear layers: {floats}; apply a policy first")
    if not layers:
        raise ValueError("model has no quantized layer")
    return Policy({name: LayerBits(module.w_bits, module.a_bits) for name, module in layers})


def _check_policy(model: nn.Module, policy: Policy) -> None:
    modules = dict(model.named_modules())
    unknown = [name for name in policy if name not in modules]
    if unknown:
        raise ValueError(f"policy layers not in the model: {unknown}")
    wrong = [f"{name} ({type(modules[name]).__name__})" for name in policy
             if not isinstance(modules[name], QUANTIZABLE)]
    if wrong:
        raise ValueError(f"policy layers that are not Conv2d/Linear: {wrong}")
    missing = [name for name, _ in quantizable_layers(model) if name not in policy]
    if missing:
        raise ValueError(f"quantizable layers missing from the policy: {missing}; "
                         "every Conv2d/Linear needs bits (first/last at their fixed precision)")


def _quantized(name: str, module: nn.Module, bits: LayerBits, calibration: Calibration | None) -> nn.Module:
    cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
    a_signed = calibration.a_signed(name) if calibration is not None else True
    try:
        quant = cls.from_float(module, bits.w_bits, bits.a_bits, a_signed)
        if calibration is None:
            quant.w_quant.init_step(quant.weight)
        else:
            quant.w_quant.set_step(calibration.step(name, "w", bits.w_bits))
            quant.a_quant.set_step(calibration.step(name, "a", bits.a_bits))
    except ValueError as err:
        raise ValueError(f"layer {name!r} at {bits}: {err}") from None
    return quant
