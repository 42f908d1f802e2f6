#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: .venv with SMPQ and its pinned dependencies, and the
# Debian package of Fashion-MNIST when apt is available. Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.smpq-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  { $sudo apt-get update -q && $sudo apt-get install -y -q dataset-fashion-mnist; } \
    || echo "warning: could not install dataset-fashion-mnist; set data.root in params.yaml" >&2
fi

if [ ! -d .dvc ]; then
  echo "error: run this inside the SMPQ git checkout (.dvc/ is missing)" >&2
  exit 1
fi
