"""Whole-pipeline smoke run on a tiny subsample: outputs, no-op rerun, targeted rerun, MLflow runs."""

import json
import math
import shutil
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from smpq.shapley.estimate import run_units
from tests.pipeline.conftest import run

pytestmark = pytest.mark.slow  # one whole tiny `dvc repro` (session fixture) and reruns: minutes

METHODS = ("smpq", "dmpq", "hawq", "uniform")
STAGES = {"prepare", "pretrain", "calibrate", "supernet", "shapley", "sensitivity", "select", "report"} | {
    f"{stage}@{m}" for stage in ("finetune", "export") for m in METHODS}


def test_pipeline_writes_report_and_metrics(reproduced):
    report = (reproduced / "results/report/report.md").read_text()
    selection = json.loads((reproduced / "results/select/summary.json").read_text())
    uniform = selection["uniform"]["policy"]  # 2.5 bits: W3A2 and W2A3 tie in BitOps; more weight bits win
    assert uniform == "W3A2" and f"| uniform | {uniform} |" in report and "full precision" in report
    assert "| smpq |" in report and "| dmpq |" in report and "| hawq |" in report and "Spearman" in report
    sensitivity = json.loads((reproduced / "data/sensitivity/sensitivity.json").read_text())
    assert len(sensitivity["traces"]) == 8 * 2 and len(sensitivity["candidates"]) == 8 * 8
    assert all(t["stderr"] >= 0 and t["clamped"] == (t["trace"] < 0) for t in sensitivity["traces"])  # negative:
    # recorded as estimated and flagged, scored as 0 (tiny activation traces of a 2-epoch model can come out < 0)
    shapley = json.loads((reproduced / "data/shapley/shapley.json").read_text())
    assert len(shapley["players"]) == 8 * 8  # 8 searchable layers × (4 w + 4 a candidates)
    params = yaml.safe_load((reproduced / "params.yaml").read_text())["shapley"]
    units, _ = run_units(params["max_permutations"], params["estimator"], params["antithetic"])
    assert shapley["totals"]["permutations"] == units  # one deterministic unit for within_group, else 4
    assert all(math.isfinite(p["value"]) for p in shapley["players"])
    assert all(selection[m]["meets_budget"] for m in METHODS)
    metrics = json.loads((reproduced / "results/report/metrics.json").read_text())
    fp = json.loads((reproduced / "results/pretrain/metrics.json").read_text())
    assert 0.5 < fp["fp"]["top1"] <= 1.0  # 2 epochs on 3 000 images: far above chance (0.1)
    assert 0.1 < metrics["uniform"]["top1"] <= 1.0
    # the DVC summary fits 120 columns: the budget and each method's top-1 (the rest is in MLflow and export/)
    assert set(metrics) == {"budget", *METHODS} and all(set(metrics[m]) == {"top1"} for m in METHODS)
    card = json.loads((reproduced / "data/prepared/card.json").read_text())
    assert card["counts"] == {"train": 3000, "search_val": 500, "test": 1000}
    assert (reproduced / "results/report/accuracy_vs_bitops.png").stat().st_size > 1000
    for method in METHODS:  # the export's packed size is the priced size, and onnxruntime agrees with PyTorch
        exported = json.loads((reproduced / f"results/export/{method}/metrics.json").read_text())
        assert abs(exported["packed_mb"] - selection[method]["size_mb"]) < 1e-6  # within a byte
        assert exported["top1_agreement"] >= 0.999 and exported["top1_pytorch"] == metrics[method]["top1"]
        assert f"{exported['packed_mb']:.4f} | {exported['onnx_mb']:.4f}" in report


def test_second_repro_is_a_noop(reproduced):
    start = time.perf_counter()
    proc = run(["dvc", "repro"], reproduced)
    elapsed = time.perf_counter() - start
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in proc.stdout
    assert "Running stage" not in proc.stdout
    assert elapsed < 30  # the acceptance target is 10 s on an idle machine; tests run beside others


def test_mlflow_holds_one_parent_with_a_child_per_stage(reproduced):
    client = MlflowClient(tracking_uri=f"sqlite:///{reproduced / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smpq")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("smpq.role") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.info.run_name for r in children} == STAGES
    assert len(runs) == 1 + len(STAGES)
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    pretrain = next(r for r in children if r.info.run_name == "pretrain")
    assert float(pretrain.data.params["pretrain.lr"]) == 0.05
    assert 0.5 < pretrain.data.metrics["fp.top1"] <= 1.0
    assert len(client.get_metric_history(pretrain.info.run_id, "val_top1")) == 2  # one per epoch
    assert {a.path for a in client.list_artifacts(pretrain.info.run_id)} >= {"model.pt", "metrics.json", "curves.png"}
    report = next(r for r in children if r.info.run_name == "report")
    assert {a.path for a in client.list_artifacts(report.info.run_id)} >= {"report.md", "accuracy_vs_bitops.png"}


