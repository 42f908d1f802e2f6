"""Single-path weight steps (SPEC §3.3 "supernet alignment"): on a fraction of the supernet's weight steps,
every (layer, kind) group keeps one candidate drawn uniformly instead of the α mixture.

Why: the Shapley game scores coalitions of the supernet, and a deployed policy is one candidate per group;
weights trained only under the mixture make single-candidate paths poor networks, so the game's value of a
policy can rank policies unlike their accuracy after QAT. Uniform path sampling is the one-shot NAS remedy
(Guo et al., "Single Path One-Shot", ECCV 2020). α steps always see the full mixture.
"""

from __future__ import annotations

import numpy as np

from smpq.supernet.players import player_groups


class SinglePathSteps:
    """``before(step)`` draws the weight step's coalition (or the full mixture); ``after(step)`` clears it."""

    def __init__(self, supernet, fraction: float, rng: np.random.Generator):
        self.supernet, self.fraction, self.rng = supernet, fraction, rng
        self.groups = player_groups(supernet.players())
        self.n_players = len(supernet.players())
        self.single_steps = 0

    def before(self, step: int) -> None:
        if self.rng.random() >= self.fraction:
            return
        mask = np.zeros(self.n_players, dtype=bool)
        for members in self.groups:
            mask[members[int(self.rng.integers(len(members)))]] = True
        self.supernet.set_coalition(mask)
        self.single_steps += 1

    def after(self, step: int) -> None:
        self.supernet.set_coalition(None)
