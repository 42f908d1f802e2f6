"""MLflow tracking for stages: one parent run per pipeline execution, one child run per stage.

Stages run as separate processes (under ``dvc repro`` or the Prefect flow), so they are grouped by a
pipeline id: ``SMPQ_PIPELINE_RUN_ID`` when the caller sets it (the Prefect flow does), otherwise the
``dvc repro`` process that started the stage, otherwise a fresh id (a stage run by hand). The parent
run carries the tag ``smpq.pipeline_id``; children point at it with ``mlflow.parentRunId``
(explicit ids, not the thread-local active run: see notes/orchestration.md).

Lifecycle (docs/failures.md): a run records the host, pid and pid start time that opened it; a stage that
starts ends its own stage's RUNNING runs whose process is gone (or that are older than
``tracking.stale_hours``) as FAILED with the tag ``smpq.end_reason``. A stage stopped by a signal ends its run
KILLED. The HTTP timeout and retries of the client come from ``tracking.timeout_s``/``retries``; a store
that cannot be reached or read is one ``TrackingUnavailable`` error, or a warning with ``required: false``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smpq.config import TrackingConfig
from smpq.errors import TrackingUnavailable
from stages.lifecycle import STAGE_TAG, end_stale_runs, process_tags
from stages.run_info import EXPERIMENT_TAGS

log = logging.getLogger(__name__)

PIPELINE_ENV = "SMPQ_PIPELINE_RUN_ID"
PIPELINE_TAG = "smpq.pipeline_id"
ROLE_TAG = "smpq.role"
END_TAG = "smpq.end_reason"  # why the run ended other than FINISHED (signal, stale process)
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")  # catchable, and stop by default


class StageKilled(SystemExit):
    """A stop signal arrived: unwinds the stage (its run ends KILLED) and exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def stop_on_signals() -> None:
    """Turn every catchable stop signal into ``StageKilled`` (SIGKILL cannot be caught: see ``end_stale_runs``)."""
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), _raise_killed)


def _raise_killed(signum: int, frame: object) -> None:
    raise StageKilled(signum)


def configure_client(cfg: TrackingConfig) -> None:
    """MLflow 3's HTTP settings from ``tracking`` (read by mlflow.utils.rest_utils on every request): a bounded
    timeout per request and a bounded number of retries, backoff 1 s doubling."""
    os.environ.update(MLFLOW_HTTP_REQUEST_TIMEOUT=str(cfg.timeout_s), MLFLOW_HTTP_REQUEST_MAX_RETRIES=str(cfg.retries),
                      MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", MLFLOW_HTTP_REQUEST_BACKOFF_JITTER="0.5")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def tracking_uri(cfg: TrackingConfig, root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` > ``tracking.uri`` > a SQLite file at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or f"sqlite:///{root.resolve() / 'mlflow.db'}"


def pipeline_id() -> str:
    """The id that groups this stage with the other stages of the same pipeline execution."""
    return os.environ.get(PIPELINE_ENV) or _dvc_ancestor_id() or f"standalone-{uuid.uuid4().hex[:12]}"


def _dvc_ancestor_id() -> str | None:
    """``dvc-<pid>-<start time>`` of the nearest ancestor process running ``dvc repro``/``dvc exp``."""
    pid = os.getppid()
    for _ in range(8):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        words = [Path(w.decode(errors="replace")).name for w in cmdline if w]
        if "dvc" in words and ({"repro", "exp"} & set(words)):
            return f"dvc-{pid}-{stat[19]}"  # field 22 (starttime) makes a reused pid unique
        pid = int(stat[1])  # field 4: parent pid
        if pid <= 1:
            return None
    return None


class Tracker:
    """Logs to one MLflow run through explicit ids (safe in threads and subprocesses).

    A store that fails mid-stage (server gone, database locked or damaged) is one ``TrackingUnavailable``
    error naming the store and the fix; with ``required: false`` it is one warning, and the stage goes on
    untracked."""

    def __init__(self, client: Any, run_id: str, uri: str = "", required: bool = True):
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self.required = required
        self.lost = False  # the store failed and tracking.required is false: further calls are no-ops

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._record(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, (int, float))]
        if items:
            self._record(self.client.log_batch, self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._record(self.client.log_artifacts, self.run_id, str(path), artifact_path)
        elif path.exists():
            self._record(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """A JSON/YAML artifact straight from memory (e.g. the α table of one epoch)."""
        self._record(self.client.log_dict, self.run_id, data, artifact_file)

    def _record(self, call: Any, *args: Any, **kwargs: Any) -> None:
        """``call(*args, **kwargs)``; a store failure is one error (or, not required, one warning)."""
        if self.lost:
            return
        try:
            call(*args, **kwargs)
        except _store_errors() as err:
            problem = unavailable(self.uri, err)
            if self.required:
                raise TrackingUnavailable(f"{problem}, or set tracking.required: false to run untracked") from None
            log.warning("%s; the rest of this stage runs untracked (tracking.required: false)", problem)
            self.lost = True


class NullTracker(Tracker):
    """Tracking switched off (``tracking.enabled: false``): every call is a no-op."""

    def __init__(self) -> None:
        super().__init__(client=None, run_id="")

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, data: Any, artifact_file: str) -> None:
        pass


@contextmanager
def stage_run(stage: str, cfg: TrackingConfig, root: Path) -> Iterator[Tracker]:
    """A child run named ``stage`` under this pipeline execution's parent run; FAILED on an exception,
    KILLED on a stop signal. An unreachable store raises ``TrackingUnavailable`` (``required: false``: warns
    and yields a ``NullTracker``)."""
    opened = _open_stage_run(stage, cfg, root) if cfg.enabled else None
    if opened is None:
        yield NullTracker()
        return
    client, run_id, parent = opened
    try:
        yield Tracker(client, run_id, tracking_uri(cfg, root), cfg.required)
    except BaseException as err:
        status, reason = ("KILLED", f"signal {signal.Signals(err.signum).name}") if isinstance(err, StageKilled) \
            else ("KILLED", "interrupted") if isinstance(err, KeyboardInterrupt) \
            else ("FAILED", f"{type(err).__name__}: {str(err)[:200]}")
        _end(client, run_id, status, reason)
        _end(client, parent, "FAILED", f"stage {stage}: {reason}")
        raise
    _end(client, run_id, "FINISHED")
    _end(client, parent, "FINISHED")


def _open_stage_run(stage: str, cfg: TrackingConfig, root: Path) -> tuple[Any, str, str] | None:
    """(client, run id, parent id) of a new stage run, after ending this stage's stale runs."""
    configure_client(cfg)
    uri = tracking_uri(cfg, root)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment(client, cfg.experiment, root)
        end_stale_runs(client, experiment_id, stage, cfg.stale_hours, _end)
        group = pipeline_id()
        parent = _parent_run(client, experiment_id, group)
        run = client.create_run(experiment_id, run_name=stage, tags={
            "mlflow.parentRunId": parent, PIPELINE_TAG: group, ROLE_TAG: "stage", STAGE_TAG: stage,
            **process_tags()})
    except _store_errors() as err:
        problem = unavailable(uri, err)
        if cfg.required:
            raise TrackingUnavailable(f"{problem}, or set tracking.required: false to run untracked") from None
        log.warning("%s; running untracked (tracking.required: false)", problem)
        return None
    log.info("MLflow: stage run %s under pipeline run %s (%s)", run.info.run_id, parent, group)
    return client, run.info.run_id, parent


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a tracking store that cannot be reached or read raises (MLflow wraps most, not all, of them)."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    return MlflowException, RequestException, SQLAlchemyError, OSError


def unavailable(uri: str, err: BaseException) -> str:
    """One line: which store failed, the first line of why, and the fix."""
    text = " ".join(str(err).split()).split(" [SQL:")[0]  # SQLAlchemy appends the statement and a link
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)  # the socket error under MLflow's and urllib3's wrappers
    why = found.group(1).strip() if found else text[:240]
    if uri.startswith("sqlite:"):
        fix = (f"move the damaged database aside (mv {uri.removeprefix('sqlite:///')} "
               "<name>.bad; a new one is created) or point MLFLOW_TRACKING_URI / tracking.uri at a working store")
    else:
        fix = "start the tracking server or point MLFLOW_TRACKING_URI / tracking.uri at a reachable one"
    return f"tracking store {uri} cannot be used ({type(err).__name__}: {why}); {fix}"


