"""The Prefect flow runs the same stages as ``dvc repro`` and produces the same outputs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.pipeline.conftest import ROOT, make_project, run
from tests.pipeline.test_dvc_pipeline import STAGES

# Run in a fresh process: imports the entry points, checks that importing set no default, replaces the
# Prefect flow by a probe, calls one ``main`` and prints what Prefect's settings were when the flow ran.
PROBE = textwrap.dedent("""
    import json, os, sys
    from pipelines import OFFLINE_DEFAULTS, flow, serve
    assert not {"PREFECT_HOME", *OFFLINE_DEFAULTS} & set(os.environ), "importing the flows set the defaults"
    assert not {"prefect", "mlflow"} & {m.split(".")[0] for m in sys.modules}, "imported Prefect or MLflow"

    def settings(**kwargs):
        from prefect.settings import get_current_settings
        s = get_current_settings()
        print(json.dumps({"home": str(s.home), "timeout": s.server.ephemeral.startup_timeout_seconds,
                          "analytics": s.server.analytics_enabled, "dvc": os.environ.get("DVC_NO_ANALYTICS")}))
        return {}

    class Probe:
        serve = staticmethod(settings)
        __call__ = staticmethod(settings)

    flow.pipeline_flow = Probe  # serve imports it from pipelines.flow when it serves
    serve.check_server = lambda: "http://127.0.0.1:4200/api"  # the server check has its own test (test_serve)
    {"flow": flow, "serve": serve}[sys.argv[1]].main(sys.argv[2:])
""")


@pytest.mark.parametrize("entry", ["flow", "serve"])
def test_entry_points_set_the_offline_environment_before_prefect_reads_it(entry, tmp_path):
    """Prefect reads its settings once, at import: ``main`` sets the defaults first, importing sets nothing."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "DVC_")) and k != "DO_NOT_TRACK"}
    proc = subprocess.run([sys.executable, "-c", PROBE, entry, "--project", str(ROOT)], cwd=tmp_path,
                          env=env | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[0])
    assert seen == {"home": str(tmp_path / ".prefect"), "timeout": 120, "analytics": False, "dvc": "1"}


def locked_outputs(project) -> dict[str, str]:
    """``{stage: {out path: md5}}`` from dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {name: {o["path"]: o["md5"] for o in stage.get("outs", [])} for name, stage in lock["stages"].items()}


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
            # splits, checkpoints, policies, and the results: metrics, curves, report (no timings in them)
            assert flow_outputs[stage][path] == md5, f"{stage}: {path} differs between flow and dvc repro"

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smpq")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("smpq.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags["smpq.pipeline_id"].startswith("prefect-")
    assert len(runs) == 1 + len(STAGES)
