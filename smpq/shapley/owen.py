"""Owen values with the (layer, kind) groups as unions, and the single-context within-group values.

The Owen value (Owen 1977) of player i in group g averages, over uniformly random orderings of the groups,
the Shapley value of i in the game restricted to g, with the groups before g present and those after it
absent (SPEC §3.3 ``owen``):

    φ_i = E_π [ Σ_{T ⊆ g∖{i}} |T|!(k−|T|−1)!/k! · (v(Q_π(g) ∪ T ∪ {i}) − v(Q_π(g) ∪ T)) ],

Q_π(g) the union of the groups before g. The inner sum is computed exactly over g's 2^k coalitions, so only
the ordering is sampled; the coalitions of one context differ inside g alone, which lets the game reuse
everything computed before g (``MemoGame.many``). ``within_group`` is the one context "every other group
present": Σ_g (2^k − 1) + 1 evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np

from smpq.shapley.sampling import MemoSampler, ValueFn, ordering

Groups = Sequence[Sequence[int]]


@cache
def shapley_matrix(k: int) -> np.ndarray:
    """``M`` (k × 2^k) with φ = M @ v for the exact Shapley values of a k-player game, v indexed by the
    coalition's bit code (Shapley 1953: weight |T|!(k−|T|−1)!/k! on each marginal v(T ∪ {i}) − v(T))."""
    weights = [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
    matrix = np.zeros((k, 1 << k))
    for code in range(1 << k):
        size = bin(code).count("1")
        for i in range(k):
            if code >> i & 1:
                matrix[i, code] += weights[size - 1]
            else:
                matrix[i, code] -= weights[size]
    matrix.setflags(write=False)
    return matrix


def group_masks(base: np.ndarray, members: np.ndarray) -> list[np.ndarray]:
    """``base`` with the group ``members`` set to each of its 2^k coalitions, indexed by bit code."""
    masks = []
    for code in range(1 << len(members)):
        mask = base.copy()
        mask[members] = [(code >> i) & 1 for i in range(len(members))]
        masks.append(mask)
    return masks


class GroupSampler(MemoSampler):
    """Unit ``k``: the exact within-group Shapley values of every group in one context per group.

    ``estimator="owen"``: the contexts of ordering ``k`` of the groups (seeded, antithetic pairs);
    ``"within_group"``: every other group present, for every unit.
    """

    def __init__(self, value_fn: ValueFn, n_players: int, groups: Groups, *, seed: int, antithetic: bool,
                 estimator: str):
        super().__init__(value_fn, n_players)
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups]
        self._seed, self._antithetic, self._estimator = seed, antithetic, estimator

    def unit(self, index: int) -> np.ndarray:
        """Per-player values of unit ``index``, one row per sample of the game's batch: [player, sample]."""
        if self._estimator == "within_group":
            return self.row([None] * len(self.groups))
        order = ordering(self._seed, index, len(self.groups), antithetic=self._antithetic)
        return self.row(self.contexts(order))

    def contexts(self, order: Sequence[int]) -> list[np.ndarray]:
        """Per group, the mask of the groups before it in ``order`` (the others are absent)."""
        present = np.zeros(self.n_players, dtype=bool)
        contexts: list[np.ndarray] = [np.empty(0)] * len(self.groups)
        for g in order:
            contexts[g] = present.copy()
            present[self.groups[g]] = True
        return contexts

    def row(self, contexts: Sequence[np.ndarray | None]) -> np.ndarray:
        """Exact Shapley values inside each group given its context (None: all other groups present)."""
        values = None
        for g, members in enumerate(self.groups):
            base = np.ones(self.n_players, dtype=bool) if contexts[g] is None else contexts[g]
            coalition_values = np.stack(self.game.many(group_masks(base, members)))  # [2^k, samples]
            phi = shapley_matrix(len(members)) @ coalition_values
            if values is None:
                values = np.zeros((self.n_players, coalition_values.shape[1]))
            values[members] = phi
        return values