def _end(client: Any, run_id: str, status: str, reason: str | None = None) -> None:
    """End a run; a store that fails now only costs the record, never the stage's own result or error."""
    try:
        if reason is not None:
            client.set_tag(run_id, END_TAG, reason)
        client.set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001 - the stage's outcome must not depend on its record
        log.warning("MLflow: could not end run %s as %s: %s", run_id, status, " ".join(str(err).split())[:200])


def _experiment(client: Any, name: str, root: Path) -> str:
    """The experiment's id, creating it with artifacts under ``<root>/mlruns`` (not the cwd)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        for key, value in EXPERIMENT_TAGS.items():  # experiments made before the tag existed get it too
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=(root.resolve() / "mlruns").as_uri(),
                                    tags=EXPERIMENT_TAGS)


def _existing_parent(client: Any, experiment_id: str, group: str) -> str | None:
    """The id of pipeline execution ``group``'s parent run, if one exists."""
    runs = client.search_runs([experiment_id], max_results=1, filter_string=(
        f"tags.`{PIPELINE_TAG}` = '{group}' and tags.`{ROLE_TAG}` = 'pipeline'"))
    return runs[0].info.run_id if runs else None


def _parent_run(client: Any, experiment_id: str, group: str) -> str:
    """The parent run of pipeline execution ``group``, created by the first stage that asks."""
    if parent := _existing_parent(client, experiment_id, group):
        return parent
    run = client.create_run(experiment_id, run_name=f"pipeline {group}",
                            tags={PIPELINE_TAG: group, ROLE_TAG: "pipeline"})
    return run.info.run_id


def fail_pipeline_run(cfg: TrackingConfig, root: Path, group: str) -> str | None:
    """Mark pipeline execution ``group``'s parent run FAILED (created if no stage got as far as opening one)."""
    if not cfg.enabled:
        return None
    configure_client(cfg)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(cfg, root))
    parent = _parent_run(client, _experiment(client, cfg.experiment, root), group)
    client.set_terminated(parent, "FAILED")
    return parent


def find_parent_run(cfg: TrackingConfig, root: Path, group: str) -> str | None:
    """The parent run id of pipeline execution ``group`` (used by the Prefect flow to report it)."""
    configure_client(cfg)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(cfg, root))
    experiment = client.get_experiment_by_name(cfg.experiment)
    return None if experiment is None else _existing_parent(client, experiment.experiment_id, group)
