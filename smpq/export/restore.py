"""The reader's other half: write a packed file's integers, scales and biases back into a fake-quantized model.

The model must have the manifest's layers at the manifest's bits and signedness (build it with
``smpq.quant.apply_policy``); its latent weight becomes ``q · s`` (which the LSQ quantizer maps back to exactly
``q``), its quantizer steps the stored ones, and a folded batch norm becomes the identity-statistics norm
``m · x + bias`` (running mean 0, variance 1, eps 0), so the model computes what the deployment does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from smpq.errors import ArtifactError
from smpq.export.graph import integer_weights, quantized_layers
from smpq.export.packed import PackedModel, read_packed


def load_packed(model: nn.Module, packed: PackedModel | str | Path) -> nn.Module:
    """Fill ``model`` (in place) from a packed file or an already-read ``PackedModel``; returns it."""
    packed = packed if isinstance(packed, PackedModel) else read_packed(packed)
    modules = dict(model.named_modules())
    for entry in packed.manifest["layers"]:
        layer = _matching_layer(modules, entry)
        channels = entry["shape"][0]
        scales = torch.from_numpy(packed.scales[entry["name"]])
        bias = torch.from_numpy(packed.biases[entry["name"]])
        with torch.no_grad():
            step = scales[:channels]
            ints = torch.from_numpy(packed.integers[entry["name"]]).float()
            layer.weight.copy_(ints * step.view(-1, *([1] * (ints.dim() - 1))))
            layer.w_quant.step.copy_(step)
            layer.a_quant.step.copy_(scales[channels])
            if entry["folded_norm"] is None:
                _set_bias(layer, bias, entry["name"])
            else:
                _set_norm(modules[entry["folded_norm"]], scales[channels + 1:], bias)
                if layer.bias is not None:
                    layer.bias.zero_()
    return model


def integer_grid(model: nn.Module) -> dict[str, np.ndarray]:
    """Every quantized layer's integer weights (int64) as its forward pass uses them."""
    return {name: integer_weights(layer).numpy() for name, layer in quantized_layers(model)}


def _matching_layer(modules: dict[str, nn.Module], entry: dict):
    name = entry["name"]
    layer = modules.get(name)
    if layer is None or not hasattr(layer, "w_quant"):
        raise ArtifactError(f"packed layer {name!r} is not a quantized layer of the model; build the model with "
                            "the policy the file was exported from")
    found = (list(layer.weight.shape), layer.w_bits, layer.a_bits, layer.a_signed)
    wanted = (entry["shape"], entry["w_bits"], entry["a_bits"], entry["a_signed"])
    if found != wanted:
        raise ArtifactError(f"packed layer {name!r} (shape, w_bits, a_bits, a_signed) = {wanted}, the model has "
                            f"{found}; build the model with the policy the file was exported from")
    return layer


def _set_bias(layer, bias: torch.Tensor, name: str) -> None:
    if layer.bias is not None:
        layer.bias.copy_(bias)
    elif bool(bias.any()):
        raise ArtifactError(f"packed layer {name!r} has a non-zero bias but the model's layer has none")


def _set_norm(norm: nn.BatchNorm2d, multiplier: torch.Tensor, bias: torch.Tensor) -> None:
    norm.weight.copy_(multiplier)
    norm.bias.copy_(bias)
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0)
    norm.eps = 0.0
