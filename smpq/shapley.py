"""Shapley values of a cooperative game given as a value function over boolean player masks (SPEC §3.3).

Model-free: ``value_fn(mask) -> float`` is any game; the SMPQ stage wraps the supernet in one.

- ``exact_shapley``: enumeration of all 2^n coalitions (the checking reference; n ≤ 20).
- ``shapley_values``: Monte Carlo permutation sampling (Castro, Gómez, Tejada 2009, "Polynomial calculation
  of the Shapley value based on sampling"), walking each permutation from the full coalition down
  (``direction="remove"``, as Shapley-NAS, Xiao et al. CVPR 2022) or from the empty coalition up
  (``"add"``); optional antithetic pairs (π, reversed π) for variance reduction (Mitchell, Cooper, Frank,
  Holmes 2022, "Sampling permutations for Shapley value estimation", JMLR) and Shapley-NAS truncation.

Fan-out: permutation ``k`` depends only on ``(seed, k)``, so ``chunk_indices`` cuts a run into index ranges,
``sample_permutations`` computes one anywhere (thread, process, machine) and ``combine`` merges them and
applies the stopping rule. Values, standard errors, sample counts and trace never depend on the chunking
(``shapley_values(..., chunks=k)`` runs the same chunks in-process); only the evaluation counts do, as each
chunk memoises coalitions in its own cache (a coalition met in two chunks is evaluated twice).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

logger = logging.getLogger(__name__)

ValueFn = Callable[[np.ndarray], float]
Progress = Callable[[int, int], None]

MAX_EXACT_PLAYERS = 20
DIRECTIONS = ("remove", "add")


@dataclass(frozen=True, eq=False)
class ShapleyResult:
    """Estimated Shapley values and what they cost.

    ``stderr`` is the standard error of ``values`` over independent sampling units (one permutation, or
    one antithetic pair); NaN when fewer than two units exist. ``trace[k]`` is the running estimate after
    permutation ``k`` and ``trace_evaluations[k]`` the distinct value-function calls spent by then
    (including v(N) and v(∅)).
    """

    values: np.ndarray
    stderr: np.ndarray
    n_samples: np.ndarray
    n_evaluations: int
    n_permutations: int
    trace: np.ndarray
    trace_evaluations: np.ndarray
    v_full: float
    v_empty: float

    def to_dict(self) -> dict:
        """JSON-ready plain lists and numbers (NaN standard errors become None)."""
        plain = {f.name: getattr(self, f.name) for f in fields(self)}
        plain = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in plain.items()}
        return plain | {"stderr": [None if math.isnan(s) else s for s in plain["stderr"]]}


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


def exact_shapley(value_fn: ValueFn, n_players: int) -> np.ndarray:
    """Exact Shapley values by evaluating all 2^n coalitions once each.

    φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (v(S ∪ {i}) − v(S)); the reference the estimator is checked on.
    """
    _check_int("n_players", n_players, minimum=1)
    if n_players > MAX_EXACT_PLAYERS:
        raise ValueError(f"exact_shapley enumerates 2^n coalitions and refuses n_players > {MAX_EXACT_PLAYERS} "
                         f"(got {n_players}); use shapley_values (Monte Carlo permutation sampling) instead")
    players = np.arange(n_players)
    codes = np.arange(1 << n_players)
    values = np.array([_call(value_fn, ((code >> players) & 1).astype(bool)) for code in codes])
    sizes = np.array([bin(code).count("1") for code in codes])
    weights = np.array([1.0 / (n_players * math.comb(n_players - 1, s)) for s in range(n_players)])
    phi = np.empty(n_players)
    for player in players:
        without = codes[((codes >> player) & 1) == 0]
        phi[player] = np.sum(weights[sizes[without]] * (values[without | (1 << player)] - values[without]))
    return phi


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
            self._cache[key] = _call(self._value_fn, mask.copy())
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
    _validate(n_players, 1, direction, truncation, None, 1, seed)
    indices = np.array(list(indices), dtype=np.int64)
    if indices.size == 0:
        raise ValueError("sample_permutations needs at least one permutation index")
    rows = list(_walk_chunks(value_fn, n_players, [indices.tolist()], seed, antithetic, direction, truncation))
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


def estimate(samples: PermutationSamples, *, antithetic: bool) -> ShapleyResult:
    """Shapley estimate from sampled marginals.

    The mean is over permutations. The standard error is over independent units: with ``antithetic`` a
    pair (π, reversed π) is averaged first and the stderr is taken over pair means, because the two
    halves of a pair are negatively correlated and treating them as independent would misstate the error.
    """
    count = samples.indices.size
    if count == 0:
        raise ValueError("estimate needs at least one sampled permutation")
    units = samples.indices // 2 if antithetic else samples.indices
    unit_means = np.array([samples.marginals[units == u].mean(axis=0) for u in np.unique(units)])
    trace = np.cumsum(samples.marginals, axis=0) / np.arange(1, count + 1)[:, None]
    n_players = samples.marginals.shape[1]
    return ShapleyResult(
        values=_frozen(samples.marginals.mean(axis=0)), stderr=_frozen(_stderr(unit_means)),
        n_samples=_frozen(np.full(n_players, count, dtype=np.int64)),
        n_evaluations=int(samples.base_evaluations + samples.evaluations.sum()), n_permutations=count,
        trace=_frozen(trace), trace_evaluations=_frozen(samples.base_evaluations + np.cumsum(samples.evaluations)),
        v_full=samples.v_full, v_empty=samples.v_empty)


def chunk_indices(n_permutations: int, chunks: int, *, antithetic: bool) -> list[range]:
    """Indices ``0..n−1`` cut into at most ``chunks`` contiguous near-equal ranges; an antithetic pair (2j, 2j+1)
    always stays in one range (fewer ranges when there are fewer permutations or pairs than ``chunks``)."""
    _check_int("n_permutations", n_permutations, minimum=1)
    _check_int("chunks", chunks, minimum=1)
    if antithetic and n_permutations % 2:
        raise ValueError(f"max_permutations must be even with antithetic=True (pairs of π and reversed π), "
                         f"got {n_permutations}")
    unit = 2 if antithetic else 1
    count = min(chunks, n_permutations // unit)
    base, extra = divmod(n_permutations // unit, count)
    bounds = np.cumsum([0] + [(base + (c < extra)) * unit for c in range(count)])
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def combine(blocks: Sequence[PermutationSamples], *, antithetic: bool, tolerance: float | None = None,
            min_permutations: int = 2) -> ShapleyResult:
    """The estimate of a fanned-out run from its chunks (together exactly permutations ``0..n−1``).

    With ``tolerance`` the merged permutations are cut at the first prefix meeting the stopping rule, exactly
    where ``shapley_values`` stops. Evaluations counted: those of the kept permutations, plus v(N) and v(∅) per
    chunk that contributed one — as in the in-process run with the same chunks, which never computes the rest.
    """
    merged = merge(blocks)
    count = merged.indices.size
    if not np.array_equal(merged.indices, np.arange(count)):
        raise ValueError("combine needs the permutations 0..n-1 of one run without gaps; "
                         "build the chunks with chunk_indices")
    stop = count if tolerance is None else next(
        (c for c in range(1, count + 1) if _converged(merged.marginals[:c], antithetic, tolerance, min_permutations)),
        count)
    base = sum(b.base_evaluations for b in blocks if b.indices.size and int(b.indices.min()) < stop)
    kept = PermutationSamples(merged.indices[:stop], merged.marginals[:stop], merged.evaluations[:stop],
                              merged.v_full, merged.v_empty, base)
    return _logged(estimate(kept, antithetic=antithetic))


def shapley_values(value_fn: ValueFn, n_players: int, *, seed: int, max_permutations: int,
                   tolerance: float | None = None, antithetic: bool = True, truncation: float | None = None,
                   direction: str = "remove", min_permutations: int = 2, chunks: int = 1,
                   progress: Progress | None = None) -> ShapleyResult:
    """Monte Carlo Shapley values by permutation sampling (Castro et al. 2009), memoised within each chunk.

    Stops after ``max_permutations``, or earlier once at least ``min_permutations`` are done and the largest
    standard error over players is below ``tolerance`` (checked only at complete antithetic pairs, so
    ``max_permutations`` must then be even). ``chunks`` walks the ranges of ``chunk_indices`` with a fresh memo
    each, so it equals the fanned-out run (``sample_permutations`` per chunk, then ``combine``) in everything;
    only evaluation counts depend on ``chunks``. ``progress(done, max_permutations)`` follows every permutation.
    """
    _validate(n_players, max_permutations, direction, truncation, tolerance, min_permutations, seed)
    ranges = chunk_indices(max_permutations, chunks, antithetic=antithetic)
    rows: list[np.ndarray] = []
    evaluations: list[int] = []
    for chunk, walker, marginals, new in _walk_chunks(value_fn, n_players, ranges, seed, antithetic, direction,
                                                      truncation):
        rows.append(marginals)
        evaluations.append(new)
        if progress is not None:
            progress(len(rows), max_permutations)
        if tolerance is not None and _converged(np.array(rows), antithetic, tolerance, min_permutations):
            break
    samples = PermutationSamples(np.arange(len(rows)), np.array(rows), np.array(evaluations, dtype=np.int64),
                                 walker.v_full, walker.v_empty, 2 * (chunk + 1))
    return _logged(estimate(samples, antithetic=antithetic))


def _walk_chunks(value_fn: ValueFn, n_players: int, ranges: Sequence[Sequence[int]], seed: int, antithetic: bool,
                 direction: str, truncation: float | None):
    """``(chunk, walker, marginals, new evaluations)`` per permutation, one fresh memoised walker per range."""
    for chunk, indices in enumerate(ranges):
        walker = _Walker(value_fn, n_players, direction, truncation)
        for index in indices:
            before = walker.game.n_evaluations
            marginals = walker.walk(permutation(seed, int(index), n_players, antithetic=antithetic))
            yield chunk, walker, marginals, walker.game.n_evaluations - before


def _logged(result: ShapleyResult) -> ShapleyResult:
    logger.info("Shapley: %d players, %d permutations, %d evaluations, max stderr %.4g", result.values.size,
                result.n_permutations, result.n_evaluations, float(np.max(result.stderr)))
    return result


def _converged(rows: np.ndarray, antithetic: bool, tolerance: float, min_permutations: int) -> bool:
    """Tolerance rule: enough permutations, a complete pair, ≥ 2 units, and max stderr < tolerance."""
    count = rows.shape[0]
    if count < min_permutations or (antithetic and count % 2):
        return False
    units = rows.reshape(count // 2, 2, -1).mean(axis=1) if antithetic else rows
    return units.shape[0] >= 2 and float(np.max(_stderr(units))) < tolerance


def _stderr(unit_means: np.ndarray) -> np.ndarray:
    count = unit_means.shape[0]
    if count < 2:
        return np.full(unit_means.shape[1], np.nan)
    return unit_means.std(axis=0, ddof=1) / math.sqrt(count)


def _call(value_fn: ValueFn, mask: np.ndarray) -> float:
    value = float(value_fn(mask))
    if not math.isfinite(value):
        raise ValueError(f"value_fn returned {value} for coalition {np.flatnonzero(mask).tolist()}; "
                         "a game value must be finite")
    return value


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _validate(n_players: int, max_permutations: int, direction: str, truncation: float | None,
              tolerance: float | None, min_permutations: int, seed: int) -> None:
    _check_int("n_players", n_players, minimum=1)
    _check_int("max_permutations", max_permutations, minimum=1)
    _check_int("min_permutations", min_permutations, minimum=1)
    _check_int("seed", seed, minimum=0)
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
