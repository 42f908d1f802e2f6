"""The bit-packed weight file (``weights.smpq``): every layer's integer weights at its own bit-width, the 32-bit
per-channel biases the cost model counts, and the float32 scales, behind a small JSON manifest.

Layout (docs/export.md): ``MAGIC`` (8 bytes) · manifest length (uint32, little-endian) · manifest (UTF-8 JSON)
· ``weights`` (one bit stream, ``smpq.export.bitpack``) · ``biases`` (float32) · ``scales`` (float32). Per
layer the scales are its weight steps (one per output channel), its activation step, and, when a batch norm is
folded onto it, the norm's per-channel multiplier. ``weights`` + ``biases`` is what ``smpq.cost.size_bytes``
prices; manifest and scales are counted apart.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from smpq.artifacts import atomic_write
from smpq.errors import ArtifactError, ExportError
from smpq.export import bitpack
from smpq.export.graph import (
    act_step,
    fold_norm,
    foldable_norms,
    integer_weights,
    layer_bias,
    quantized_layers,
    trace,
    weight_step,
)

MAGIC = b"SMPQPACK"
FORMAT_VERSION = 1
SECTIONS = ("weights", "biases", "scales")
FLOAT = np.dtype("<f4")


@dataclass(frozen=True)
class PackedModel:
    """A read (and checked) packed file: the manifest and, per layer, its integers, bias and scales."""

    manifest: dict
    integers: dict[str, np.ndarray]  # int64, in the layer's weight shape
    biases: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]

    def section_bytes(self, name: str) -> int:
        return self.manifest["sections"][name]["bytes"]


def write_packed(model: nn.Module, path: str | Path) -> dict:
    """Pack a fake-quantized model's layers (atomically) into ``path``; returns the manifest."""
    layers, folded = quantized_layers(model), foldable_norms(model, trace(model))
    modules = dict(model.named_modules())
    _check_covered(model, layers, folded)
    runs, entries, biases, scales = [], [], [], []
    for name, layer in layers:
        if not bitpack.MIN_BITS <= layer.w_bits <= bitpack.MAX_BITS:
            raise ExportError(f"layer {name!r}: {layer.w_bits}-bit weights cannot be packed (2 to 16 bits)")
        runs.append((integer_weights(layer).numpy(), layer.w_bits))
        multiplier, bias = (fold_norm(layer, modules[folded[name].norm]) if name in folded
                            else (None, layer_bias(layer)))
        layer_scales = [weight_step(layer), torch.tensor([act_step(layer)])] + ([multiplier] if name in folded else [])
        entries.append(_entry(name, layer, folded, sum(b.size for b in biases), sum(s.size for s in scales)))
        biases.append(bias.numpy().astype(FLOAT))
        scales.append(torch.cat(layer_scales).numpy().astype(FLOAT))
    stream, offsets = bitpack.pack(runs)
    for entry, offset in zip(entries, offsets):
        entry["bit_offset"] = offset
    data = {"weights": stream, "biases": np.concatenate(biases).tobytes(), "scales": np.concatenate(scales).tobytes()}
    manifest = {"format": "smpq-packed", "version": FORMAT_VERSION, "bit_order": "lsb-first two's complement",
                "scale_dtype": "float32", "bias_dtype": "float32", "sections": _sections(data), "layers": entries}
    header = json.dumps(manifest, separators=(",", ":")).encode()
    blob = MAGIC + struct.pack("<I", len(header)) + header + b"".join(data[s] for s in SECTIONS)
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))
    return manifest


def _entry(name: str, layer, folded: dict, bias_offset: int, scale_offset: int) -> dict:
    channels = layer.weight.shape[0]
    return {"name": name, "kind": "conv" if layer.weight.dim() == 4 else "linear",
            "shape": list(layer.weight.shape), "w_bits": layer.w_bits, "a_bits": layer.a_bits,
            "a_signed": layer.a_signed, "count": layer.weight.numel(), "bias_offset": bias_offset,
            "scale_offset": scale_offset, "scale_count": channels + 1 + (channels if name in folded else 0),
            "folded_norm": folded[name].norm if name in folded else None}