def test_mlflow_runs_explain_themselves(reproduced):
    client = MlflowClient(tracking_uri=f"sqlite:///{reproduced / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smpq")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the "Model training" view
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("smpq.role") == "pipeline")
    commit = run(["git", "rev-parse", "HEAD"], reproduced).stdout.strip()
    assert parent.info.run_name == f"avg_bits=2.5 · compact_resnet/fashion_mnist · {commit[:7]}"
    assert parent.data.tags["mlflow.source.git.commit"] == commit and parent.data.tags["smpq.budget"] == "avg_bits=2.5"
    assert parent.data.params["finetune.epochs"] == "1" and parent.data.metrics["fp.top1"] > 0.5
    assert {f"{m}.top1" for m in METHODS} | {f"{m}.gbitops" for m in METHODS} <= set(parent.data.metrics)
    artifacts = {a.path for folder in ("report", "policies") for a in client.list_artifacts(parent.info.run_id, folder)}
    assert {"report/report.html", "report/accuracy_vs_bitops.png", "policies/smpq.yaml"} <= artifacts
    html = (reproduced / "results/report/report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2 and "<table>" in html  # images show in the preview
    sensitivity = next(r for r in runs if r.info.run_name == "sensitivity")
    assert sensitivity.data.metrics["sensitivity.trace.blocks.0.conv1.w"] >= 0  # each trace and its error logged
    assert "sensitivity.trace_stderr.blocks.2.conv2.a" in sensitivity.data.metrics
    finetunes = {r.data.params["method"]: r for r in runs if r.info.run_name.startswith("finetune@")}
    assert set(finetunes) == set(METHODS)
    for method, r in finetunes.items():
        assert r.data.params["budget"] == "avg_bits=2.5" and "finetune.methods" not in r.data.params
        metrics = json.loads((reproduced / f"results/finetune/{method}/metrics.json").read_text())
        assert float(r.data.params["policy.gbitops"]) == metrics["gbitops"]  # unrounded
        assert r.data.metrics["top1"] == metrics["top1"] and len(client.get_metric_history(
            r.info.run_id, "steps.train_loss")) > 1


def test_changing_finetune_epochs_reruns_only_finetune_and_report(reproduced, tmp_path):
    project = tmp_path / "copy"
    shutil.copytree(reproduced, project, symlinks=True)
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["finetune"]["epochs"] = 2
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert set(status) == {f"finetune@{m}" for m in METHODS}
    out = run(["dvc", "repro"], project).stdout
    assert "Running stage 'finetune@uniform'" in out and "Running stage 'report'" in out
    for stage in ("prepare", "pretrain", "calibrate", "supernet", "shapley", "sensitivity", "select"):
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert json.loads((project / "results/finetune/uniform/metrics.json").read_text())["epochs"] == 2


def test_budget_sweep_reuses_supernet_and_shapley(reproduced, tmp_path):
    project = tmp_path / "sweep"
    shutil.copytree(reproduced, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["select"]["budget"]["avg_bits"] += 0.5  # another budget than the one reproduced
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert set(status) == {"select"}  # everything after select follows from its outputs


def test_forced_rerun_that_reproduces_its_output_leaves_downstream_unchanged(reproduced, tmp_path):
    project = tmp_path / "forced"
    shutil.copytree(reproduced, project, symlinks=True)
    before = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["finetune@uniform"]["outs"]
    out = run(["dvc", "repro", "--force", "--single-item", "finetune@uniform"], project).stdout
    assert "Running stage 'finetune@uniform'" in out
    after = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["finetune@uniform"]["outs"]
    assert after == before  # model, metrics, curves: byte-identical (the timings live elsewhere)
    assert json.loads(run(["dvc", "status", "--json"], project).stdout) == {}  # report is not stale
    timings = json.loads((project / "results/timings/finetune-uniform.json").read_text())
    assert timings["train_seconds"] > 0 and len(timings["epoch_seconds"]) == 1


def test_metrics_hold_results_not_timings_under_one_naming_scheme(reproduced):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], reproduced).stdout)
    names = {name for rev in shown.values() for f in rev["data"].values() for name in _flat(f["data"])}
    assert not [n for n in names if "seconds" in n or "per_second" in n]
    assert {f"{m}.top1" for m in METHODS} | {"fp.top1", "budget.gbitops"} <= names
    assert all("." in n for n in names)  # <subject>.<quantity> everywhere (stages/run_info.py)
    steps = json.loads((reproduced / "results/finetune/smpq/steps.json").read_text())
    assert len(steps) > 1 and steps[-1]["epoch"] == 1.0  # a curve, not a point, for a one-epoch fine-tune


def _flat(data: dict, prefix: str = "") -> list[str]:
    return [n for k, v in data.items()
            for n in (_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])]
