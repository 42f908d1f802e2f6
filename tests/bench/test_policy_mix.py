"""``bench.policy_mix``: bit-width counts and the 2-bit-activation MAC share of selected policies, by hand."""

from __future__ import annotations

import json

import pytest

from bench import policy_mix
from smpq.cost import CostTable
from smpq.policy import Policy

LAYERS = [("stem", 100), ("a", 300), ("b", 100), ("c", 600), ("head", 10)]  # (name, MACs); stem/head are fixed


def write_copy(copy, policies: dict[str, dict[str, tuple[int, int]]]) -> None:
    table = CostTable.from_dict({"input_shape": [1, 28, 28], "layers": [
        {"name": n, "kind": "conv", "macs": macs, "params": 10, "out_channels": 4} for n, macs in LAYERS]})
    table.save(copy / "data" / "calibrate")
    (copy / "data" / "select").mkdir(parents=True)
    for method, bits in policies.items():
        Policy({"stem": (8, 8), **bits, "head": (8, 8)}).save(copy / "data" / "select" / f"{method}.yaml")


def test_counts_searchable_layers_and_the_mac_share_at_two_bit_activations(tmp_path, capsys):
    write_copy(tmp_path / "seed0", {"smpq": {"a": (2, 2), "b": (4, 2), "c": (3, 4)},
                                    "uniform": {"a": (3, 2), "b": (3, 2), "c": (3, 2)}})
    mixes = policy_mix.main([str(tmp_path), "--out", str(tmp_path / "mix.json")])
    smpq = mixes["seed0"]["smpq"]
    assert smpq["layers"] == 3  # stem and head are kept at fixed precision, not counted
    assert smpq["w_bits"] == {2: 1, 3: 1, 4: 1} and smpq["a_bits"] == {2: 2, 4: 1}
    assert smpq["a2_mac_share"] == pytest.approx(400 / 1000)
    assert mixes["seed0"]["uniform"]["a2_mac_share"] == 1.0
    assert "| seed0 | smpq | 1 of 3 | 2 | 40 % | 1/1/1/0 | 2/0/1/0 |" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "mix.json").read_text())["seed0"]) == {"smpq", "uniform"}


def test_a_run_without_copies_or_selection_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no seed<n> copies under"):
        policy_mix.main([str(tmp_path)])
    write_copy(tmp_path / "seed3", {})
    (tmp_path / "seed3" / "data" / "select").rmdir()
    with pytest.raises(FileNotFoundError, match="no selection yet"):
        policy_mix.main([str(tmp_path)])