def _sections(data: dict[str, bytes]) -> dict[str, dict[str, int]]:
    offsets = np.cumsum([0] + [len(data[s]) for s in SECTIONS])
    return {s: {"offset": int(offsets[i]), "bytes": len(data[s])} for i, s in enumerate(SECTIONS)}


def _check_covered(model: nn.Module, layers: list, folded: dict) -> None:
    """Every parameter and buffer must live in a quantized layer or a folded batch norm, or it would be lost."""
    owners = {name for name, _ in layers} | {f.norm for f in folded.values()}
    loose = [key for key in model.state_dict()
             if not key.endswith("num_batches_tracked") and _owner(key) not in owners]
    if loose:
        raise ExportError(f"the packed format holds quantized layers and the batch norms folded onto them; "
                          f"these parameters belong to neither: {loose[:5]}")


def _owner(key: str) -> str:
    """The module a state_dict key belongs to, a layer's quantizers counted as the layer."""
    module = key.rpartition(".")[0]
    for quantizer in (".w_quant", ".a_quant"):
        module = module.removesuffix(quantizer)
    return module


def read_packed(path: str | Path) -> PackedModel:
    """Read and check a packed file; any disagreement between manifest and data is an ``ArtifactError``."""
    path = Path(path)
    blob = path.read_bytes() if path.is_file() else _missing(path)
    if blob[:8] != MAGIC or len(blob) < 12:
        raise ArtifactError(f"{path}: not an SMPQ packed weight file (no {MAGIC.decode()} header)")
    (length,) = struct.unpack("<I", blob[8:12])
    try:
        manifest = json.loads(blob[12:12 + length].decode())
        sections, layers = manifest["sections"], manifest["layers"]
        body = blob[12 + length:]
        _check_sections(sections, len(body), sum(e["count"] * e["w_bits"] for e in layers))
        data = {s: body[sections[s]["offset"]:sections[s]["offset"] + sections[s]["bytes"]] for s in SECTIONS}
        return _unpacked(manifest, data)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ArtifactError(f"{path}: unreadable manifest ({type(err).__name__}: {err}); re-export the model") from None
    except ValueError as err:
        raise ArtifactError(f"{path}: manifest disagrees with the data: {err}; re-export the model") from None


def _missing(path: Path) -> bytes:
    raise ArtifactError(f"{path}: packed weight file not found (run the export stage first)")


def _check_sections(sections: dict, body_bytes: int, total_bits: int) -> None:
    expected = {s: sections[s]["bytes"] for s in SECTIONS}
    if sum(expected.values()) != body_bytes:
        raise ValueError(f"its sections total {sum(expected.values())} bytes, the file holds {body_bytes}")
    if expected["weights"] != bitpack.packed_bytes(total_bits):
        raise ValueError(f"its layers need {bitpack.packed_bytes(total_bits)} bytes of packed weights, "
                         f"the weights section has {expected['weights']}")


def _unpacked(manifest: dict, data: dict[str, bytes]) -> PackedModel:
    biases, scales = np.frombuffer(data["biases"], FLOAT), np.frombuffer(data["scales"], FLOAT)
    integers, layer_biases, layer_scales, position = {}, {}, {}, 0
    for e in manifest["layers"]:
        if e["count"] != math.prod(e["shape"]) or e["bit_offset"] != position:
            raise ValueError(f"layer {e['name']!r}: {e['count']} values at bit {e['bit_offset']} do not follow "
                             f"its shape {e['shape']} and the previous layer (bit {position})")
        position += e["count"] * e["w_bits"]
        integers[e["name"]] = bitpack.unpack(data["weights"], e["bit_offset"], e["count"], e["w_bits"]).reshape(
            e["shape"])
        layer_biases[e["name"]] = _slice(biases, e["bias_offset"], e["shape"][0], e["name"], "bias")
        layer_scales[e["name"]] = _slice(scales, e["scale_offset"], e["scale_count"], e["name"], "scales")
    return PackedModel(manifest, integers, layer_biases, layer_scales)


def _slice(values: np.ndarray, offset: int, count: int, layer: str, what: str) -> np.ndarray:
    if offset < 0 or offset + count > values.size:
        raise ValueError(f"layer {layer!r}: {what} [{offset}, {offset + count}) lie outside the {values.size} "
                         f"float32 values of the section")
    return values[offset:offset + count].copy()
