"""Players of the Shapley game and coalition masks over them (SPEC §3.3).

A player is one bit-width candidate of one searchable layer for weights or activations:
``Player(layer, kind, bits)``, N = L · (|B_w| + |B_a|). The order is part of the interface (masks,
Shapley vectors and stored scores index it): searchable layers in cost-table order; within a layer every
weight candidate ascending, then every activation candidate ascending. It depends only on the layer names
and candidate lists, so a supernet rebuilt from the same arguments has the same players.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("w", "a")


@dataclass(frozen=True)
class Player:
    """One bit-width candidate: ``kind`` "w" (weights) or "a" (the layer's input activation)."""

    layer: str
    kind: str
    bits: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"player kind must be one of {KINDS}, got {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.layer}:{self.kind}{self.bits}"


def make_players(groups: Iterable[tuple[str, Sequence[int], Sequence[int]]]) -> tuple[Player, ...]:
    """Players of ``(layer, w_bits, a_bits)`` groups, in the documented order (bits sorted ascending)."""
    return tuple(
        player
        for layer, w_bits, a_bits in groups
        for player in [*(Player(layer, "w", b) for b in sorted(w_bits)),
                       *(Player(layer, "a", b) for b in sorted(a_bits))]
    )


def player_groups(players: Sequence[Player]) -> list[list[int]]:
    """Indices of each (layer, kind) group, in player order: the unions of the Owen value (SPEC §3.3)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, player in enumerate(players):
        groups.setdefault((player.layer, player.kind), []).append(index)
    return list(groups.values())


def as_mask(mask: object, n_players: int) -> np.ndarray:
    """A validated boolean copy of ``mask`` (numpy array, torch tensor or sequence of bools) of length N."""
    if isinstance(mask, torch.Tensor):
        if mask.dtype != torch.bool:
            raise ValueError(f"coalition mask must be boolean, got a tensor of dtype {mask.dtype}")
        array = mask.detach().cpu().numpy()
    elif isinstance(mask, (np.ndarray, list, tuple)):
        array = np.asarray(mask)
        if array.dtype != np.bool_:
            raise ValueError(f"coalition mask must be boolean, got dtype {array.dtype} "
                             "(use a numpy bool array, e.g. np.ones(n, dtype=bool))")
    else:
        raise ValueError(f"coalition mask must be a boolean numpy array, torch tensor or None, "
                         f"got {type(mask).__name__}")
    if array.shape != (n_players,):
        raise ValueError(f"coalition mask must have shape ({n_players},) (one entry per player), "
                         f"got {array.shape}")
    return array.copy()
