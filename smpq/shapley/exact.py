"""Exact values by enumeration of every coalition: the ``exact`` estimator and the references (Shapley and
Owen values) the sampling estimators are checked against."""

from __future__ import annotations

import math

import numpy as np

from smpq.errors import ShapleyError
from smpq.shapley.owen import group_masks, shapley_matrix
from smpq.shapley.sampling import MemoSampler, ValueFn, game_value

MAX_EXACT_PLAYERS = 20


def exact_shapley(value_fn: ValueFn, n_players: int) -> np.ndarray:
    """Exact Shapley values by evaluating all 2^n coalitions once each.

    φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (v(S ∪ {i}) − v(S)) (Shapley 1953).
    """
    if not 1 <= n_players <= MAX_EXACT_PLAYERS:
        raise ValueError(f"exact_shapley enumerates 2^n coalitions and needs 1 <= n_players <= {MAX_EXACT_PLAYERS} "
                         f"(got {n_players}); use Monte Carlo sampling instead")
    players = np.arange(n_players)
    codes = np.arange(1 << n_players)
    values = np.array([game_value(value_fn, ((code >> players) & 1).astype(bool)) for code in codes])
    sizes = np.array([bin(code).count("1") for code in codes])
    weights = np.array([1.0 / (n_players * math.comb(n_players - 1, s)) for s in range(n_players)])
    phi = np.empty(n_players)
    for player in players:
        without = codes[((codes >> player) & 1) == 0]
        phi[player] = np.sum(weights[sizes[without]] * (values[without | (1 << player)] - values[without]))
    return phi


MAX_EXACT_SAMPLER_PLAYERS = 16


class ExactSampler(MemoSampler):
    """The ``exact`` estimator as a one-unit sampler: Shapley values by enumeration, per sample of the batch."""

    def __init__(self, value_fn: ValueFn, n_players: int):
        if n_players > MAX_EXACT_SAMPLER_PLAYERS:
            raise ShapleyError(f"shapley.estimator exact enumerates 2^n coalitions and allows at most "
                               f"{MAX_EXACT_SAMPLER_PLAYERS} players, this supernet has {n_players}; "
                               "use estimator: owen")
        super().__init__(value_fn, n_players)

    def unit(self, index: int) -> np.ndarray:
        """[player, sample] exact values (the same for every unit index)."""
        players = np.arange(self.n_players)
        masks = [((code >> players) & 1).astype(bool) for code in range(1 << self.n_players)]
        return shapley_matrix(self.n_players) @ np.stack(self.game.many(masks))


def exact_owen(value_fn: ValueFn, n_players: int, groups) -> np.ndarray:
    """Owen values (Owen 1977) by enumeration, the reference for the ``owen`` estimator:

    φ_i = Σ_{R ⊆ M∖{g}} |R|!(m−|R|−1)!/m! · Σ_{T ⊆ g∖{i}} |T|!(k−|T|−1)!/k! · (v(Q_R ∪ T ∪ {i}) − v(Q_R ∪ T)).
    """
    groups = [np.asarray(g) for g in groups]
    m = len(groups)
    phi = np.zeros(n_players)
    for g, members in enumerate(groups):
        others = [h for h in range(m) if h != g]
        for code in range(1 << len(others)):
            chosen = [others[j] for j in range(len(others)) if code >> j & 1]
            weight = math.factorial(len(chosen)) * math.factorial(m - len(chosen) - 1) / math.factorial(m)
            base = np.zeros(n_players, dtype=bool)
            for h in chosen:
                base[groups[h]] = True
            values = [game_value(value_fn, mask) for mask in group_masks(base, members)]
            phi[members] += weight * (shapley_matrix(len(members)) @ np.array(values))
    return phi
