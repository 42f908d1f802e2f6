"""Permutation sampling for Shapley estimation: marginal contributions of seeded permutations (SPEC §3.3).

The sampling half of ``smpq.shapley``: permutation ``k`` of a run depends only on ``(seed, k)`` (Castro,
Gómez, Tejada 2009), so a run can be cut by ``chunk_indices`` into ranges that ``sample_permutations`` walks
anywhere (thread, process, machine) and ``merge`` puts back in order. Each walk memoises coalition values,
and Shapley-NAS truncation (Xiao et al. CVPR 2022) stops a permutation once the coalition has collapsed.
``smpq.shapley`` turns the marginals into estimates and standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ValueFn = Callable[[np.ndarray], float]

DIRECTIONS = ("remove", "add")


@dataclass(frozen=True, eq=False)
class PermutationSamples:
    """Marginal contributions from a block of permutations: the unit of a chunked (fanned-out) run.

    ``marginals[j, i]`` is player ``i``'s marginal in permutation ``indices[j]``; ``evaluations[j]`` the
    new distinct value-function calls that permutation needed; ``base_evaluations`` counts the calls for
    v(N) and v(∅) (2 per block).
    """

    indices: np.ndarray
    marginals: np.ndarray
    evaluations: np.ndarray
    v_full: float
    v_empty: float
    base_evaluations: int


def permutation(seed: int, index: int, n_players: int, *, antithetic: bool) -> np.ndarray:
    """Permutation number ``index`` of a run: a function of ``(seed, index)`` alone.

    With ``antithetic``, permutations ``2j`` and ``2j+1`` are a pair (π_j, reversed π_j) with π_j drawn
    from ``default_rng([seed, j])``; otherwise permutation ``k`` is drawn from ``default_rng([seed, k])``.
    """
    draw = index // 2 if antithetic else index
    order = np.random.default_rng([seed, draw]).permutation(n_players)
    return order[::-1].copy() if antithetic and index % 2 else order


class _CachedGame:
    """Memoised value function: each distinct coalition is evaluated once per instance."""

    def __init__(self, value_fn: ValueFn):
        self._value_fn = value_fn
        self._cache: dict[bytes, float] = {}

    @property
    def n_evaluations(self) -> int:
        return len(self._cache)

    def __call__(self, mask: np.ndarray) -> float:
        key = mask.tobytes()
        if key not in self._cache:
            self._cache[key] = game_value(self._value_fn, mask.copy())
        return self._cache[key]


class _Walker:
    """Walks permutations through one memoised game and returns each player's marginal contribution."""

    def __init__(self, value_fn: ValueFn, n_players: int, direction: str, truncation: float | None):
        self.game = _CachedGame(value_fn)
        self.n_players = n_players
        self.direction = direction
        self.v_full = self.game(np.ones(n_players, dtype=bool))
        self.v_empty = self.game(np.zeros(n_players, dtype=bool))
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
            after = self.game(mask)
            marginals[player] = current - after if removing else after - current
            current = after
        return marginals


def sample_permutations(value_fn: ValueFn, n_players: int, indices: Iterable[int], *, seed: int,
                        antithetic: bool = True, direction: str = "remove",
                        truncation: float | None = None) -> PermutationSamples:
    """Marginals for the given permutation indices of a run (one chunk of a fan-out), memoised per chunk."""
    validate_sampling(n_players, 1, direction, truncation, None, 1, seed)
    indices = np.array(list(indices), dtype=np.int64)
    if indices.size == 0:
        raise ValueError("sample_permutations needs at least one permutation index")
    rows = list(walk_chunks(value_fn, n_players, [indices.tolist()], seed, antithetic, direction, truncation))
    walker = rows[0][1]
    return PermutationSamples(indices, np.array([r[2] for r in rows]), np.array([r[3] for r in rows], dtype=np.int64),
                              walker.v_full, walker.v_empty, 2)


