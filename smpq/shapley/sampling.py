"""What every Shapley estimator shares: seeded orderings, chunks of a run, memoised coalition values.

Unit ``k`` of a run (a permutation of the players, or an ordering of the groups) depends only on
``(seed, k)`` (Castro, Gómez, Tejada 2009), so a run can be cut by ``chunk_indices`` into ranges that are
sampled anywhere (thread, process, machine) and put back in order by ``merge``; the estimate never depends
on the chunking. Antithetic units come in pairs (π, reversed π) (Mitchell et al. 2022, JMLR).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ValueFn = Callable[[np.ndarray], float]


@dataclass(frozen=True, eq=False)
class Samples:
    """Per-unit player values from a block of units: the piece of a chunked (fanned-out) run.

    ``rows[j, i]`` is player ``i``'s value in unit ``indices[j]`` (a marginal contribution, or a within-group
    Shapley value); ``evaluations[j]`` the new distinct value-function calls unit ``j`` needed;
    ``base_evaluations`` the calls for v(N) and v(∅) of the block.
    """

    indices: np.ndarray
    rows: np.ndarray
    evaluations: np.ndarray
    v_full: float
    v_empty: float
    base_evaluations: int
    per_sample: np.ndarray | None = None  # [unit, player, sample] values when the game gives per-sample values


def ordering(seed: int, index: int, size: int, *, antithetic: bool) -> np.ndarray:
    """Unit ``index``'s random order of ``size`` items, a function of ``(seed, index)`` alone.

    With ``antithetic``, units ``2j`` and ``2j+1`` are (π_j, reversed π_j), π_j drawn from
    ``default_rng([seed, j])``; otherwise unit ``k`` is drawn from ``default_rng([seed, k])``.
    """
    draw = index // 2 if antithetic else index
    order = np.random.default_rng([seed, draw]).permutation(size)
    return order[::-1].copy() if antithetic and index % 2 else order


def chunk_indices(n_units: int, chunks: int, *, antithetic: bool) -> list[range]:
    """Units ``0..n−1`` cut into at most ``chunks`` contiguous near-equal ranges; an antithetic pair (2j, 2j+1)
    always stays in one range (fewer ranges when there are fewer units or pairs than ``chunks``)."""
    if n_units < 1 or chunks < 1 or (antithetic and n_units % 2):
        raise ValueError(f"chunk_indices needs n_units >= 1 (even when antithetic) and chunks >= 1, "
                         f"got {n_units} units in {chunks} chunks")
    unit = 2 if antithetic else 1
    count = min(chunks, n_units // unit)
    base, extra = divmod(n_units // unit, count)
    bounds = np.cumsum([0] + [(base + (c < extra)) * unit for c in range(count)])
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def merge(blocks: Sequence[Samples]) -> Samples:
    """Combine chunks of one run into one block ordered by unit index (indices must not repeat)."""
    if not blocks:
        raise ValueError("merge needs at least one block of samples")
    indices = np.concatenate([b.indices for b in blocks])
    if np.unique(indices).size != indices.size:
        raise ValueError("merge: the blocks share unit indices; each index must be sampled once")
    if any(b.v_full != blocks[0].v_full or b.v_empty != blocks[0].v_empty for b in blocks):
        raise ValueError("merge: blocks disagree on v(N) or v(∅); they do not come from the same game")
    order = np.argsort(indices, kind="stable")
    per_sample = None
    if all(b.per_sample is not None for b in blocks):
        per_sample = np.concatenate([b.per_sample for b in blocks])[order]
    return Samples(indices[order], np.concatenate([b.rows for b in blocks])[order],
                   np.concatenate([b.evaluations for b in blocks])[order], blocks[0].v_full, blocks[0].v_empty,
                   sum(b.base_evaluations for b in blocks), per_sample)


class MemoGame:
    """Memoised value function: each distinct coalition is evaluated once per instance.

    A game may return one value or one value per sample of its batch (a vector, kept for the batch standard
    error); ``mean`` is the game value. A ``value_fn`` with a ``many(masks)`` method evaluates several
    coalitions that differ inside one group at once (the supernet game reuses their common prefix).
    """

    def __init__(self, value_fn: ValueFn):
        self._value_fn = value_fn
        self._cache: dict[bytes, np.ndarray] = {}

    @property
    def n_evaluations(self) -> int:
        return len(self._cache)

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        return self.many([mask])[0]

    def mean(self, mask: np.ndarray) -> float:
        return float(self(mask).mean())

    def many(self, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The per-sample values of ``masks``; only the coalitions not seen before are evaluated."""
        new = list({mask.tobytes(): mask for mask in masks if mask.tobytes() not in self._cache}.values())
        if new:
            batch = getattr(self._value_fn, "many", None)
            values = batch([m.copy() for m in new]) if batch else [self._value_fn(m.copy()) for m in new]
            for mask, value in zip(new, values):
                self._cache[mask.tobytes()] = _checked(value, mask)
        return [self._cache[mask.tobytes()] for mask in masks]


class MemoSampler:
    """What every sampler starts from: one memoised game (a fresh one per chunk), v(N) and v(∅) up front."""

    def __init__(self, value_fn: ValueFn, n_players: int):
        self.game = MemoGame(value_fn)
        self.n_players = n_players
        self.v_full = self.game.mean(np.ones(n_players, dtype=bool))
        self.v_empty = self.game.mean(np.zeros(n_players, dtype=bool))

    @property
    def n_evaluations(self) -> int:
        return self.game.n_evaluations


def game_value(value_fn: ValueFn, mask: np.ndarray) -> float:
    """``value_fn(mask)`` as a float (the mean of per-sample values); NaN or infinity is an error."""
    return float(_checked(value_fn(mask), mask).mean())


def _checked(value, mask: np.ndarray) -> np.ndarray:
    """The value as a read-only float64 vector; a NaN or infinite entry is an error naming the coalition."""
    array = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise ValueError(f"value_fn returned {bad} for coalition {np.flatnonzero(mask).tolist()}; "
                         "a game value must be finite")
    array.setflags(write=False)
    return array
