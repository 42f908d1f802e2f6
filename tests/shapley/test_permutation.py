"""Permutation sampling: seeded permutations, per-permutation marginals, and the argument checks.

The estimator built on it (chunking, merging, stopping) is tested through ``smpq.shapley`` in test_shapley.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from smpq.shapley.estimate import sample_units
from smpq.shapley.sampling import game_value
from smpq.shapley.sampling import ordering as permutation


def test_permutation_depends_only_on_seed_and_index():
    first = [permutation(7, k, 9, antithetic=False) for k in range(4)]
    again = [permutation(7, k, 9, antithetic=False) for k in reversed(range(4))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(sorted(p.tolist()) == list(range(9)) for p in first)
    assert not np.array_equal(first[0], permutation(8, 0, 9, antithetic=False))


def test_antithetic_permutations_come_in_reversed_pairs():
    for j in range(3):
        even, odd = (permutation(2, 2 * j + r, 6, antithetic=True) for r in (0, 1))
        assert np.array_equal(odd, even[::-1])
    assert not np.array_equal(permutation(2, 0, 6, antithetic=True), permutation(2, 2, 6, antithetic=True))


@pytest.mark.parametrize("direction", ["remove", "add"])
def test_each_permutations_marginals_sum_to_the_grand_value(direction):
    """Without truncation a walk telescopes: Σ_i marginal_i = v(N) − v(∅) for every permutation."""
    c = np.random.default_rng(3).normal(size=5)
    game = lambda mask: float(np.sin(mask @ c) + mask.sum())  # noqa: E731
    samples = sample_units(game, 5, range(6), seed=1, antithetic=False, direction=direction)
    assert np.allclose(samples.rows.sum(axis=1), samples.v_full - samples.v_empty)
    assert samples.base_evaluations == 2 and samples.evaluations.sum() <= 2 ** 5 - 2
    assert samples.evaluations[0] == 4  # the first walk meets only new coalitions: n − 1 between N and ∅


def test_truncated_walk_stops_after_the_collapse():
    """Remove-direction walk on a unanimity game: after the first carrier player leaves, v = 0 < τ·v(N)."""
    samples = sample_units(lambda m: float(m.all()), 4, [0], seed=0, antithetic=False, truncation=0.5)
    order = permutation(0, 0, 4, antithetic=False)
    assert samples.rows[0, order[0]] == 1.0 and np.count_nonzero(samples.rows) == 1
    assert samples.evaluations[0] == 1  # only the coalition without order[0]; the rest is never evaluated


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"returned nan for coalition \[1\]"):
        game_value(lambda m: float("nan"), np.array([False, True]))
