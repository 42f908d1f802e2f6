"""``bench.step_crossings``: LSQ steps below zero per (kind, bits, layer shape), and their grid ratios."""

from __future__ import annotations

import json

import pytest
import torch

from bench import step_crossings
from smpq.policy import Policy

POLICY = Policy({"stem": (8, 8), "dw": (8, 4), "pw": (2, 3), "fc": (8, 8)})


def state() -> dict[str, torch.Tensor]:
    """stem [2,1,3,3] (first), dw [3,1,3,3] (depthwise), pw [2,3,1,1], fc [2,4] (last); one step below zero each
    in dw's weights, dw's input activation and fc's weights; ``other`` is not in the policy."""
    dw = torch.ones(3, 1, 3, 3) * torch.tensor([1.27, 1.27, 0.635]).view(3, 1, 1, 1)
    dw[0, 0, 0, 0] = -1.27  # max |w| counts the sign out
    return {"stem.weight": torch.ones(2, 1, 3, 3), "stem.w_quant.step": torch.tensor([0.01, 0.01]),
            "stem.a_quant.step": torch.tensor(0.1),
            "dw.weight": dw, "dw.w_quant.step": torch.tensor([-0.1, 0.02, 0.03]), "dw.a_quant.step": torch.tensor(-0.5),
            "pw.weight": torch.ones(2, 3, 1, 1), "pw.w_quant.step": torch.tensor([0.5, 0.25]),
            "pw.a_quant.step": torch.tensor(0.2),
            "fc.weight": torch.full((2, 4), 0.127), "fc.w_quant.step": torch.tensor([0.001, -0.002]),
            "fc.a_quant.step": torch.tensor(0.3), "other.w_quant.step": torch.tensor([-1.0])}


def test_counts_and_grid_ratios_match_hand_values():
    groups = step_crossings.crossings(state(), POLICY)
    assert set(groups) == {"w8 first", "a8 first", "w8 dw", "a4 dw", "w2", "a3", "w8 last", "a8 last"}
    dw = groups["w8 dw"]
    # ratio = |step| · 127 / max|w|: channel 0 → 0.1·127/1.27 = 10 (crossed); channels 1, 2 → 2 and 6 (kept)
    assert (dw["crossed"], dw["steps"]) == (1, 3)
    assert dw["ratio_crossed"] == pytest.approx(10.0) and dw["ratio_kept"] == pytest.approx(4.0)
    assert groups["a4 dw"] == {"crossed": 1, "steps": 1, "ratio_crossed": None, "ratio_kept": None}
    pw = groups["w2"]  # 2-bit signed: Q_max = 1 → ratios 0.5 and 0.25
    assert (pw["crossed"], pw["ratio_crossed"], pw["ratio_kept"]) == (0, None, pytest.approx(0.375))
    last = groups["w8 last"]  # 0.002·127/0.127 = 2 (crossed), 0.001·127/0.127 = 1 (kept)
    assert (last["crossed"], last["ratio_crossed"], last["ratio_kept"]) == (1, pytest.approx(2.0), pytest.approx(1.0))
    assert groups["w8 first"]["ratio_kept"] == pytest.approx(1.27)


def finetune_output(folder):
    folder.mkdir()
    torch.save(state(), folder / "model.pt")
    POLICY.save(folder / "policy.yaml")
    return folder


def test_main_prints_crossed_and_8_bit_weight_groups_and_writes_json(tmp_path, capsys):
    run = finetune_output(tmp_path / "smpq")
    report = step_crossings.main(["--runs", f"s0={run}", "--out", str(tmp_path / "x.json")])
    out = capsys.readouterr().out
    assert "| s0 | w8 dw | 1/3 | 10.00 | 4.00 |" in out and "| s0 | a4 dw | 1/1 | – | – |" in out
    assert "| s0 | w8 first | 0/2 | – | 1.27 |" in out and "| s0 | w2 |" not in out  # nothing crossed, not 8 bits
    assert json.loads((tmp_path / "x.json").read_text()) == json.loads(json.dumps(report))


def test_bad_runs_are_one_line_errors_and_write_nothing(tmp_path):
    run = finetune_output(tmp_path / "smpq")
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.pt").write_bytes(b"not a checkpoint")
    POLICY.save(corrupt / "policy.yaml")
    out = tmp_path / "x.json"
    cases = [(["smpq"], r"^error: --runs 'smpq': expected NAME=FOLDER"),
             ([f"a={run}", f"a={run}"], r"^error: --runs: a NAME is repeated$"),
             ([f"a={empty}"], rf"^error: {empty}: not a finetune output \(missing model.pt, policy.yaml\)$"),
             ([f"a={corrupt}"], rf"^error: {corrupt}: .*model.pt")]
    for runs, message in cases:
        with pytest.raises(SystemExit, match=message):
            step_crossings.main(["--runs", *runs, "--out", str(out)])
        assert not out.exists()
