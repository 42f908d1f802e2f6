#!/usr/bin/env bash
# Set up if needed, lint with ruff, then run the test suite. `--all` adds the slow integration tests
# (Prefect server, DVC end to end); other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
ruff check .
if [ "${1:-}" = "--all" ]; then
  shift
  set -- -m "slow or not slow" "$@"
fi
python -m pytest "$@"
