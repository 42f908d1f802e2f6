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
applies the stopping rule (the sampling lives in ``smpq.permutation_sampling``; this module re-exports it). Values, standard errors, sample counts and trace never depend on the chunking
(``shapley_values(..., chunks=k)`` runs the same chunks in-process); only the evaluation counts do, as each
chunk memoises coalitions in its own cache (a coalition met in two chunks is evaluated twice).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from smpq.permutation_sampling import (
    DIRECTIONS,
    PermutationSamples,
    ValueFn,
    check_int,
    chunk_indices,
    game_value,
    merge,
    permutation,
    sample_permutations,
    validate_sampling,
    walk_chunks,
)

__all__ = ["DIRECTIONS", "MAX_EXACT_PLAYERS", "PermutationSamples", "ShapleyResult", "ValueFn", "chunk_indices",
           "combine", "estimate", "exact_shapley", "merge", "permutation", "sample_permutations", "shapley_values"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

MAX_EXACT_PLAYERS = 20


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


def exact_shapley(value_fn: ValueFn, n_players: int) -> np.ndarray:
    """Exact Shapley values by evaluating all 2^n coalitions once each.

    φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (v(S ∪ {i}) − v(S)); the reference the estimator is checked on.
    """
    check_int("n_players", n_players, minimum=1)
    if n_players > MAX_EXACT_PLAYERS:
        raise ValueError(f"exact_shapley enumerates 2^n coalitions and refuses n_players > {MAX_EXACT_PLAYERS} "
                         f"(got {n_players}); use shapley_values (Monte Carlo permutation sampling) instead")
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
    validate_sampling(n_players, max_permutations, direction, truncation, tolerance, min_permutations, seed)
    ranges = chunk_indices(max_permutations, chunks, antithetic=antithetic)
    rows: list[np.ndarray] = []
    evaluations: list[int] = []
    for chunk, walker, marginals, new in walk_chunks(value_fn, n_players, ranges, seed, antithetic, direction,
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


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
