"""A quantization policy: every quantizable layer's (weight bits, activation bits).

Layers are keyed by their qualified module name (``model.named_modules()``); the first and last
layer are part of the policy at their fixed precision so that cost and model always agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from smpq.artifacts import write_json, write_yaml
from smpq.errors import ArtifactError


@dataclass(frozen=True, order=True)
class LayerBits:
    """Bit-widths of one layer: weights and the layer's input activation."""

    w_bits: int
    a_bits: int

    def __post_init__(self) -> None:
        for kind in ("w_bits", "a_bits"):
            value = getattr(self, kind)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
                raise ValueError(f"{kind} must be an integer in [1, 32], got {value!r}")

    def __str__(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"


def fixed_bits(first_last, table) -> dict[str, LayerBits]:
    """First conv and last linear at the fixed precision ``first_last`` (``quant.first_last``, SPEC §3.1);
    ``table`` is the model's ``CostTable`` (its ``first`` and ``last`` layers)."""
    bits = LayerBits(first_last.w_bits, first_last.a_bits)
    return {table.first: bits, table.last: bits}


class Policy(Mapping[str, LayerBits]):
    """Immutable mapping layer name -> ``LayerBits`` in the model's layer order."""

    def __init__(self, bits: Mapping[str, LayerBits | tuple[int, int] | Mapping[str, int]]):
        self._bits: dict[str, LayerBits] = {name: _as_layer_bits(name, b) for name, b in bits.items()}

    @classmethod
    def uniform(
        cls, layers: Iterable[str], w_bits: int, a_bits: int, fixed: Mapping[str, LayerBits] | None = None
    ) -> Policy:
        """Every layer at (w_bits, a_bits), except those in ``fixed`` (e.g. first/last at W8A8)."""
        fixed = fixed or {}
        return cls({name: fixed.get(name, LayerBits(w_bits, a_bits)) for name in layers})

    def __getitem__(self, name: str) -> LayerBits:
        return self._bits[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._bits)

    def __len__(self) -> int:
        return len(self._bits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self._bits == other._bits

    def __hash__(self) -> int:
        return hash(tuple(self._bits.items()))

    def __repr__(self) -> str:
        return "Policy({" + ", ".join(f"{k!r}: {v}" for k, v in self._bits.items()) + "})"

    def label(self, exclude: Iterable[str] = ()) -> str:
        """``W4A4`` when every layer not in ``exclude`` has the same bits, else ``mixed``."""
        pairs = {bits for name, bits in self._bits.items() if name not in set(exclude)}
        return str(pairs.pop()) if len(pairs) == 1 else "mixed"

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {name: {"w_bits": b.w_bits, "a_bits": b.a_bits} for name, b in self._bits.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, int]]) -> Policy:
        return cls(data)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            return write_yaml(path, self.to_dict())
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
            return cls.from_dict(data)
        except FileNotFoundError:
            raise ArtifactError(f"{path}: policy file not found") from None
        except (ValueError, TypeError, AttributeError, yaml.YAMLError) as err:
            raise ArtifactError(f"{path}: not a valid policy file ({err})") from None


def _as_layer_bits(name: str, value: object) -> LayerBits:
    if isinstance(value, LayerBits):
        return value
    if isinstance(value, Mapping) and set(value) == {"w_bits", "a_bits"}:
        return LayerBits(int(value["w_bits"]), int(value["a_bits"]))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return LayerBits(*value)
    raise ValueError(f"layer {name!r}: expected (w_bits, a_bits) or {{w_bits, a_bits}}, got {value!r}")
