"""Shapley values: exact enumeration on games with hand-known values, and the Monte Carlo estimator."""

from __future__ import annotations

import numpy as np
import pytest

from smpq.shapley.estimate import combine, estimate, sample_units, shapley_values
from smpq.shapley.exact import exact_shapley
from smpq.shapley.sampling import chunk_indices, merge, ordering


def additive(weights):
    weights = np.asarray(weights, dtype=float)
    return lambda mask: float(weights[mask].sum())


def unanimity(carrier):
    carrier = list(carrier)
    return lambda mask: float(mask[carrier].all())


def glove(mask):
    """Player 0 owns a left glove, players 1 and 2 a right glove each; a pair is worth 1."""
    return float(min(mask[0], mask[1:].sum()))


def weighted_majority(mask):
    """Weights [3, 2, 1, 1], quota 4: a coalition wins (value 1) when its weight reaches 4."""
    return float(np.dot([3, 2, 1, 1], mask) >= 4)


def interaction_game(n=8, seed=0, third_order=0.0):
    """Additive plus pairwise interactions (plus an optional 3-way term on players 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = np.triu(rng.normal(size=(n, n)), 1)

    def value(mask):
        m = mask.astype(float)
        return float(a @ m + m @ b @ m + third_order * mask[0] * mask[1] * mask[2])

    return value


def test_additive_game_gives_the_weights():
    weights = [0.5, -1.0, 2.0, 0.0, 3.25]
    assert np.allclose(exact_shapley(additive(weights), 5), weights)


def test_unanimity_game_splits_equally_on_the_carrier():
    phi = exact_shapley(unanimity([1, 3, 4]), 6)
    assert np.allclose(phi, [0, 1 / 3, 0, 1 / 3, 1 / 3, 0])


def test_glove_game():
    assert np.allclose(exact_shapley(glove, 3), [2 / 3, 1 / 6, 1 / 6])


def test_weighted_majority_game():
    # The weight-3 player is pivotal when the players before it weigh 1..3: {C}, {D}, {B} (size 1, weight
    # 1!2!/4! = 1/12 each) and {C,D}, {B,C}, {B,D} (size 2, 2!1!/4! = 1/12 each): φ = 6/12 = 1/2.
    # The weight-2 player is pivotal after {A} (weight 3) or {C,D} (weight 2): φ = 2/12 = 1/6.
    # A weight-1 player is pivotal after exactly weight 3: {A} or {B, other}: φ = 1/6. Sum = 1 = v(N).
    assert np.allclose(exact_shapley(weighted_majority, 4), [1 / 2, 1 / 6, 1 / 6, 1 / 6])


def test_efficiency_of_exact_values():
    game = interaction_game(n=7, seed=3, third_order=1.5)
    phi = exact_shapley(game, 7)
    assert phi.sum() == pytest.approx(game(np.ones(7, bool)) - game(np.zeros(7, bool)))


def test_exact_refuses_large_games():
    with pytest.raises(ValueError, match=r"needs 1 <= n_players <= 20 \(got 21\); use Monte Carlo"):
        exact_shapley(additive(np.ones(21)), 21)


def mean_error(game, n, exact, seeds, **kwargs):
    return np.mean([np.abs(shapley_values(game, n, seed=s, **kwargs).values - exact).mean() for s in seeds])


@pytest.mark.parametrize("direction", ["remove", "add"])
def test_estimate_converges_to_exact(direction):
    game = interaction_game(n=6, seed=1, third_order=2.0)
    exact = exact_shapley(game, 6)
    few, mid, many = (mean_error(game, 6, exact, range(5), max_permutations=m, antithetic=False, direction=direction)
                      for m in (4, 20, 200))
    assert few > mid > many  # the error falls roughly as 1/sqrt(permutations)
    assert many < 0.2 * few
    assert many < 0.05 * np.abs(exact).mean()


def test_antithetic_pairs_are_exact_for_pairwise_games():
    """For v = additive + pairwise, a permutation and its reverse average to the exact value."""
    game = interaction_game(n=8, seed=2)
    result = shapley_values(game, 8, seed=5, max_permutations=4)
    assert np.allclose(result.values, exact_shapley(game, 8))
    assert np.all(result.stderr < 1e-9)


def test_antithetic_beats_plain_sampling_at_equal_evaluations():
    game = interaction_game(n=8, seed=4, third_order=3.0)
    exact = exact_shapley(game, 8)
    plain, paired, evals_plain, evals_paired = [], [], [], []
    for seed in range(8):
        for antithetic, errors, evals in ((False, plain, evals_plain), (True, paired, evals_paired)):
            result = shapley_values(game, 8, seed=seed, max_permutations=20, antithetic=antithetic)
            errors.append(np.abs(result.values - exact).mean())
            evals.append(result.n_evaluations)
    assert np.mean(evals_paired) <= 1.05 * np.mean(evals_plain)
    assert np.mean(paired) < 0.7 * np.mean(plain)


def test_antithetic_stderr_is_over_pair_means():
    game = interaction_game(n=5, seed=6, third_order=2.0)
    result = shapley_values(game, 5, seed=1, max_permutations=10)
    pairs = np.array([
        np.mean([sample_units(game, 5, [k], seed=1).rows[0] for k in (2 * j, 2 * j + 1)], axis=0)
        for j in range(5)])
    assert np.allclose(result.stderr, pairs.std(axis=0, ddof=1) / np.sqrt(5))
    assert np.allclose(result.values, pairs.mean(axis=0))


def test_stderr_covers_the_error():
    game = interaction_game(n=6, seed=7, third_order=2.0)
    exact = exact_shapley(game, 6)
    results = [shapley_values(game, 6, seed=s, max_permutations=40) for s in range(20)]
    # players 3-5 take no part in the 3-way term: their pairs are exact (stderr ~ 1e-16, rounding only)
    z = np.array([np.abs(r.values - exact)[:3] / r.stderr[:3] for r in results])
    assert np.all(np.array([r.stderr[3:] for r in results]) < 1e-12)
    assert np.mean(z < 2.0) > 0.85  # ≈ 95 % for an honest standard error


def test_truncation_zeroes_players_after_the_drop_and_saves_evaluations():
    weights = np.array([4.0, 1.0, 1.0, 3.0, 1.0, 2.0])
    game = additive(weights)
    tau, seed = 0.5, 3
    result = shapley_values(game, 6, seed=seed, max_permutations=6, truncation=tau, antithetic=False)
    full = shapley_values(game, 6, seed=seed, max_permutations=6, antithetic=False)
    expected = []
    for k in range(6):
        current, marginals = weights.sum(), np.zeros(6)
        for player in ordering(seed, k, 6, antithetic=False):
            if current < tau * weights.sum():
                break
            marginals[player] = weights[player]
            current -= weights[player]
        expected.append(marginals)
    assert np.allclose(result.values, np.mean(expected, axis=0))
    assert np.any(np.array(expected) == 0)
    assert result.values.sum() < weights.sum()  # biased: efficiency is lost
    assert result.n_evaluations < full.n_evaluations
    assert np.allclose(full.values, weights)


def test_tolerance_stops_early_with_small_stderr():
    game = interaction_game(n=6, seed=8, third_order=1.0)
    result = shapley_values(game, 6, seed=0, max_permutations=2000, tolerance=0.05)
    assert result.n_permutations < 2000
    assert result.n_permutations % 2 == 0
    assert np.max(result.stderr) < 0.05
    assert result.trace.shape == (result.n_permutations, 6)
    assert result.trace_evaluations[-1] == result.n_evaluations
    assert np.allclose(result.trace[-1], result.values)


def test_same_seed_same_result_and_different_seed_differs():
    game = interaction_game(n=6, seed=9, third_order=2.0)
    a = shapley_values(game, 6, seed=11, max_permutations=6)
    b = shapley_values(game, 6, seed=11, max_permutations=6)
    c = shapley_values(game, 6, seed=12, max_permutations=6)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.trace, b.trace)
    assert a.n_evaluations == b.n_evaluations
    assert not np.array_equal(a.values, c.values)


def test_chunks_merge_to_the_sequential_result():
    game = interaction_game(n=6, seed=10, third_order=2.0)
    whole = shapley_values(game, 6, seed=4, max_permutations=12)
    chunks = [sample_units(game, 6, idx, seed=4) for idx in ([6, 7, 8, 9, 10, 11], [0, 1, 2], [3, 4, 5])]
    merged = estimate(merge(chunks), antithetic=True)
    assert np.allclose(merged.values, whole.values) and np.allclose(merged.stderr, whole.stderr)
    assert np.allclose(merged.trace, whole.trace)
    with pytest.raises(ValueError, match="share unit indices"):
        merge([chunks[1], chunks[1]])


def assert_same_estimate(a, b):
    """Values, standard errors, sample counts and trace exactly equal (bit for bit, NaN == NaN)."""
    for name in ("values", "stderr", "n_samples", "trace"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert a.n_permutations == b.n_permutations and a.v_full == b.v_full and a.v_empty == b.v_empty


CHUNKED_CASES = {
    "antithetic": dict(max_permutations=40, antithetic=True),
    "plain": dict(max_permutations=41, antithetic=False),
    "truncation": dict(max_permutations=40, antithetic=True, truncation=0.5),
    "add": dict(max_permutations=40, antithetic=False, direction="add"),
    "tolerance": dict(max_permutations=100, antithetic=True, tolerance=0.1),  # stops at 48 (chunk 4 of 7)
    "tolerance-plain": dict(max_permutations=100, antithetic=False, tolerance=0.1),  # stops at 74
}


def positive_game():
    """Additive plus a sine of a random weighted sum (interactions of every order); v(N) ≈ 7 > 0."""
    c = np.random.default_rng(5).normal(size=7)
    return lambda mask: float(mask.sum() + 1.5 * np.sin(mask @ c) + 1.5)


@pytest.mark.parametrize("case", CHUNKED_CASES)
@pytest.mark.parametrize("chunks", [1, 2, 7])
def test_chunked_run_equals_the_sequential_run(case, chunks):
    game, kwargs = positive_game(), CHUNKED_CASES[case]
    whole = shapley_values(game, 7, seed=3, **kwargs)
    chunked = shapley_values(game, 7, seed=3, chunks=chunks, **kwargs)
    assert_same_estimate(chunked, whole)
    if "tolerance" in kwargs:  # the rule stops the run part-way, inside a chunk for 2 and 7 chunks
        assert 40 < whole.n_permutations < kwargs["max_permutations"]
    if chunks == 1:
        assert chunked.n_evaluations == whole.n_evaluations
        assert np.array_equal(chunked.trace_evaluations, whole.trace_evaluations)


@pytest.mark.parametrize("case", CHUNKED_CASES)
@pytest.mark.parametrize("chunks", [1, 2, 7])
def test_fanned_out_chunks_combine_to_the_in_process_chunked_run(case, chunks):
    """Every chunk computed on its own (as a worker would), in any order, then combined: the same result as
    the in-process chunked run, evaluation counts included (the tolerance cut drops whole unused chunks)."""
    game, kwargs = positive_game(), dict(CHUNKED_CASES[case])
    tolerance, max_permutations = kwargs.pop("tolerance", None), kwargs.pop("max_permutations")
    ranges = chunk_indices(max_permutations, chunks, antithetic=kwargs["antithetic"])
    blocks = [sample_units(game, 7, r, seed=3, **kwargs) for r in reversed(ranges)]
    fanned = combine(blocks, antithetic=kwargs["antithetic"], tolerance=tolerance)
    local = shapley_values(game, 7, seed=3, max_permutations=max_permutations, tolerance=tolerance, chunks=chunks,
                           **kwargs)
    assert_same_estimate(fanned, local)
    assert fanned.n_evaluations == local.n_evaluations
    assert np.array_equal(fanned.trace_evaluations, local.trace_evaluations)


def test_more_chunks_cost_more_evaluations_of_the_same_estimate():
    game = positive_game()
    one, seven = (shapley_values(game, 7, seed=0, max_permutations=40, chunks=c) for c in (1, 7))
    assert_same_estimate(one, seven)
    assert seven.n_evaluations > one.n_evaluations  # each chunk memoises on its own (v(N), v(∅) at least)


@pytest.mark.parametrize("n, chunks, antithetic, sizes", [
    (12, 1, True, [12]),
    (12, 4, True, [4, 4, 2, 2]),
    (10, 4, True, [4, 2, 2, 2]),
    (4, 7, True, [2, 2]),
    (7, 3, False, [3, 2, 2]),
    (2, 5, False, [1, 1]),
])
def test_chunk_indices_are_contiguous_and_keep_pairs(n, chunks, antithetic, sizes):
    ranges = chunk_indices(n, chunks, antithetic=antithetic)
    assert [len(r) for r in ranges] == sizes
    assert [i for r in ranges for i in r] == list(range(n))
    if antithetic:
        assert all(r.start % 2 == 0 and len(r) % 2 == 0 for r in ranges)


def test_chunk_indices_and_combine_reject_bad_input():
    with pytest.raises(ValueError, match="even"):
        chunk_indices(5, 2, antithetic=True)
    with pytest.raises(ValueError, match="chunks"):
        chunk_indices(4, 0, antithetic=False)
    game = interaction_game(n=5, seed=1)
    with pytest.raises(ValueError, match="without gaps"):
        combine([sample_units(game, 5, [0, 1], seed=0), sample_units(game, 5, [4, 5], seed=0)],
                antithetic=True)
    with pytest.raises(ValueError, match="at least one unit index"):
        sample_units(game, 5, [], seed=0)


def test_memoisation_counts_distinct_calls():
    calls = []

    def counting(mask):
        calls.append(mask.tobytes())
        return float(mask.sum() ** 2)

    result = shapley_values(counting, 3, seed=0, max_permutations=40)
    assert len(calls) == len(set(calls)) == result.n_evaluations
    assert result.n_evaluations <= 2 ** 3
    assert result.v_full == 9.0 and result.v_empty == 0.0


def test_progress_is_reported_per_permutation():
    seen = []
    shapley_values(additive([1, 2, 3]), 3, seed=0, max_permutations=4, progress=lambda d, m: seen.append((d, m)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_chunking_needs_an_even_count_with_antithetic_pairs():
    """max_permutations itself is validated once, when params.yaml is loaded (tests/test_config.py)."""
    with pytest.raises(ValueError, match="even when antithetic"):
        shapley_values(additive([1, 2, 3]), 3, seed=0, max_permutations=3)


def test_non_finite_values_and_nonpositive_truncation_base_fail_fast():
    with pytest.raises(ValueError, match="must be finite"):
        shapley_values(lambda m: float("nan") if m.sum() == 1 else 1.0, 3, seed=0, max_permutations=2)
    with pytest.raises(ValueError, match="positive v"):
        shapley_values(lambda m: -1.0, 3, seed=0, max_permutations=2, truncation=0.5)
