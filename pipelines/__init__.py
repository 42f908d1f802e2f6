"""Prefect flows that chain the DVC stages (no ML logic here).

Importing this package sets Prefect's offline-safe defaults before Prefect itself is imported:
state in ``<project>/.prefect`` (never the user's home), no telemetry, and a startup timeout long
enough for the temporary local server on a slow machine (notes/orchestration.md). Values already
set in the environment win.
"""

import os
from pathlib import Path

_DEFAULTS = {
    "PREFECT_HOME": str(Path.cwd() / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
