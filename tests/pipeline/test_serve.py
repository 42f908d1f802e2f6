"""The Prefect deployment: schedule checks before serving (fast), and served runs against a real Prefect
server on a free loopback port (slow): a triggered run completes with the outputs and MLflow runs; a run
whose stage fails ends FAILED in Prefect and in MLflow and keeps the earlier stages' outputs."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipelines.flow import pipeline_flow
from pipelines.serve import main as serve_main
from tests.pipeline.conftest import BIN, ROOT, make_project, tiny_env
from tests.pipeline.test_dvc_pipeline import STAGES

# ---------------------------------------------------------------------------------------------- fast checks


@pytest.fixture(autouse=True)
def keep_environment():
    """``serve_main`` sets the offline defaults in ``os.environ``; later tests must not inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def a_server(monkeypatch):
    """In-process checks of the configuration: the server check (tested below in a real process) passes."""
    monkeypatch.setattr("pipelines.serve.check_server", lambda: "http://127.0.0.1:4200/api")


def project_with(tmp_path: Path, edit=None) -> Path:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if edit:
        edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def set_schedule(**values):
    return lambda params: params["schedule"].update(values)


@pytest.mark.parametrize("edit, args, message", [
    (set_schedule(cron="every day"), [], r"schedule\.cron: 'every day' is not a valid cron expression .*'0 3 \* "),
    (set_schedule(cron="61 3 * * *"), [], r"schedule\.cron: '61 3 \* \* \*' is not a valid cron expression"),
    (set_schedule(timezone="Mars/Olympus"), [], r"schedule\.timezone: 'Mars/Olympus' is not an IANA time zone"),
    (None, ["--params", "missing.yaml"], r"missing\.yaml: params file not found"),
    (lambda p: p["schedule"].update(when="now"), [], r"schedule\.when: unknown key"),
])
def test_bad_schedule_or_params_stop_with_one_error_line(tmp_path, capsys, monkeypatch, a_server, edit, args,
                                                        message):
    monkeypatch.setattr(pipeline_flow(), "serve", lambda *a, **k: pytest.fail("served despite a bad configuration"))
    project = project_with(tmp_path, edit)
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--project", str(project), *args])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err


def test_a_folder_without_dvc_yaml_is_rejected(tmp_path, capsys, a_server):
    with pytest.raises(SystemExit):
        serve_main(["--project", str(tmp_path)])
    assert "no dvc.yaml here" in capsys.readouterr().err


def test_good_configuration_serves_on_the_cron_schedule_one_run_at_a_time(tmp_path, monkeypatch, a_server):
    seen = {}
    monkeypatch.setattr(pipeline_flow(), "serve", lambda **kwargs: seen.update(kwargs))
    project = project_with(tmp_path, set_schedule(cron="30 2 * * 1-5", timezone="Europe/Berlin"))
    serve_main(["--project", str(project)])
    assert seen["name"] == "smpq" and seen["global_limit"] == 1
    assert seen["parameters"] == {"project": str(project.resolve()), "params": "params.yaml"}
    (schedule,) = seen["schedules"]
    assert schedule.cron == "30 2 * * 1-5" and schedule.timezone == "Europe/Berlin"


@pytest.mark.parametrize("api_url, message", [
    (None, r"^error: PREFECT_API_URL is not set: .*prefect server start --host 127\.0\.0\.1"),
    ("http://127.0.0.1:{port}/api", r"^error: PREFECT_API_URL=http://127\.0\.0\.1:\d+/api: no Prefect server "
                                    r"there, .*unreachable.*prefect server start"),
])
def test_serve_without_a_server_stops_with_one_error_line_within_10_s(tmp_path, api_url, message):
    """As a user runs it: a fresh process, a good configuration, no server (unset, or nothing listening)."""
    project = project_with(tmp_path)
    env = tiny_env(tmp_path)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url.format(port=free_port())
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.serve", "--project", str(project)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), proc.stderr
    assert elapsed < 10, f"{elapsed:.1f} s"


# ------------------------------------------------------------------------------------ served runs (slow)

SMALLER = {  # on top of conftest.TINY: the served run only has to show that every stage ran
    "data": {"train_size": 1500, "search_val_size": 300, "test_size": 500},
    "pretrain": {"epochs": 1},
    "supernet": {"samples_per_epoch": 256},
    "shapley": {"batch_size": 128, "max_permutations": 2, "antithetic": False},  # 2 chunks for 2 workers
    "fanout": {"runner": "dask", "workers": 2, "chunks": 2},  # the Dask path inside a served flow run
    "finetune": {"samples_per_epoch": 256},
}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_for(check, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"gave up waiting {timeout:.0f} s for {what}")


