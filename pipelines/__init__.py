"""Prefect flows that chain the DVC stages (no ML logic here).

Importing this package changes nothing. The entry points (``pipelines.flow.main``, ``pipelines.serve.main``)
call ``offline_environment()`` (through ``entry_args``) before they import Prefect, which reads its settings
once, at import.
"""

import argparse
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


def entry_args(prog: str, description: str, argv: list[str] | None) -> argparse.Namespace:
    """An entry point's ``--project`` and ``--params``, parsed; then ``offline_environment()``, so the caller
    can import Prefect."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--project", default=".", help="project folder holding dvc.yaml (default: .)")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to the project")
    args = parser.parse_args(argv)
    offline_environment()
    return args
