"""``bench.qat_stability``: the spread over fine-tune seeds, uniform policies, recipes, and a tiny end-to-end run."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
import torch

from bench import qat_stability
from bench.workspace import TINY, make_copy, repro
from smpq.config import load_params
from smpq.cost import CostTable
from smpq.policy import LayerBits, Policy


def test_spread_is_the_pooled_standard_deviation_over_fine_tune_seeds():
    runs = {"a": {0: 0.80, 1: 0.84}, "b": {0: 0.50, 1: 0.50}}  # variances 0.0008 and 0
    assert qat_stability.spread(runs, [0, 1]) == pytest.approx((0.0008 / 2) ** 0.5)
    assert qat_stability.spread({"a": {0: 0.8}}, [0]) is None  # one seed: no spread


def test_uniform_policy_keeps_the_first_and_last_layers_fixed():
    table = SimpleNamespace(names=["first", "mid", "last"], first="first", last="last")
    params = SimpleNamespace(quant=SimpleNamespace(first_last=SimpleNamespace(w_bits=8, a_bits=8)))
    policy = qat_stability.uniform(params, table, "3:2")
    assert policy["mid"] == LayerBits(3, 2) and policy["first"] == policy["last"] == LayerBits(8, 8)
    with pytest.raises(SystemExit, match=r"^error: --uniform '3': expected W:A bit-widths"):
        qat_stability.uniform(params, table, "3")


def test_recipes_parse_to_finetune_overrides_and_bad_ones_are_one_line_errors(tmp_path):
    assert qat_stability.parse_recipe("base:") == ("base", {})
    assert qat_stability.parse_recipe("slow:lr=0.003,epochs=4") == ("slow", {"finetune.lr": 0.003,
                                                                             "finetune.epochs": 4})
    with pytest.raises(SystemExit, match="expected NAME:KEY=VALUE"):
        qat_stability.parse_recipe("slow:lr")
    with pytest.raises(SystemExit, match="--bn-batches must be ≥ 0"):
        qat_stability.main(["--bn-batches", "-1", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_saved_policies_load_by_name_and_bad_ones_are_one_line_errors(tmp_path):
    file = tmp_path / "smpq.yaml"
    Policy({"a": LayerBits(8, 8), "b": LayerBits(3, 2)}).save(file)
    name, policy = qat_stability.saved_policy(f"smpq={file}")
    assert name == "smpq" and policy["b"] == LayerBits(3, 2) and set(policy) == {"a", "b"}
    with pytest.raises(SystemExit, match=r"^error: --policy 'smpq': expected NAME=FILE"):
        qat_stability.saved_policy("smpq")
    with pytest.raises(SystemExit, match=r"^error: --policy 'x=.*missing.yaml': .*policy file not found$"):
        qat_stability.saved_policy(f"x={tmp_path / 'missing.yaml'}")
    with pytest.raises(SystemExit, match=r"^error: --policy: each NAME may appear once$"):
        qat_stability.main(["--policy", f"smpq={file}", f"smpq={file}", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="at least one policy is needed"):
        qat_stability.main(["--uniform", "--random", "0", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a tiny copy trained to calibrate, then 2 × 2 fine-tunes: about a minute
def test_tiny_run_scores_each_model_as_the_stage_recorded_and_reports_the_spread(tmp_path, capsys):
    copy = make_copy(tmp_path / "copy", TINY | {"tracking.enabled": False})
    repro(copy, ["prepare", "pretrain", "calibrate"], threads=1)
    out = tmp_path / "out"
    wrong = tmp_path / "wrong.yaml"
    Policy({"no_such_layer": LayerBits(3, 2)}).save(wrong)
    with pytest.raises(SystemExit, match=r"^error: --policy wrong: its layers are not the project's"):
        qat_stability.main(["--project", str(copy.root), "--policy", f"wrong={wrong}", "--out", str(out)])
    assert not out.exists()
    saved = tmp_path / "w3a2.yaml"
    uniform = qat_stability.uniform(load_params(copy.root / "params.yaml", {}), CostTable.load(copy.data("calibrate")),
                                    "3:2")
    uniform.save(saved)
    with pytest.raises(SystemExit, match=r"^error: --policy \['W3A2'\]: the name of a --uniform or --random policy"):
        qat_stability.main(["--project", str(copy.root), "--uniform", "3:2", "--policy", f"W3A2={saved}",
                            "--out", str(out)])
    assert not out.exists()
    argv = ["--project", str(copy.root), "--uniform", "3:2", "--random", "1", "--policy", f"saved={saved}",
            "--finetune-seeds", "0", "1", "--bn-batches", "2", "--threads", "1", "--out", str(out)]
    report = qat_stability.main(argv)
    base = report["recipes"]["base"]
    assert base["rows"]["0"]["top1"]["saved"] == base["rows"]["0"]["top1"]["W3A2"]  # the same policy, same QAT
    assert base["control_max_difference"] == 0.0  # BN 0: the saved model scores what the stage recorded
    assert {s for runs in base["steps_below_zero"].values() for s in runs} == {0, 1}
    assert set(base["rows"]) == {"0", "2"}
    for row in base["rows"].values():
        assert set(row["top1"]) == {"W3A2", "random00", "saved"}
        top1 = [v for runs in row["top1"].values() for v in runs.values()]
        assert row["mean"] == pytest.approx(statistics.fmean(top1)) and all(0 <= v <= 1 for v in top1)
        assert row["spread"] == pytest.approx(qat_stability.spread(row["top1"], [0, 1]))
    assert json.loads((out / "qat_stability.json").read_text())["recipes"]["base"]["rows"].keys() == {"0", "2"}
    assert "base, BN re-estimated on 2 batches: mean top-1" in capsys.readouterr().out
    assert qat_stability.main(argv)["recipes"] == report["recipes"]  # a second run fine-tunes nothing again
    # the finetune stage reads finetune.weight_step_grad: same seed, same policy, other weight-step updates
    qat_stability.main(["--project", str(copy.root), "--uniform", "3:2", "--random", "0", "--finetune-seeds", "0",
                        "--recipe", "tensor:weight_step_grad=tensor", "--bn-batches", "0", "--threads", "1",
                        "--out", str(out)])
    models = {r: torch.load(out / r / "ft0" / "models" / "W3A2" / "model.pt", weights_only=True)
              for r in ("base", "tensor")}
    steps = [key for key in models["base"] if key.endswith("w_quant.step")]
    assert steps and not any(torch.equal(models["base"][k], models["tensor"][k]) for k in steps)


def test_scores_are_kept_beside_the_run_and_only_missing_counts_are_computed(tmp_path):
    asked = []

    def score(ks):
        asked.append(ks)
        return {k: 0.5 + k / 128 for k in ks}  # exact binary fractions

    path = tmp_path / qat_stability.SCORES_FILE
    assert qat_stability.cached_scores(path, [0, 8], score) == {0: 0.5, 8: 0.5625}
    assert qat_stability.cached_scores(path, [0, 8, 32], score) == {0: 0.5, 8: 0.5625, 32: 0.75}
    assert qat_stability.cached_scores(path, [32], score) == {32: 0.75}
    assert asked == [[0, 8], [32]] and json.loads(path.read_text()) == {"0": 0.5, "8": 0.5625, "32": 0.75}


def test_steps_below_zero_counts_step_entries_only():
    state = {"a.w_quant.step": torch.tensor([0.1, -0.2, -0.3]), "a.a_quant.step": torch.tensor(-1.0),
             "a.weight": -torch.ones(4), "b.w_quant.step": torch.tensor([0.5])}
    assert qat_stability.steps_below_zero(state) == 3  # two weight channels and one activation step
