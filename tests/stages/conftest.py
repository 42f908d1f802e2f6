"""Stage entry points run in-process on tiny synthetic inputs; MLflow settings a stage sets are undone."""

from __future__ import annotations

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
