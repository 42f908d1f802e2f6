"""The flow's stage list comes from dvc.yaml, in dependency order; a failing stage fails its task."""

from pathlib import Path

import pytest

from pipelines.dag import metrics_files, stage_command, stage_order
from pipelines.flow import StageFailed, run_stage, stage_task

ROOT = Path(__file__).resolve().parents[2]


def test_stage_order_follows_dvc_yaml_dependencies():
    order = stage_order(ROOT)
    assert order[:2] == ["prepare", "pretrain"] and order[-1] == "report"
    assert order.index("calibrate") < order.index("supernet") < order.index("shapley") < order.index("select")
    assert order.index("calibrate") < order.index("sensitivity") < order.index("select")
    assert all(order.index("select") < order.index(f"finetune@{m}") < order.index(f"export@{m}") < order.index("report")
               for m in ("smpq", "dmpq", "hawq", "uniform"))
    assert len(order) == len(set(order))


def test_metrics_files_come_from_dvc_yaml():
    assert metrics_files(ROOT, "report") == [ROOT / "results/report/metrics.json"]
    with pytest.raises(KeyError, match="no stage 'nope'"):
        metrics_files(ROOT, "nope")


def test_failing_stage_raises_with_its_error(tmp_path, monkeypatch):
    monkeypatch.setattr("pipelines.flow.run_logger", lambda: __import__("logging").getLogger("test"))
    with pytest.raises(StageFailed, match="stage 'nope' failed"):
        run_stage("nope", str(tmp_path), "test-pipeline")
    assert stage_task().fn is run_stage and stage_task().name == "dvc-stage"


def test_stage_order_to_a_target_holds_only_its_upstream():
    assert stage_order(ROOT, "shapley") == ["prepare", "pretrain", "calibrate", "supernet", "shapley"]
    assert stage_order(ROOT, "prepare") == ["prepare"]
    assert stage_order(ROOT, "sensitivity") == ["prepare", "pretrain", "calibrate", "sensitivity"]  # no supernet


def test_shapley_inputs_come_from_the_stage_command_in_dvc_yaml():
    from stages.shapley_worker import stage_inputs

    cmd = stage_command(ROOT, "shapley")
    assert cmd.startswith("python -m stages.shapley ")
    params, paths = stage_inputs(cmd, ROOT)
    assert params == ROOT / "params.yaml"
    assert (paths.supernet, paths.out, paths.results) == (ROOT / "data/supernet", ROOT / "data/shapley",
                                                          ROOT / "results/shapley")
    with pytest.raises(ValueError, match="does not run 'python -m stages.shapley'"):
        stage_inputs("python -m stages.select --params params.yaml", ROOT)
    with pytest.raises(ValueError, match="bad options"):
        stage_inputs("python -m stages.shapley --params params.yaml --out x", ROOT)


def test_flow_refuses_a_params_file_the_stages_do_not_use(tmp_path):
    from pipelines.flow import load_settings

    assert load_settings(ROOT, "params.yaml").fanout.chunks >= 1
    with pytest.raises(ValueError, match="is not the one dvc.yaml gives the stages"):
        load_settings(ROOT, "other.yaml")


def test_failed_flow_marks_the_mlflow_parent_failed_even_without_stage_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    from smpq.config import TrackingConfig
    from stages.tracking import fail_pipeline_run, stage_run

    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = fail_pipeline_run(cfg, tmp_path, "prefect-none-ran")  # no stage opened a run: the parent is created
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMPQ_PIPELINE_RUN_ID", "prefect-one-ran")
        with stage_run("prepare", cfg, tmp_path):
            pass  # a finished stage leaves its parent FINISHED
        flipped = fail_pipeline_run(cfg, tmp_path, "prefect-one-ran")
    client = MlflowClient(tracking_uri=cfg.uri)
    assert client.get_run(created).info.status == "FAILED"
    assert client.get_run(created).data.tags["smpq.pipeline_id"] == "prefect-none-ran"
    assert client.get_run(flipped).info.status == "FAILED"
    assert fail_pipeline_run(TrackingConfig(enabled=False), tmp_path, "x") is None
