"""How far a ranking of candidates can be trusted (SPEC §3.3 "reliability is part of the result").

The selection picks one candidate per (layer, kind) group, so a constant shift of a group's values never
changes it: agreement is measured on group-centred values (each group's mean removed), with Spearman's ρ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr


def group_centred(values: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``values`` with each group's mean subtracted."""
    centred = np.asarray(values, dtype=np.float64).copy()
    for members in groups:
        centred[members] -= centred[members].mean()
    return centred


def rank_agreement(a: np.ndarray, b: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """Spearman ρ between two estimates of the same values, after group-centring both."""
    rho = spearmanr(group_centred(a, groups), group_centred(b, groups)).statistic
    return float(rho) if np.isfinite(rho) else float("nan")


def spearman_brown(half_rho: float) -> float:
    """Reliability of the full estimate from the agreement of its two halves: 2ρ / (1 + ρ)."""
    return 2 * half_rho / (1 + half_rho) if half_rho > -1 else float("nan")
