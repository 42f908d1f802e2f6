"""Cost model (SPEC §3.5): MACs, parameters, BitOps and size of a quantized model.

- MACs of a conv = C_out · (C_in / groups) · k_h · k_w · H_out · W_out; of a linear = in · out (per sample).
- BitOps(layer) = MACs · b_w · b_a; model BitOps = Σ over all quantizable layers, first/last included.
- Size = Σ_l params_l · b_w / 8 bytes + 4 bytes per output channel: biases, and batch norm once folded
  into a per-channel bias for deployment, are kept in 32-bit float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from smpq.artifacts import read_json, write_json
from smpq.config import BudgetConfig
from smpq.errors import ArtifactError, BudgetError
from smpq.policy import LayerBits, Policy

COST_TABLE_FILE = "cost_table.json"  # written by the calibrate stage, read by every later one
BIAS_BYTES = 4  # per output channel: a 32-bit bias, or batch norm folded into one


@dataclass(frozen=True)
class LayerCost:
    """Static cost of one quantizable layer for a single input sample."""

    name: str  # qualified module name
    kind: str  # "conv" or "linear"
    macs: int
    params: int  # weight elements (bias excluded)
    out_channels: int  # one 32-bit bias (or folded BN shift) each

    def bitops(self, w_bits: int, a_bits: int) -> int:
        """MACs · b_w · b_a: the BitOps of this layer at (w_bits, a_bits)."""
        return self.macs * w_bits * a_bits

    def weight_bytes(self, w_bits: int) -> float:
        """params · b_w / 8: the weights at ``w_bits``."""
        return self.params * w_bits / 8

    @property
    def bias_bytes(self) -> int:
        """The 32-bit bias (or folded batch norm) of every output channel, whatever the bits."""
        return BIAS_BYTES * self.out_channels

    def size_bytes(self, w_bits: int) -> float:
        """Weights at ``w_bits`` plus the 32-bit biases."""
        return self.weight_bytes(w_bits) + self.bias_bytes


@dataclass(frozen=True)
class CostTable:
    """Per-layer costs in execution order; ``first``/``last`` are the layers kept at fixed precision."""

    layers: tuple[LayerCost, ...]
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("cost table has no quantizable (Conv2d/Linear) layer")

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def first(self) -> str:
        return self.layers[0].name

    @property
    def last(self) -> str:
        return self.layers[-1].name

    @property
    def searchable(self) -> list[str]:
        """Layers whose bits are searched: all but the first and the last."""
        return self.names[1:-1]

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def __getitem__(self, name: str) -> LayerCost:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"layer {name!r} is not in the cost table")

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "layers": [asdict(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: Mapping) -> CostTable:
        layers = tuple(LayerCost(**layer) for layer in data["layers"])
        return cls(layers=layers, input_shape=tuple(data["input_shape"]))

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/cost_table.json`` atomically."""
        return write_json(Path(folder) / COST_TABLE_FILE, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> CostTable:
        """Read ``folder/cost_table.json``; a missing or malformed file is an ``ArtifactError``."""
        path = Path(folder) / COST_TABLE_FILE
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{path}: not a valid cost table ({type(err).__name__}: {err}); "
                                "rerun the calibrate stage") from None


def cost_table(model: nn.Module, input_shape: Sequence[int]) -> CostTable:
    """Trace one forward pass of a ``(1, *input_shape)`` zero tensor and record every Conv2d/Linear."""
    found: list[LayerCost] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        found.append(_layer_cost(names[module], module, output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    seen: set[str] = set()
    unique = [c for c in found if not (c.name in seen or seen.add(c.name))]  # a reused module counts once
    return CostTable(layers=tuple(unique), input_shape=tuple(int(d) for d in input_shape))


def _layer_cost(name: str, module: nn.Module, output: torch.Tensor) -> LayerCost:
    weight = module.weight
    if isinstance(module, nn.Conv2d):
        k_h, k_w = module.kernel_size
        h_out, w_out = output.shape[-2:]
        macs = module.out_channels * (module.in_channels // module.groups) * k_h * k_w * h_out * w_out
        return LayerCost(name, "conv", int(macs), weight.numel(), module.out_channels)
    tokens = output.numel() // output.shape[-1]  # 1 for a plain (batch, features) linear
    macs = module.in_features * module.out_features * tokens
    return LayerCost(name, "linear", int(macs), weight.numel(), module.out_features)


def bitops(table: CostTable, policy: Policy) -> int:
    """Σ_l MACs_l · b_w · b_a over every layer of the table (all must be in the policy)."""
    return sum(layer.bitops(_bits(policy, layer.name).w_bits, _bits(policy, layer.name).a_bits)
               for layer in table.layers)


def fixed_bitops(table: CostTable, fixed: Mapping[str, LayerBits]) -> int:
    """BitOps of the fixed-precision layers (first/last): the part of every policy's cost that is never searched."""
    return sum(table[name].bitops(bits.w_bits, bits.a_bits) for name, bits in fixed.items())


def size_bytes(table: CostTable, policy: Policy) -> float:
    """Σ_l params_l · b_w / 8 + 4 · out_channels_l (32-bit bias / folded batch norm)."""
    return sum(layer.size_bytes(_bits(policy, layer.name).w_bits) for layer in table.layers)


def budget_bitops(table: CostTable, fixed: Mapping[str, LayerBits], *, avg_bits: float | None = None,
                  gbitops: float | None = None) -> float:
    """BitOps budget from exactly one form: ``gbitops`` (×1e9) or ``avg_bits`` (= BitOps of a uniform
    W{avg}A{avg} model, the ``fixed`` layers at their own precision; fractional averages allowed)."""
    if (avg_bits is None) == (gbitops is None):
        raise BudgetError("give exactly one budget form: avg_bits or gbitops")
    if gbitops is not None:
        return float(gbitops) * 1e9
    total = 0.0
    for layer in table.layers:
        bits = fixed.get(layer.name)
        total += layer.bitops(bits.w_bits, bits.a_bits) if bits else layer.macs * float(avg_bits) ** 2
    return total


@dataclass(frozen=True)
class Budget:
    """A selection budget in model units: BitOps per sample and, optionally, the size in bytes."""

    bitops: float
    size_bytes: float | None = None

    @classmethod
    def from_config(cls, cfg: BudgetConfig, table: CostTable, fixed: Mapping[str, LayerBits]) -> Budget:
        """From a ``BudgetConfig`` (``avg_bits`` or ``gbitops``, optional ``size_mb``; validated on load)."""
        return cls(budget_bitops(table, fixed, avg_bits=cfg.avg_bits, gbitops=cfg.gbitops),
                   cfg.size_mb * 1e6 if cfg.size_mb is not None else None)


def _bits(policy: Policy, name: str) -> LayerBits:
    try:
        return policy[name]
    except KeyError:
        raise ArtifactError(f"policy has no bits for layer {name!r}; it must cover every layer of the cost "
                            "table (rerun the stage that wrote the policy)") from None
