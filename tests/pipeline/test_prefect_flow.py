"""The Prefect flow runs the same stages as ``dvc repro`` and produces the same outputs."""

import json
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.pipeline.conftest import make_project, run
from tests.pipeline.test_dvc_pipeline import STAGES


def locked_outputs(project) -> dict[str, str]:
    """``{stage: {out path: md5}}`` from dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {name: {o["path"]: o["md5"] for o in stage.get("outs", [])} for name, stage in lock["stages"].items()}


def without_timings(path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.endswith("seconds")}


@pytest.mark.slow  # a second full tiny pipeline plus Prefect's temporary server: ~2 minutes
def test_flow_matches_dvc_repro(reproduced, tmp_path):
    project = make_project(tmp_path / "flow_project")
    proc = run([sys.executable, "-m", "pipelines.flow", "--project", str(project)], project, timeout=900)
    returned = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert returned == json.loads((project / "results/report/metrics.json").read_text())
    flow_outputs, dvc_outputs = locked_outputs(project), locked_outputs(reproduced)
    assert set(flow_outputs) == set(dvc_outputs) == STAGES
    for stage, outs in dvc_outputs.items():
        for path, md5 in outs.items():
            if path.startswith("data/"):  # splits, checkpoints, policies: byte-identical
                assert flow_outputs[stage][path] == md5, f"{stage}: {path} differs between flow and dvc repro"
    for metrics in ("pretrain/metrics.json", "finetune/uniform/metrics.json", "report/metrics.json"):
        assert without_timings(project / "results" / metrics) == without_timings(reproduced / "results" / metrics)

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smpq")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("smpq.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags["smpq.pipeline_id"].startswith("prefect-")
    assert len(runs) == 1 + len(STAGES)