def start(cmd: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """A process in its own process group (so stopping it stops everything it started)."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def shrink(project: Path) -> Path:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in SMALLER.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A Prefect server on a free loopback port and ``python -m pipelines.serve`` of a tiny project."""
    base = tmp_path_factory.mktemp("served")
    project = shrink(make_project(base / "project"))
    url = f"http://127.0.0.1:{free_port()}/api"
    env = tiny_env(project) | {"PREFECT_HOME": str(base / "prefect_home"), "PREFECT_API_URL": url,
                               "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    port = url.rsplit(":", 1)[1].split("/")[0]
    procs = [start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port], base, env,
                   base / "server.log")]
    try:
        wait_for(lambda: api(url, "/health"), 120, "the Prefect server")
        procs.append(start([sys.executable, "-m", "pipelines.serve", "--project", "."], project, env,
                           base / "serve.log"))
        wait_for(lambda: api(url, "/deployments/name/smpq-pipeline/smpq"), 120, "the deployment")
        yield {"url": url, "env": env, "project": project, "base": base}
    finally:
        for proc in reversed(procs):
            stop(proc)


def trigger(served, *extra: str) -> str:
    """``prefect deployment run 'smpq-pipeline/smpq'`` (the README's command); returns the flow run id."""
    proc = subprocess.run([str(BIN / "prefect"), "deployment", "run", "smpq-pipeline/smpq", *extra],
                          cwd=served["base"], env=served["env"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout).group(1)


def final_state(served, run_id: str, timeout: float) -> dict:
    def finished():
        run = api(served["url"], f"/flow_runs/{run_id}")
        return run if run["state"]["type"] in TERMINAL else None
    try:
        return wait_for(finished, timeout, f"flow run {run_id}", interval=5)
    except TimeoutError:
        raise AssertionError((served["base"] / "serve.log").read_text()[-5000:]) from None


def pipeline_runs(project: Path, run_id: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smpq")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`smpq.pipeline_id` = 'prefect-{run_id}'")
    parents = [r for r in runs if r.data.tags.get("smpq.role") == "pipeline"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


@pytest.mark.slow  # a Prefect server, the serving process and one tiny pipeline run: ~4 min
def test_triggered_deployment_runs_the_pipeline(served):
    run_id = trigger(served)
    run = final_state(served, run_id, timeout=1200)
    log = (served["base"] / "serve.log").read_text()
    assert run["state"]["type"] == "COMPLETED", log[-5000:]
    project = served["project"]
    assert "| smpq |" in (project / "results/report/report.md").read_text()
    metrics = json.loads((project / "results/report/metrics.json").read_text())
    assert {"budget", "smpq", "dmpq", "uniform"} <= set(metrics) and 0 < metrics["smpq"]["top1"] <= 1
    parent, children = pipeline_runs(project, run_id)
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == sorted(STAGES)
    assert all(r.info.status == "FINISHED" for r in children)
    assert f"MLflow parent run: {parent.info.run_id}" in log
    artifacts = api(served["url"], "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    (artifact,) = [a for a in artifacts if a["key"] == "smpq-run"]
    assert parent.info.run_id in artifact["data"] and "results/report/report.md" in artifact["data"]
    assert "file://" not in artifact["data"] and "| smpq.top1 |" in artifact["data"]  # plain paths, DVC's names
    status = subprocess.run(["dvc", "status", "--json"], cwd=project, env=served["env"], capture_output=True, text=True)
    assert json.loads(status.stdout) == {}  # every stage recorded in dvc.lock, the fanned-out shapley included


@pytest.mark.slow  # a second tiny project whose pretrain stage cannot start: ~1 min on the same server
def test_failing_stage_fails_the_flow_run_and_the_mlflow_parent(served):
    project = make_project(served["base"] / "broken")
    (project / "stages/inputs.py").unlink()  # a declared dependency of pretrain: DVC refuses to run it
    run_id = trigger(served, "--params", json.dumps({"project": str(project)}))
    run = final_state(served, run_id, timeout=600)
    assert run["state"]["type"] == "FAILED"
    parent, children = pipeline_runs(project, run_id)
    assert parent.info.status == "FAILED"  # pretrain died before it could open (and fail) its own run
    assert [r.info.run_name for r in children] == ["prepare"] and children[0].info.status == "FINISHED"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare"}  # the stage before the failure keeps its recorded outputs
    assert (project / "data/prepared/card.json").is_file()
