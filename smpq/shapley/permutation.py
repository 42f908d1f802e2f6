"""Global permutation sampling (Castro, Gómez, Tejada 2009), kept for ablation (SPEC §3.3 ``permutation``).

Each permutation is walked from the full coalition down (``remove``, as Shapley-NAS, Xiao et al. CVPR
2022) or from the empty one up (``add``); Shapley-NAS truncation stops a walk once the coalition's value
has fallen below ``truncation · v(N)``.
"""

from __future__ import annotations

import numpy as np

from smpq.shapley.sampling import MemoSampler, ValueFn, ordering


class _Walker(MemoSampler):
    """Walks permutations through one memoised game and returns each player's marginal contribution."""

    def __init__(self, value_fn: ValueFn, n_players: int, direction: str, truncation: float | None):
        super().__init__(value_fn, n_players)
        self.direction = direction
        if truncation is not None and self.v_full <= 0:
            raise ValueError(f"truncation needs a positive v(N) (e.g. an accuracy), got v(N) = {self.v_full:.6g}; "
                             "set truncation to None")
        self.threshold = None if truncation is None else truncation * self.v_full

    def walk(self, order: np.ndarray) -> np.ndarray:
        """Marginals of one permutation (indexed by player). ``remove``: v(before) − v(after removing i);
        ``add``: v(after adding i) − v(before). With truncation (remove only), once the current coalition's
        value is below τ·v(N) the players not yet reached get 0 without being evaluated — this biases the
        estimate (efficiency no longer holds), a cost Shapley-NAS accepts to save evaluations."""
        removing = self.direction == "remove"
        mask = np.full(self.n_players, removing, dtype=bool)
        current = self.v_full if removing else self.v_empty
        marginals = np.zeros(self.n_players)
        for player in order:
            if self.threshold is not None and current < self.threshold:
                break
            mask[player] = not removing
            after = self.game.mean(mask)
            marginals[player] = current - after if removing else after - current
            current = after
        return marginals


class PermutationSampler:
    """Unit ``k`` = permutation ``k`` of the players, walked through one memoised game (one per chunk)."""

    def __init__(self, value_fn: ValueFn, n_players: int, *, seed: int, antithetic: bool, direction: str,
                 truncation: float | None):
        self._walker = _Walker(value_fn, n_players, direction, truncation)
        self._seed, self._antithetic = seed, antithetic
        self.v_full, self.v_empty = self._walker.v_full, self._walker.v_empty

    @property
    def n_evaluations(self) -> int:
        return self._walker.n_evaluations

    def unit(self, index: int) -> np.ndarray:
        """Every player's marginal contribution in permutation ``index``."""
        order = ordering(self._seed, index, self._walker.n_players, antithetic=self._antithetic)
        return self._walker.walk(order)