def merge(blocks: Sequence[PermutationSamples]) -> PermutationSamples:
    """Combine chunks of one run into one block ordered by permutation index (indices must not repeat)."""
    if not blocks:
        raise ValueError("merge needs at least one block of permutation samples")
    indices = np.concatenate([b.indices for b in blocks])
    if np.unique(indices).size != indices.size:
        raise ValueError("merge: the blocks share permutation indices; each index must be sampled once")
    if any(b.v_full != blocks[0].v_full or b.v_empty != blocks[0].v_empty for b in blocks):
        raise ValueError("merge: blocks disagree on v(N) or v(∅); they do not come from the same game")
    order = np.argsort(indices, kind="stable")
    return PermutationSamples(
        indices[order], np.concatenate([b.marginals for b in blocks])[order],
        np.concatenate([b.evaluations for b in blocks])[order], blocks[0].v_full, blocks[0].v_empty,
        sum(b.base_evaluations for b in blocks))


def chunk_indices(n_permutations: int, chunks: int, *, antithetic: bool) -> list[range]:
    """Indices ``0..n−1`` cut into at most ``chunks`` contiguous near-equal ranges; an antithetic pair (2j, 2j+1)
    always stays in one range (fewer ranges when there are fewer permutations or pairs than ``chunks``)."""
    check_int("n_permutations", n_permutations, minimum=1)
    check_int("chunks", chunks, minimum=1)
    if antithetic and n_permutations % 2:
        raise ValueError(f"max_permutations must be even with antithetic=True (pairs of π and reversed π), "
                         f"got {n_permutations}")
    unit = 2 if antithetic else 1
    count = min(chunks, n_permutations // unit)
    base, extra = divmod(n_permutations // unit, count)
    bounds = np.cumsum([0] + [(base + (c < extra)) * unit for c in range(count)])
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def walk_chunks(value_fn: ValueFn, n_players: int, ranges: Sequence[Sequence[int]], seed: int, antithetic: bool,
                direction: str, truncation: float | None):
    """``(chunk, walker, marginals, new evaluations)`` per permutation, one fresh memoised walker per range."""
    for chunk, indices in enumerate(ranges):
        walker = _Walker(value_fn, n_players, direction, truncation)
        for index in indices:
            before = walker.game.n_evaluations
            marginals = walker.walk(permutation(seed, int(index), n_players, antithetic=antithetic))
            yield chunk, walker, marginals, walker.game.n_evaluations - before


def game_value(value_fn: ValueFn, mask: np.ndarray) -> float:
    """``value_fn(mask)`` as a float; a NaN or infinite value is an error naming the coalition."""
    value = float(value_fn(mask))
    if not math.isfinite(value):
        raise ValueError(f"value_fn returned {value} for coalition {np.flatnonzero(mask).tolist()}; "
                         "a game value must be finite")
    return value


def check_int(name: str, value: object, *, minimum: int) -> None:
    """Reject bools, non-integers and integers below ``minimum`` with one message naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def validate_sampling(n_players: int, max_permutations: int, direction: str, truncation: float | None,
                      tolerance: float | None, min_permutations: int, seed: int) -> None:
    """Check the arguments of a sampling run, each with a message naming it and the allowed values."""
    check_int("n_players", n_players, minimum=1)
    check_int("max_permutations", max_permutations, minimum=1)
    check_int("min_permutations", min_permutations, minimum=1)
    check_int("seed", seed, minimum=0)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if truncation is not None:
        if not 0 <= truncation < 1:
            raise ValueError(f"truncation must be in [0, 1) (Shapley-NAS uses 0.5) or None, got {truncation!r}")
        if direction != "remove":
            raise ValueError("truncation is defined only for direction='remove' (stop a permutation once the "
                             "remaining coalition's value drops below truncation · v(N)); use direction='remove' "
                             "or truncation=None")
    if tolerance is not None and not tolerance > 0:
        raise ValueError(f"tolerance must be > 0 or None, got {tolerance!r}")
