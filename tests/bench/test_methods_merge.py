"""``bench.methods --merge``: seeds run as separate processes join into one paired report (no training)."""

from __future__ import annotations

import json
import re

import pytest

from bench import methods
from bench.methods_report import ARGMAX, METHODS

TOP1 = {"smpq": 0.80, "dmpq": 0.82, "hawq": 0.83, "uniform": 0.70}


def fake_seed(seed: int, ft_seeds=(0, 1), stage_seconds=None) -> dict:
    """A per-seed result as ``run_seed`` writes it, at one budget (2.5 bits), top-1 shifted by seed and QAT seed."""
    def run(method, k):
        return {"top1": TOP1[method] + 0.01 * seed + 0.001 * k, "gbitops": 0.04, "size_mb": 0.7,
                "meets_budget": True}
    budgets = {methods.run_tag("2.5", k): {"avg_bits": 2.5, "size_mb": None, "finetune_seed": k,
                                            "budget_gbitops": 0.04, "methods": {m: run(m, k) for m in METHODS},
                                            "differing_layers": {"layer1": "w2 vs w4"}} for k in ft_seeds}
    stages = stage_seconds if stage_seconds is not None else {"pretrain": 10.0, "shapley": 5.0}
    return {"seed": seed, "fp_top1": 0.86, "spearman_alpha_shapley": 0.1, "shapley": {"evaluations": 100},
            "stage_seconds": stages, "total_seconds": sum(stages.values()), "budgets": budgets,
            ARGMAX: run("dmpq", 0) | {"meets_budget": None}}


def write_run(path, seeds, **extra) -> None:
    path.mkdir(parents=True)
    report = {"command": "python -m bench.methods …", "date": "2026-12-03T20:00:00+00:00", "machine": "x86_64",
              "threads": 1, "tiny": False, "wall_seconds": 100.0, "budgets": ["2.5"], "finetune_seeds": [0, 1],
              "seeds": seeds} | extra
    (path / "methods.json").write_text(json.dumps(report))


def test_merge_pairs_the_seeds_of_separate_runs_like_one_run(tmp_path):
    """A reused seed (no pretrain time) beside fresh ones: 3 seeds × 2 QAT seeds = 6 pairs, gaps by hand."""
    write_run(tmp_path / "a", [fake_seed(0, stage_seconds={"shapley": 6.0})])
    write_run(tmp_path / "b", [fake_seed(2), fake_seed(1)], wall_seconds=50.0)
    report = methods.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    assert [s["seed"] for s in report["seeds"]] == [0, 1, 2]
    assert report["wall_seconds"] == 150.0 and len(report["parts"]) == 2
    gap = report["paired_gaps"][0]
    assert gap["pairs"] == 6 and gap["smpq_wins_vs_dmpq"] == 0
    assert gap["smpq_minus_dmpq"][0] == pytest.approx(-0.02) and gap["smpq_minus_uniform"][0] == pytest.approx(0.10)
    assert report["finetune_spread"] == pytest.approx(0.001 / 2 ** 0.5)
    table = (tmp_path / "m" / "methods.md").read_text()
    assert "| pretrain | – | 10 | 10 | 10 |" in table  # seed 0 reused its pretraining
    assert json.loads((tmp_path / "m" / "methods.json").read_text())["summary"] == report["summary"]


@pytest.mark.parametrize(("extra", "seeds", "message"), [
    ({"budgets": ["3"]}, [1], re.escape("budgets ['3'] differs from")),
    ({"finetune_seeds": [0]}, [1], re.escape("finetune_seeds [0] differs from")),
    ({}, [0], r"seed\(s\) \[0\] appear in more than one merged run"),
])
def test_merge_refuses_runs_of_another_protocol_or_the_same_seed(tmp_path, extra, seeds, message):
    write_run(tmp_path / "a", [fake_seed(0)])
    write_run(tmp_path / "b", [fake_seed(s) for s in seeds], **extra)
    with pytest.raises(ValueError, match=message):
        methods.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()
