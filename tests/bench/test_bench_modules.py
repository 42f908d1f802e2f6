"""The benchmark modules run end to end on tiny configurations, so they cannot rot unnoticed.

Tiny data, one seed, one budget, few permutations: the numbers mean nothing, so the assertions check the
structure and the sanity of the outputs (ranges, budgets met, consistent counts), never specific values.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bench import methods, stage_costs
from bench.workspace import PROJECT, Workspace, default_params, make_copy, override
from smpq.config import ConfigError
from smpq.policy import Policy


@pytest.fixture(scope="module")
def tiny_methods(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods")
    report = methods.main(["--tiny", "--seeds", "0", "--budgets", "3", "--out", str(out), "--threads", "1"])
    return out, report


def test_override_replaces_nested_fields_through_the_validated_loader():
    params = override(default_params(), {"seed": 7, "select.budget.avg_bits": 2.5})
    assert params.seed == 7 and params.select.budget.avg_bits == 2.5
    assert params.shapley == default_params().shapley
    assert override(params, {"shapley.max_permutations": 4}).seed == 7  # earlier changes are kept


def test_a_bad_bench_override_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"shapley\.truncaton: unknown key"):
        default_params({"shapley.truncaton": 0.5})
    with pytest.raises(ConfigError, match=r"shapley\.truncaton: unknown key"):
        override(default_params(), {"shapley.truncaton": 0.5})
    with pytest.raises(ConfigError, match=r"shapley\.truncaton: unknown key"):
        methods.main(["--tiny", "--out", str(tmp_path), "--set", "shapley.truncaton=0.5"])
    with pytest.raises(ConfigError, match=r"seed"):
        make_copy(tmp_path / "copy", {"seed": -1})
    assert not any(tmp_path.iterdir())  # refused before anything was copied or trained


def test_methods_table_covers_every_method_and_meets_budgets(tiny_methods):
    out, report = tiny_methods
    assert json.loads((out / "methods.json").read_text())["summary"] == report["summary"]
    assert {r["method"] for r in report["summary"]} == {*methods.METHODS, methods.ARGMAX}
    for row in report["summary"]:
        assert 0.0 <= row["top1_mean"] <= 1.0 and row["gbitops_mean"] > 0 and row["size_mb_mean"] > 0
        assert row["seeds"] == 1 and row["top1_std"] is None
        if row["method"] != methods.ARGMAX:
            assert row["meets_budget"] and row["gbitops_mean"] <= row["budget_gbitops"] * (1 + 1e-9)
    table = (out / "methods.md").read_text()
    assert all(f"| {m} |" in table for m in (*methods.METHODS, methods.ARGMAX))
    assert (out / "top1_vs_gbitops.png").stat().st_size > 1000
    assert methods.main(["--render", "--out", str(out)])["summary"] == report["summary"]  # no training again


def test_methods_per_seed_diagnostics(tiny_methods):
    out, report = tiny_methods
    seed = report["seeds"][0]
    assert -1.0 <= seed["spearman_alpha_shapley"] <= 1.0
    budget = seed["budgets"]["avg3"]
    folder = Workspace(out / "seed0").data("select")  # the last budget's selection
    assert folder == out / "seed0/data/select"
    smpq, dmpq = Policy.load(folder / "smpq.yaml"), Policy.load(folder / "dmpq.yaml")
    assert set(budget["differing_layers"]) == {name for name in smpq if smpq[name] != dmpq[name]}
    assert set(seed["stage_seconds"]) >= {"prepare", "pretrain", "calibrate", "supernet", "shapley"}
    top1 = {m: budget["methods"][m]["top1"] for m in methods.METHODS}
    assert report["paired_gaps"][0]["smpq_minus_dmpq"][0] == pytest.approx(top1["smpq"] - top1["dmpq"])


def test_methods_reuse_reruns_only_shapley_onward_with_the_overrides(tiny_methods, tmp_path):
    out, _ = tiny_methods
    report = methods.main(["--tiny", "--seeds", "0", "--budgets", "3", "--out", str(tmp_path), "--threads", "1",
                           "--reuse", str(out), "--set", "shapley.truncation=0.5", "shapley.max_permutations=4"])
    seed = report["seeds"][0]
    assert set(seed["stage_seconds"]) == {"shapley", "select+finetune (all budgets)", "finetune dmpq_argmax"}
    assert seed["shapley"]["permutations"] == 4
    reused = tmp_path / "seed0/data/supernet/supernet.pt"
    assert reused.read_bytes() == (out / "seed0/data/supernet/supernet.pt").read_bytes()
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        methods.parse_overrides(["shapley.truncation"])
    assert not (tmp_path / "seed0/results/report").exists()  # only the stages the bench needs ran
    with pytest.raises(FileNotFoundError, match="nothing to reuse"):
        methods.main(["--tiny", "--seeds", "5", "--budgets", "3", "--out", str(tmp_path / "x"), "--reuse", str(out)])


def test_estimator_curves_on_an_additive_game_are_exact_at_once():
    """Every permutation of an additive game gives the exact values: ρ = 1 and zero error from the start."""
    from bench import estimator

    weights = np.array([0.3, -0.1, 0.05, 0.2, 0.0, 0.15])
    game = estimator.SharedGame(lambda mask: float(weights[mask].sum()))
    result = estimator.run_until(game, 6, estimator.CONFIGS["antithetic"], seed=1, evaluations=40)
    c = estimator.curve(result, weights, antithetic=True)
    assert result.n_evaluations >= 40 and game.forwards == len(game.cache) <= 2 ** 6
    assert all(r == pytest.approx(1.0) for r in c["rho"]) and max(c["max_error"]) < 1e-12
    assert estimator.evaluations_to_target(c) == c["evaluations"][0]
    assert estimator.evaluations_to_target({"evaluations": [1, 2], "rho": [0.99, 0.5]}) == math.inf


def test_estimator_study_on_the_tiny_supernet(tiny_methods, tmp_path):
    from bench import estimator

    out, _ = tiny_methods
    result = estimator.main(["--tiny", "--workspace", str(out / "seed0"), "--seeds", "1", "--batch", "32",
                             "--max-factor", "1", "--out", str(tmp_path), "--threads", "1"])
    assert set(result["table"]) == {*estimator.CONFIGS, "default"}
    assert result["reference"]["evaluations"] >= result["reference_factor"] * result["default_evaluations"]
    assert result["points"]["default"]["permutations"] == 2 and result["forwards"] > 0
    for per_seed in result["curves"].values():
        for c in per_seed.values():
            assert c["evaluations"] == sorted(c["evaluations"]) and len(c["rho"]) == len(c["evaluations"])
            assert all(-1 <= r <= 1 for r in c["rho"]) and all(e >= 0 for e in c["max_error"])
    assert result["budgets"] == [max(1, round(f * result["default_evaluations"])) for f in estimator.GRID if f <= 1]
    assert (tmp_path / "estimator.json").exists() and "shapley_nas" in (tmp_path / "estimator.md").read_text()


def test_estimator_refuses_a_missing_pipeline(tmp_path):
    from bench import estimator

    with pytest.raises(SystemExit, match="dvc repro"):
        estimator.main(["--workspace", str(tmp_path), "--out", str(tmp_path / "out")])


@pytest.mark.skipif(not stage_costs.TIME.exists(), reason="/usr/bin/time is not installed")
def test_time_report_is_parsed(tmp_path):
    report = tmp_path / "time.txt"
    subprocess.run([str(stage_costs.TIME), "-v", "-o", str(report), sys.executable, "-m", "stages.prepare", "--help"],
                   cwd=PROJECT, check=True, capture_output=True)
    parsed = stage_costs.parse_time(report.read_text())
    assert parsed["stage"] == "prepare" and parsed["exit_status"] == 0
    assert parsed["wall_seconds"] > 0 and parsed["peak_rss_mb"] > 10


@pytest.mark.skipif(not stage_costs.TIME.exists(), reason="/usr/bin/time is not installed")
def test_stage_costs_reruns_in_a_copy(tmp_path):
    report = stage_costs.main(["--tiny", "--targets", "prepare", "--workdir", str(tmp_path / "work"), "--batch", "16",
                               "--repeats", "1", "--out", str(tmp_path / "out"), "--threads", "1"])
    assert [s["stage"] for s in report["rerun"]["stages"]] == ["prepare"]
    assert report["copy"].startswith(str(tmp_path)) and (tmp_path / "work/project/dvc.lock").exists()
    assert len(report["rerun"]["noop_repro_seconds"]) == 2 and report["ilp"]["median_ms"] > 0
    assert all(v > 0 for v in report["evaluation_rates"]["per_second"].values())
    assert all(s["wall_seconds"] >= 0 for s in report["mlflow_project"])
    assert "| prepare |" in (tmp_path / "out/stage_costs.md").read_text()
    assert stage_costs.main(["--render", "--out", str(tmp_path / "out")])["rerun"] == report["rerun"]


def test_mckp_benchmark_solves_the_resnet18_sized_instance(capsys):
    from bench import mckp

    values, costs, budget = mckp.instance(0)
    assert (len(values), len(values[0])) == (19, 16)
    mckp.main(["--repeats", "2"])
    out = capsys.readouterr().out
    assert "MCKP 19 groups x 16 items" in out and "median" in out


def test_coalition_benchmark_runs_on_a_small_batch(capsys):
    from bench import coalition_eval

    result = coalition_eval.main(["--repeats", "1", "--evals", "1", "--batch", "16", "--threads", "1"])
    assert set(result["evaluations_per_second"]) == {"fixed", "masked", "full", "argmax"}
    assert all(rate > 0 for rate in result["evaluations_per_second"].values())
    assert result["argmax_vs_fixed_max_abs_diff"] <= 1e-5  # the argmax coalition is the fixed-policy model
    assert "masked/fixed" in capsys.readouterr().out


def test_worker_benchmark_gives_identical_estimates_on_one_and_two_dask_workers(tmp_path, capsys):
    from bench import shapley_workers

    result = shapley_workers.main(["--project", str(tmp_path), "--permutations", "2", "--chunks", "2",
                                   "--batch", "16"])  # no supernet in tmp_path: the random-weight game
    assert result["evaluations"] > 0 and result["speedup"] > 0
    assert set(result["worker_rss_mib"]) == {1, 2} and len(result["worker_rss_mib"][2]) == 2
    assert "all three estimates identical: yes" in capsys.readouterr().out
