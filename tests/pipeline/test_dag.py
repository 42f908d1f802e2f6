"""The flow's stage list comes from dvc.yaml, in dependency order; a failing stage fails its task."""

from pathlib import Path

import pytest

from pipelines.dag import metrics_files, stage_order
from pipelines.flow import StageFailed, run_stage

ROOT = Path(__file__).resolve().parents[2]


def test_stage_order_follows_dvc_yaml_dependencies():
    order = stage_order(ROOT)
    assert order[:2] == ["prepare", "pretrain"] and order[-1] == "report"
    assert order.index("calibrate") < order.index("supernet") < order.index("shapley") < order.index("select")
    assert all(order.index("select") < order.index(f"finetune@{m}") for m in ("smpq", "dmpq", "uniform"))
    assert len(order) == len(set(order))


def test_metrics_files_come_from_dvc_yaml():
    assert metrics_files(ROOT, "report") == [ROOT / "results/report/metrics.json"]
    with pytest.raises(KeyError, match="no stage 'nope'"):
        metrics_files(ROOT, "nope")


def test_failing_stage_raises_with_its_error(tmp_path, monkeypatch):
    monkeypatch.setattr("pipelines.flow.get_run_logger", lambda: __import__("logging").getLogger("test"))
    with pytest.raises(StageFailed, match="stage 'nope' failed"):
        run_stage.fn("nope", str(tmp_path), "test-pipeline")
