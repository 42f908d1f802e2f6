"""Prefect flows that chain the DVC stages (no ML logic here).

Importing this package changes nothing. The entry points (``pipelines.flow.main``, ``pipelines.serve.main``)
call ``offline_environment()`` before they import Prefect, which reads its settings once, at import.
"""

import os
from pathlib import Path

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}


def offline_environment() -> None:
    """Offline-safe defaults for Prefect, MLflow and DVC (state in ``<cwd>/.prefect``, no telemetry, a startup
    timeout long enough for a slow machine: notes/orchestration.md); values already set win."""
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
