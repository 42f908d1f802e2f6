"""MLflow run lifecycle of a stage: stale runs of dead processes end FAILED, stop signals end runs KILLED,
an unreachable store fails fast (or warns with ``tracking.required: false``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from smpq.config import TrackingConfig
from smpq.errors import TrackingUnavailable

ROOT = Path(__file__).resolve().parents[2]


def sqlite_cfg(tmp_path: Path, **kwargs) -> TrackingConfig:
    return TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", **kwargs)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_starting_stage_ends_its_own_stale_runs_failed_with_the_reason(tmp_path):
    from mlflow.tracking import MlflowClient

    from stages.lifecycle import HOST_TAG, PID_TAG, process_tags
    from stages.tracking import END_TAG, stage_run

    cfg = sqlite_cfg(tmp_path)
    client = MlflowClient(tracking_uri=cfg.uri)
    experiment = client.create_experiment("smpq", artifact_location=(tmp_path / "mlruns").as_uri())
    here, gone = process_tags(), dead_pid()
    week_ago = int((time.time() - 7 * 24 * 3600) * 1000)

    def running(stage, start_time=None, **tags):
        return client.create_run(experiment, start_time=start_time,
                                 tags={"smpq.stage": stage, **here, **tags}).info.run_id

    killed = running("pretrain", **{PID_TAG: str(gone)})
    forgotten = running("pretrain", start_time=week_ago, **{HOST_TAG: "another-host"})
    live = running("pretrain")  # this process: alive and recent
    elsewhere = running("pretrain", **{HOST_TAG: "another-host", PID_TAG: str(gone)})  # cannot be checked: recent
    other_stage = running("finetune", **{PID_TAG: str(gone)})  # another stage's run is its own business
    with stage_run("pretrain", cfg, tmp_path):
        pass
    status = {run: client.get_run(run).info.status for run in (killed, forgotten, live, elsewhere, other_stage)}
    assert status == {killed: "FAILED", forgotten: "FAILED", live: "RUNNING", elsewhere: "RUNNING",
                      other_stage: "RUNNING"}
    assert client.get_run(killed).data.tags[END_TAG] == (
        f"stale: process {gone} on {here[HOST_TAG]} is gone (killed or crashed while running)")
    assert client.get_run(forgotten).data.tags[END_TAG].startswith("stale: RUNNING for 168.0 h, longer than "
                                                                   "tracking.stale_hours (48)")


def test_a_reused_pid_is_not_the_process_that_opened_the_run():
    from stages.lifecycle import HOST_TAG, PID_START_TAG, PID_TAG, process_tags, stale_reason

    tags = {**process_tags(), PID_START_TAG: "1"}  # this pid, but a process started at another time
    assert stale_reason(tags, int(time.time() * 1000), 48.0).startswith(f"stale: process {tags[PID_TAG]} on "
                                                                        f"{tags[HOST_TAG]} is gone")
    assert stale_reason(process_tags(), int(time.time() * 1000), 48.0) is None


def test_an_unreachable_server_fails_fast_naming_the_uri_or_warns_when_not_required(tmp_path, monkeypatch, caplog):
    from stages.tracking import stage_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err, stage_run("select", TrackingConfig(), tmp_path):
        pass
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert message.startswith("tracking store http://127.0.0.1:9 cannot be used (") and "\n" not in message
    assert message.endswith("start the tracking server or point MLFLOW_TRACKING_URI / tracking.uri at a reachable "
                            "one, or set tracking.required: false to run untracked")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    with stage_run("select", TrackingConfig(required=False, retries=0), tmp_path) as tracker:
        tracker.log_metrics({"x": 1.0})  # untracked: a no-op
    assert "running untracked (tracking.required: false)" in caplog.text


def test_a_corrupt_tracking_database_is_one_line_with_the_fix(tmp_path):
    from stages.tracking import stage_run

    (tmp_path / "mlflow.db").write_bytes(os.urandom(4096))
    with pytest.raises(TrackingUnavailable) as err, stage_run("select", sqlite_cfg(tmp_path), tmp_path):
        pass
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"tracking store sqlite:///{tmp_path / 'mlflow.db'} cannot "
                                                      "be used (")
    assert f"move the damaged database aside (mv {tmp_path / 'mlflow.db'} <name>.bad" in message


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from smpq.config import TrackingConfig
    from stages.tracking import stage_run, stop_on_signals
    stop_on_signals()
    root = Path(sys.argv[1])
    with stage_run("pretrain", TrackingConfig(uri=f"sqlite:///{root / 'mlflow.db'}"), root) as tracker:
        print(tracker.run_id, flush=True)
        time.sleep(600)
""")


def open_run_in_child(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    run_id = proc.stdout.readline().strip()
    assert run_id, "the child did not open its run"
    return proc, run_id


@pytest.mark.slow
def test_after_kill_9_of_a_running_stage_the_next_run_marks_the_stale_run_failed(tmp_path):
    from mlflow.tracking import MlflowClient

    from stages.tracking import END_TAG, stage_run

    proc, run_id = open_run_in_child(tmp_path)
    proc.kill()  # SIGKILL: nothing in the child runs
    proc.wait()
    cfg = sqlite_cfg(tmp_path)
    client = MlflowClient(tracking_uri=cfg.uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    with stage_run("pretrain", cfg, tmp_path):
        pass
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[END_TAG].startswith(f"stale: process {proc.pid} on ")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stage_stopped_by_a_catchable_signal_ends_its_run_killed(tmp_path, signum):
    from mlflow.tracking import MlflowClient

    from stages.tracking import END_TAG

    proc, run_id = open_run_in_child(tmp_path)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 128 + signum
    run = MlflowClient(tracking_uri=sqlite_cfg(tmp_path).uri).get_run(run_id)
    assert (run.info.status, run.data.tags[END_TAG]) == ("KILLED", f"signal {signal.Signals(signum).name}")
