#!/usr/bin/env bash
# Set up if needed, then run the whole pipeline on the defaults of params.yaml (dvc repro).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
dvc repro "$@"
cat results/report/report.md
