"""The benchmark modules run end to end on tiny configurations, so they cannot rot unnoticed.

Tiny data, one seed, one budget, few permutations: the numbers mean nothing, so the assertions check the
structure and the sanity of the outputs (ranges, budgets met, consistent counts), never specific values.
"""

import json
import subprocess
import sys

import pytest

from bench import methods, stage_costs
from bench.workspace import PROJECT, Workspace, default_params, make_copy, override, write_params
from smpq.config import ConfigError, load_params
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


def test_write_params_builds_on_the_copys_own_params_file(tmp_path):
    """A running benchmark re-writes its copy's params.yaml per budget from the copy's own file, not from the
    project's, which a merge may have changed meanwhile (a key its loaded code does not know)."""
    ws = Workspace(tmp_path)
    (tmp_path / "params.yaml").write_text((PROJECT / "params.yaml").read_text().replace("seed: 0", "seed: 7", 1))
    params = write_params(ws, {"finetune.epochs": 3})
    assert (params.seed, params.finetune.epochs) == (7, 3)
    assert load_params(tmp_path / "params.yaml") == params
    with pytest.raises(ConfigError, match=r"finetune\.epoch: unknown key"):
        write_params(ws, {"finetune.epoch": 3})
    assert load_params(tmp_path / "params.yaml") == params  # a refused override writes nothing


@pytest.mark.slow  # a whole tiny bench.methods run (module fixture): minutes
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


@pytest.mark.slow  # a whole tiny bench.methods run (module fixture): minutes
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


@pytest.mark.slow  # a whole tiny bench.methods run (module fixture): minutes
def test_methods_reuse_reruns_only_shapley_onward_with_the_overrides(tiny_methods, tmp_path):
    out, _ = tiny_methods
    report = methods.main(["--tiny", "--seeds", "0", "--budgets", "3", "--out", str(tmp_path), "--threads", "1",
                           "--reuse", str(out), "--set", "shapley.estimator=owen", "shapley.max_permutations=4"])
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


@pytest.mark.slow  # a whole tiny bench.methods run (module fixture): minutes
def test_reliability_compares_two_seeds_on_the_tiny_supernet(tiny_methods, tmp_path):
    from bench import reliability

    out, _ = tiny_methods
    rows = reliability.main(["--project", str(out / "seed0"), "--only", "owen_2", "within_group",
                             "--out", str(tmp_path / "reliability.json")])
    assert set(rows) == {"owen_2", "within_group"}
    for row in rows.values():
        assert -1 <= row["rho"] <= 1 and 0 <= row["agree"] <= row["layers"] and row["evaluations"] > 0
    assert rows["within_group"]["evaluations"] < rows["owen_2"]["evaluations"]
    assert (tmp_path / "reliability.json").exists()


@pytest.mark.slow  # a whole tiny bench.methods run (module fixture): minutes
def test_game_variant_reproduces_the_recorded_smpq_run_then_pairs_the_variant(tiny_methods, tmp_path, capsys):
    from bench import game_variant

    out, report = tiny_methods
    result = game_variant.main(["--methods", str(out), "--set", "bn_recalibration=1", "--out", str(tmp_path)])
    check = result["control"]
    assert check["policy_matches"] and check["top1"] == check["recorded_top1"]  # the pairing holds bit for bit
    rows = result["seeds"][0]
    assert set(rows) == set(report["seeds"][0]["budgets"])
    for tag, row in rows.items():
        recorded = report["seeds"][0]["budgets"][tag]["methods"]
        assert 0 <= row["top1"] <= 1 and row["dmpq_top1"] == recorded["dmpq"]["top1"]
        assert row["gbitops"] <= report["seeds"][0]["budgets"][tag]["budget_gbitops"] * (1 + 1e-9)
    assert "variant − dmpq" in capsys.readouterr().out


@pytest.mark.slow  # a whole tiny bench.methods run (module fixture): minutes
def test_hawq_paired_reproduces_the_pipelines_hawq_run_from_the_recorded_seeds(tiny_methods, tmp_path, capsys):
    from bench import hawq_paired

    out, report = tiny_methods
    result = hawq_paired.main(["--methods", str(out), "--budgets", "3", "--out", str(tmp_path)])
    assert result["control"]["top1"] == result["control"]["recorded_top1"]
    row = result["seeds"][0]["runs"]["avg3"]
    recorded = report["seeds"][0]["budgets"]["avg3"]["methods"]
    assert row["policy"] == recorded["hawq"]["policy"] and row["top1"] == recorded["hawq"]["top1"]  # same run
    assert row["smpq_top1"] == recorded["smpq"]["top1"] and result["paired"]["dmpq_minus_hawq"]["pairs"] == 1
    assert result["paired_by_budget"] == {"avg3": result["paired"]}  # one budget: the same pairs
    assert result["seeds"][0]["sensitivity"]["hvps"] >= 2 and "smpq − hawq" in capsys.readouterr().out


