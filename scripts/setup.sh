#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with the given extras (default: all,test).
# Needs only Python 3.10-3.12 and the package registries; no Docker, no other network.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all,test}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
