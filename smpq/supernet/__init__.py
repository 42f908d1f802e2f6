"""DMPQ supernet (SPEC §3.2) and its coalition interface for the Shapley game (SPEC §3.3).

- ``MixedQuantConv2d`` / ``MixedQuantLinear``: EdMIPS composite layers (Cai & Vasconcelos, CVPR 2020).
- ``Supernet``: converts a model in place; players, α/weight parameter split, expected BitOps and
  complexity loss, DMPQ argmax policy, ``alpha.json`` table, coalition masks, frozen inference.
- ``search``: weights on ``train`` and α on ``search_val``, DARTS first-order alternation through
  ``smpq.train.fit``.
"""

from smpq.supernet.alpha import COMPLEXITY_FORMS, complexity_loss
from smpq.supernet.layers import MixedLayer, MixedQuantConv2d, MixedQuantLinear
from smpq.supernet.players import Player, player_groups
from smpq.supernet.search import search
from smpq.supernet.supernet import Supernet

__all__ = [
    "COMPLEXITY_FORMS",
    "MixedLayer",
    "MixedQuantConv2d",
    "MixedQuantLinear",
    "Player",
    "player_groups",
    "Supernet",
    "complexity_loss",
    "search",
]