@pytest.mark.slow  # a whole tiny bench.methods run (module fixture): minutes
def test_mixture_dependence_recomputes_the_recorded_game_then_probes_a_variant(tiny_methods, tmp_path, capsys):
    from bench import mixture_dependence

    out, _ = tiny_methods
    rows = mixture_dependence.main([str(out / "seed0"), "--layers", "2", "--variant", "default:",
                                    "--variant", "recal:bn_recalibration=1", "--out", str(tmp_path / "m.json")])
    seed = rows["seed0"]
    assert seed["default"]["max_difference_to_recorded"] < 1e-9  # the stage's own game, recomputed
    assert seed["default"]["v_full"] == pytest.approx(seed["recorded"]["v_full"], abs=1e-9)
    assert seed["default"]["v_empty"] == pytest.approx(seed["recorded"]["v_empty"], abs=1e-9)
    assert len(seed["recal"]["groups"]) == 4 and seed["recal"]["overrides"] == {"bn_recalibration": 1}
    assert sum(n for _, n in seed["recal"]["high_above_low"].values()) == 4
    assert "| seed0 | recal |" in capsys.readouterr().out and (tmp_path / "m.json").exists()


def test_reliability_refuses_a_project_without_a_supernet(tmp_path):
    from bench import reliability

    with pytest.raises(SystemExit, match="dvc repro supernet"):
        reliability.main(["--project", str(tmp_path)])


@pytest.mark.slow  # dvc repro of a tiny copy plus an MLflow project: minutes
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
    assert set(result["evaluations_per_second"]) == {"fixed", "masked", "full", "argmax", "owen", "owen_plain",
                                                         "within", "within_batched"}
    assert all(rate > 0 for rate in result["evaluations_per_second"].values())
    assert result["argmax_vs_fixed_max_abs_diff"] <= 1e-5  # the argmax coalition is the fixed-policy model
    out = capsys.readouterr().out
    assert "masked/fixed" in out and "within_batched/within" in out


@pytest.mark.slow  # starts local Dask clusters of 1 and 2 workers
def test_worker_benchmark_gives_identical_estimates_on_one_and_two_dask_workers(tmp_path, capsys):
    from bench import shapley_workers

    result = shapley_workers.main(["--project", str(tmp_path), "--permutations", "2", "--chunks", "2",
                                   "--batch", "16"])  # no supernet in tmp_path: the random-weight game
    assert result["evaluations"] > 0 and result["speedup"] > 0
    assert set(result["worker_rss_mib"]) == {1, 2} and len(result["worker_rss_mib"][2]) == 2
    assert "all three estimates identical: yes" in capsys.readouterr().out


def test_budget_specs_fine_tune_seeds_and_their_spread():
    assert methods.parse_budget("2.5") == (2.5, None) and methods.parse_budget("4+0.025") == (4.0, 0.025)
    assert methods.run_tag("4+0.025", 1) == "avg4+0.025MB ft1" and methods.run_tag("3", None) == "avg3"
    runs = {methods.run_tag("3", k): {"methods": {m: {"top1": 0.9 + 0.01 * k} for m in methods.METHODS}}
            for k in (0, 1)}
    assert methods.finetune_spread([{"budgets": runs}], ["3"], [0, 1]) == pytest.approx(0.01 / 2 ** 0.5)
    assert methods.finetune_spread([{"budgets": runs}], ["3"], [None]) is None


def test_qat_proxy_taus_rank_loss_downwards_and_top1_upwards():
    from bench.qat_proxy import taus

    reference = {"a": 0.90, "b": 0.89, "c": 0.88}
    agreeing = {"a": {"val_top1": 0.8, "val_loss": 0.3, "top1": 0.7}, "b": {"val_top1": 0.7, "val_loss": 0.4,
                "top1": 0.6}, "c": {"val_top1": 0.6, "val_loss": 0.5, "top1": 0.9}}
    assert taus(agreeing, reference) == pytest.approx({"val_top1": 1.0, "val_loss": 1.0, "top1": -1 / 3})
