"""``bench.mixture_dependence``: within-group values of a hand-solvable game, the sampled groups, the recorded row."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from bench import mixture_dependence
from smpq.supernet.players import Player, player_groups

LAYERS = ["l0", "l1", "l2"]
PLAYERS = [Player(layer, kind, bits) for layer in LAYERS for kind in ("w", "a") for bits in (2, 8)]


class Game:
    """v(S) = Σ weight of the present players + 1.0 when both players of group 0 are present (per image: ×1)."""

    def __init__(self, weights):
        self.weights = np.asarray(weights, dtype=float)

    def __call__(self, mask):
        return self.many([mask])[0]

    def many(self, masks):
        return [np.full(3, self.weights @ m + (1.0 if m[0] and m[1] else 0.0)) for m in masks]


def test_within_group_values_are_exact_shapley_values_keyed_by_bits():
    weights = np.arange(len(PLAYERS)) / 10
    game = SimpleNamespace(value_fn=Game(weights), players=PLAYERS, groups=player_groups(PLAYERS))
    assert mixture_dependence.within_group(game, 0) == pytest.approx({2: 0.0 + 0.5, 8: 0.1 + 0.5})  # split 1.0
    assert mixture_dependence.within_group(game, 3) == pytest.approx({2: 0.6, 8: 0.7})  # additive: own weight


def write_record(copy, values, v_full=-0.1, v_empty=-13.0):
    folder = copy / "data" / "shapley"
    folder.mkdir(parents=True)
    players = [{"layer": p.layer, "kind": p.kind, "bits": p.bits, "value": v} for p, v in zip(PLAYERS, values)]
    folder.joinpath("shapley.json").write_text(json.dumps({"players": players,
                                                           "totals": {"v_full": v_full, "v_empty": v_empty}}))


def test_recorded_row_samples_evenly_spaced_layers_and_counts_where_high_bits_win(tmp_path):
    # per group (φ(2), φ(8)): l0/w 8 wins, l0/a 2 wins, l1 (not sampled), l2/w 2 wins, l2/a 8 wins
    write_record(tmp_path / "seed0", [0.1, 0.3, 0.5, 0.2, 9, 9, 9, 9, 0.4, 0.0, 0.0, 0.6])
    row = mixture_dependence.recorded(tmp_path / "seed0", layers=2)
    assert set(row["groups"]) == {"l0/w", "l0/a", "l2/w", "l2/a"}  # the first and the last layer
    assert row["groups"]["l0/a"] == {2: 0.5, 8: 0.2}
    assert row["high_above_low"] == {"w": [1, 2], "a": [1, 2]}
    assert (row["v_full"], row["v_empty"]) == (-0.1, -13.0)
    assert set(mixture_dependence.recorded(tmp_path / "seed0", layers=5)["groups"]) == {
        f"{layer}/{kind}" for layer in LAYERS for kind in "wa"}  # more layers than the network: all of them


def test_bad_inputs_are_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no trained shapley stage in .*seed9"):
        mixture_dependence.main([str(tmp_path / "seed9")])
    with pytest.raises(SystemExit, match="--variant expects NAME:KEY=VALUE"):
        mixture_dependence.main([str(tmp_path), "--variant", "fp:reference_bits"])
    with pytest.raises(SystemExit):  # argparse: "error: --layers must be at least 1, got 0"
        mixture_dependence.main([str(tmp_path), "--layers", "0"])
    assert "--layers must be at least 1, got 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
