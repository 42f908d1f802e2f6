"""Shapley estimates from sampled units: means, standard errors, the stopping rule, and chunked runs.

A run is ``max_permutations`` seeded units of one estimator (SPEC §3.3): orderings of the groups (``owen``),
permutations of the players (``permutation``), or one deterministic unit (``within_group``, ``exact``). It is
cut into chunks; each chunk gets a fresh sampler (its own memo), so ``shapley_values(..., chunks=k)`` in one
process and the fanned-out run (``sample_units`` per chunk, then ``combine``) agree in everything but the
evaluation counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from smpq.config import DETERMINISTIC, ESTIMATORS
from smpq.shapley.exact import ExactSampler
from smpq.shapley.owen import Groups, GroupSampler
from smpq.shapley.permutation import PermutationSampler
from smpq.shapley.sampling import Samples, ValueFn, chunk_indices, merge

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, eq=False)
class ShapleyResult:
    """Estimated Shapley values and what they cost.

    ``stderr`` is the standard error of ``values`` over independent sampling units (one ordering, or one
    antithetic pair); NaN when fewer than two units exist. ``batch_stderr`` is the standard error over the
    samples of the game's batch (the values are means over it), NaN when the game gives one value only.
    ``halves`` are two independent half-size estimates (first/second half of the units, even/odd samples),
    NaN where neither can be split: their agreement measures the estimate's reliability at no extra cost.
    ``trace[k]`` is the running estimate after unit ``k`` and ``trace_evaluations[k]`` the distinct
    value-function calls spent by then (including v(N) and v(∅)).
    """

    values: np.ndarray
    stderr: np.ndarray
    batch_stderr: np.ndarray
    halves: np.ndarray  # [2, player]: estimates from disjoint halves of the units and of the batch (split-half)
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
        plain["halves"] = [[None if math.isnan(s) else s for s in half] for half in plain["halves"]]
        return plain | {key: [None if math.isnan(s) else s for s in plain[key]] for key in ("stderr", "batch_stderr")}


def run_units(max_permutations: int, estimator: str, antithetic: bool) -> tuple[int, bool]:
    """(units in the run, whether they come in antithetic pairs): one unit for a deterministic estimator."""
    return (1, False) if estimator in DETERMINISTIC else (max_permutations, antithetic)


def make_sampler(value_fn: ValueFn, n_players: int, *, seed: int, estimator: str = "permutation",
                 groups: Groups | None = None, antithetic: bool = True, direction: str = "remove",
                 truncation: float | None = None):
    """A fresh sampler (own memo) of ``estimator``; ``groups`` (player indices per union) for owen/within_group."""
    if estimator == "permutation":
        return PermutationSampler(value_fn, n_players, seed=seed, antithetic=antithetic, direction=direction,
                                  truncation=truncation)
    if estimator == "exact":
        return ExactSampler(value_fn, n_players)
    if estimator not in ESTIMATORS or groups is None:
        raise ValueError(f"estimator {estimator!r} needs groups; estimators: {', '.join(ESTIMATORS)}")
    return GroupSampler(value_fn, n_players, groups, seed=seed, antithetic=antithetic, estimator=estimator)


def sample_units(value_fn: ValueFn, n_players: int, indices: Iterable[int], *, seed: int, **method) -> Samples:
    """The rows of units ``indices`` of a run (one chunk of a fan-out), memoised within the chunk;
    ``method``: the keyword arguments of ``make_sampler``."""
    indices = np.array(list(indices), dtype=np.int64)
    if indices.size == 0:
        raise ValueError("sample_units needs at least one unit index")
    sampler = make_sampler(value_fn, n_players, seed=seed, **method)
    rows, evaluations = [], []
    for index in indices:
        before = sampler.n_evaluations
        rows.append(sampler.unit(int(index)))
        evaluations.append(sampler.n_evaluations - before)
    return _samples(indices, rows, evaluations, sampler, 2)


def _samples(indices, rows: list[np.ndarray], evaluations: list[int], sampler, base: int) -> Samples:
    """Scalar rows (means over the batch) plus the [unit, player, sample] rows when the sampler gives them."""
    per_sample = np.stack(rows) if rows[0].ndim == 2 else None
    means = per_sample.mean(axis=2) if per_sample is not None else np.array(rows)
    return Samples(np.asarray(indices, dtype=np.int64), means, np.array(evaluations, dtype=np.int64), sampler.v_full,
                   sampler.v_empty, base, per_sample)


def estimate(samples: Samples, *, antithetic: bool) -> ShapleyResult:
    """Shapley estimate from sampled rows.

    The mean is over units. The standard error is over independent units: with ``antithetic`` a pair
    (π, reversed π) is averaged first and the stderr is taken over pair means, because the two halves of a
    pair are negatively correlated and treating them as independent would misstate the error.
    """
    count = samples.indices.size
    if count == 0:
        raise ValueError("estimate needs at least one sampled unit")
    units = samples.indices // 2 if antithetic else samples.indices
    unit_means = np.array([samples.rows[units == u].mean(axis=0) for u in np.unique(units)])
    trace = np.cumsum(samples.rows, axis=0) / np.arange(1, count + 1)[:, None]
    n_players = samples.rows.shape[1]
    batch = np.full(n_players, np.nan)
    if samples.per_sample is not None and samples.per_sample.shape[2] > 1:
        batch = _stderr(samples.per_sample.mean(axis=0).T)  # per-sample values averaged over the units
    return ShapleyResult(
        values=_frozen(samples.rows.mean(axis=0)), stderr=_frozen(_stderr(unit_means)), batch_stderr=_frozen(batch),
        halves=_frozen(_halves(samples, units)),
        n_samples=_frozen(np.full(n_players, count, dtype=np.int64)),
        n_evaluations=int(samples.base_evaluations + samples.evaluations.sum()), n_permutations=count,
        trace=_frozen(trace), trace_evaluations=_frozen(samples.base_evaluations + np.cumsum(samples.evaluations)),
        v_full=samples.v_full, v_empty=samples.v_empty)


def combine(blocks: Sequence[Samples], *, antithetic: bool, tolerance: float | None = None,
            min_permutations: int = 2) -> ShapleyResult:
    """The estimate of a fanned-out run from its chunks (together exactly units ``0..n−1``).

    With ``tolerance`` the merged units are cut at the first prefix meeting the stopping rule, exactly
    where ``shapley_values`` stops. Evaluations counted: those of the kept units, plus v(N) and v(∅) per
    chunk that contributed one — as in the in-process run with the same chunks, which never computes the rest.
    """
    merged = merge(blocks)
    count = merged.indices.size
    if not np.array_equal(merged.indices, np.arange(count)):
        raise ValueError("combine needs the units 0..n-1 of one run without gaps; build the chunks with chunk_indices")
    stop = count if tolerance is None else next(
        (c for c in range(1, count + 1) if _converged(merged.rows[:c], antithetic, tolerance, min_permutations)),
        count)
    base = sum(b.base_evaluations for b in blocks if b.indices.size and int(b.indices.min()) < stop)
    per_sample = None if merged.per_sample is None else merged.per_sample[:stop]
    kept = Samples(merged.indices[:stop], merged.rows[:stop], merged.evaluations[:stop], merged.v_full,
                   merged.v_empty, base, per_sample)
    return _logged(estimate(kept, antithetic=antithetic))


def shapley_values(value_fn: ValueFn, n_players: int, *, seed: int, max_permutations: int,
                   tolerance: float | None = None, estimator: str = "permutation", groups: Groups | None = None,
                   antithetic: bool = True, truncation: float | None = None, direction: str = "remove",
                   min_permutations: int = 2, chunks: int = 1, progress: Progress | None = None) -> ShapleyResult:
    """Shapley (or Owen) values of ``estimator``, memoised within each chunk.

    Stops after ``max_permutations`` units (one for a deterministic estimator), or earlier once at least
    ``min_permutations`` are done and the largest standard error is below ``tolerance`` (checked only at
    complete antithetic pairs). ``progress(done, total)`` follows every unit.
    """
    total, antithetic = run_units(max_permutations, estimator, antithetic)
    method = {"estimator": estimator, "groups": groups, "antithetic": antithetic, "direction": direction,
              "truncation": truncation}
    rows: list[np.ndarray] = []
    evaluations: list[int] = []
    chunks_used = 0
    for indices in chunk_indices(total, chunks, antithetic=antithetic):
        sampler = make_sampler(value_fn, n_players, seed=seed, **method)
        chunks_used += 1
        for index in indices:
            before = sampler.n_evaluations
            rows.append(sampler.unit(index))
            evaluations.append(sampler.n_evaluations - before)
            if progress is not None:
                progress(len(rows), total)
            if tolerance is not None and _converged(_samples(range(len(rows)), rows, evaluations, sampler, 0).rows,
                                                    antithetic, tolerance, min_permutations):
                break
        else:
            continue
        break
    samples = _samples(np.arange(len(rows)), rows, evaluations, sampler, 2 * chunks_used)
    return _logged(estimate(samples, antithetic=antithetic))


def _halves(samples: Samples, units: np.ndarray) -> np.ndarray:
    """Estimates from disjoint halves: units (pairs) split in two in order, samples split even/odd."""
    unique = np.unique(units)
    first = np.isin(units, unique[:len(unique) // 2]) if len(unique) > 1 else np.ones(len(units), dtype=bool)
    second = ~first if len(unique) > 1 else first
    if samples.per_sample is not None and samples.per_sample.shape[2] > 1:
        return np.stack([samples.per_sample[first][:, :, 0::2].mean(axis=(0, 2)),
                         samples.per_sample[second][:, :, 1::2].mean(axis=(0, 2))])
    if len(unique) > 1:
        return np.stack([samples.rows[first].mean(axis=0), samples.rows[second].mean(axis=0)])
    return np.full((2, samples.rows.shape[1]), np.nan)


def _logged(result: ShapleyResult) -> ShapleyResult:
    logger.info("Shapley: %d players, %d units, %d evaluations, max stderr %.4g", result.values.size,
                result.n_permutations, result.n_evaluations, float(np.max(result.stderr)))
    return result


def _converged(rows: np.ndarray, antithetic: bool, tolerance: float, min_permutations: int) -> bool:
    """Tolerance rule: enough units, a complete pair, ≥ 2 independent units, and max stderr < tolerance."""
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
