"""Owen values over groups (exact inside each group), the within-group and exact estimators, batch errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from smpq.shapley.estimate import combine, sample_units, shapley_values
from smpq.shapley.exact import exact_owen, exact_shapley
from smpq.shapley.owen import GroupSampler, shapley_matrix

GROUPS = [[0, 1], [2, 3, 4], [5, 6]]


def random_game(n=7, seed=0):
    """Additive, pairwise and one three-way term: no estimator is exact on it by accident."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)

    def value(mask):
        m = mask.astype(float)
        return float(a @ m + m @ b @ m + 0.7 * m[0] * m[n // 2] * m[n - 1])
    return value


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_shapley_matrix_gives_the_exact_values(k):
    game = random_game(k, seed=k)
    values = np.array([game(np.array([(code >> i) & 1 for i in range(k)], dtype=bool)) for code in range(1 << k)])
    assert np.allclose(shapley_matrix(k) @ values, exact_shapley(game, k), atol=1e-12)


def test_owen_over_every_ordering_equals_the_enumerated_owen_value():
    game = random_game()
    sampler = GroupSampler(game, 7, GROUPS, seed=0, antithetic=False, estimator="owen")
    rows = [sampler.row(sampler.contexts(order))[:, 0] for order in itertools.permutations(range(3))]
    exact = exact_owen(game, 7, GROUPS)
    assert np.max(np.abs(np.mean(rows, axis=0) - exact)) < 1e-9
    assert exact.sum() == pytest.approx(game(np.ones(7, bool)) - game(np.zeros(7, bool)), abs=1e-9)  # efficiency


def test_owen_with_singleton_groups_is_the_shapley_value_and_with_one_group_too():
    game = random_game()
    assert np.allclose(exact_owen(game, 7, [[i] for i in range(7)]), exact_shapley(game, 7), atol=1e-12)
    assert np.allclose(exact_owen(game, 7, [list(range(7))]), exact_shapley(game, 7), atol=1e-12)


def test_owen_estimator_converges_to_the_owen_value_within_its_standard_errors():
    game = random_game(seed=3)
    exact = exact_owen(game, 7, GROUPS)
    result = shapley_values(game, 7, seed=1, max_permutations=60, estimator="owen", groups=GROUPS)
    assert np.all(np.abs(result.values - exact) <= 4 * result.stderr + 1e-12)
    assert np.all(np.isnan(result.batch_stderr))  # a scalar game has no batch


def test_owen_chunks_fanned_out_equal_the_in_process_run():
    game, method = random_game(seed=5), {"estimator": "owen", "groups": GROUPS, "antithetic": True}
    whole = shapley_values(game, 7, seed=2, max_permutations=8, chunks=3, **method)
    blocks = [sample_units(game, 7, idx, seed=2, **method) for idx in ([4, 5], [0, 1, 2, 3], [6, 7])]
    merged = combine(blocks, antithetic=True)
    assert np.array_equal(whole.values, merged.values) and np.array_equal(whole.stderr, merged.stderr)
    assert np.array_equal(whole.trace, merged.trace)


def test_within_group_uses_the_context_with_every_other_group_present():
    game = random_game(seed=4)
    result = shapley_values(game, 7, seed=0, max_permutations=8, estimator="within_group", groups=GROUPS)
    full = np.ones(7, dtype=bool)
    for group in GROUPS:
        def restricted(sub, group=group):
            mask = full.copy()
            mask[group] = sub
            return game(mask)
        assert np.allclose(result.values[group], exact_shapley(restricted, len(group)), atol=1e-12)
    # one unit: v(N), v(∅), and per group its 2^k − 1 coalitions other than N
    assert result.n_permutations == 1 and result.n_evaluations == sum(2 ** len(g) - 1 for g in GROUPS) + 2


def test_exact_estimator_is_the_enumerated_shapley_value():
    game = random_game(seed=6)
    result = shapley_values(game, 7, seed=0, max_permutations=2, estimator="exact")
    assert np.max(np.abs(result.values - exact_shapley(game, 7))) < 1e-9
    assert result.n_evaluations == 2 ** 7


def test_exact_estimator_refuses_large_games():
    with pytest.raises(ValueError, match="at most 16 players, this supernet has 17; use estimator: owen"):
        shapley_values(lambda m: 0.0, 17, seed=0, max_permutations=2, estimator="exact")


def additive_owen(seed: int, samples: int):
    """An additive per-sample game (φ_i on sample s is w[i, s]) and its ``owen`` estimate over 4 orderings."""
    weights = np.random.default_rng(seed).normal(size=(7, samples))
    game = lambda mask: weights[mask].sum(axis=0)  # noqa: E731
    return weights, shapley_values(game, 7, seed=0, max_permutations=4, estimator="owen", groups=GROUPS)


def test_batch_standard_error_is_over_the_per_sample_values():
    """Additive per-sample game: the batch stderr is std_s(w[i]) / √S."""
    weights, result = additive_owen(seed=0, samples=50)
    assert np.allclose(result.values, weights.mean(axis=1), atol=1e-12)
    assert np.allclose(result.batch_stderr, weights.std(axis=1, ddof=1) / np.sqrt(50), atol=1e-12)
    assert np.allclose(result.stderr, 0, atol=1e-12)  # additive: every ordering gives the same values


def test_owen_needs_groups():
    with pytest.raises(ValueError, match="estimator 'owen' needs groups"):
        shapley_values(lambda m: 0.0, 3, seed=0, max_permutations=2, estimator="owen")


def test_halves_are_estimates_from_disjoint_units_and_samples():
    weights, result = additive_owen(seed=1, samples=40)
    assert np.allclose(result.halves, [weights[:, 0::2].mean(axis=1), weights[:, 1::2].mean(axis=1)], atol=1e-12)
    # a scalar game: the first and the second half of the antithetic pairs
    method = {"estimator": "owen", "groups": GROUPS}
    scalar = shapley_values(random_game(), 7, seed=0, max_permutations=4, **method)
    rows = sample_units(random_game(), 7, range(4), seed=0, **method).rows
    assert np.allclose(scalar.halves, [rows[:2].mean(axis=0), rows[2:].mean(axis=0)], atol=1e-12)
