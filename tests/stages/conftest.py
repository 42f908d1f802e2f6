"""Stage entry points run in-process on tiny synthetic inputs; MLflow settings a stage sets are undone."""

from __future__ import annotations

import signal

import pytest

HTTP_SETTINGS = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_TRACKING_URI", "SMPQ_PIPELINE_RUN_ID", "DVC_ROOT")


@pytest.fixture(autouse=True)
def clean_tracking_env(monkeypatch):
    """Each test starts without tracking variables, and whatever a stage sets in ``os.environ`` is restored."""
    for name in HTTP_SETTINGS:
        monkeypatch.setenv(name, "x")  # registers the restore, then removes it for the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """A stage run in-process installs its stop-signal handlers; give pytest its own back."""
    from stages.tracking import STOP_SIGNALS

    saved = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}
    yield
    for name, handler in saved.items():
        signal.signal(getattr(signal, name), handler)
