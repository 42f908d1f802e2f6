"""Rank agreement of two estimates after removing each group's mean (what the selection can see)."""

import numpy as np
import pytest

from smpq.shapley.reliability import group_centred, rank_agreement, spearman_brown

GROUPS = [[0, 1, 2], [3, 4]]


def test_group_centring_removes_each_groups_mean():
    assert np.allclose(group_centred(np.array([1.0, 2, 3, 10, 20]), GROUPS), [-1, 0, 1, -5, 5])


def test_agreement_ignores_shifts_of_a_group_and_sees_swaps_inside_one():
    a = np.array([0.1, 0.2, 0.3, 1.0, 2.0])
    assert rank_agreement(a, a + np.array([5, 5, 5, -3, -3]), GROUPS) == pytest.approx(1.0)
    swapped = a[[2, 1, 0, 4, 3]]
    assert rank_agreement(a, swapped, GROUPS) == pytest.approx(-1.0)


def test_spearman_brown():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(1.0) == pytest.approx(1.0)
