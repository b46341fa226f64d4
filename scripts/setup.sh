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
log=.venv/setup.log
echo "setting up .venv with .[${extras}] (log: $log)" >&2
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --disable-pip-version-check -e ".[${extras}]"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "scripts/setup.sh: installing .[${extras}] failed; the whole log is $log" >&2
  exit 1
fi
