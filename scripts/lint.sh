#!/usr/bin/env bash
# The linters, as CI (scripts/test.sh) and .pre-commit-config.yaml run them; settings in pyproject.toml.
# Needs .venv with the test extra (scripts/setup.sh). Under a minute here (caches in .venv/).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
echo "lint: ruff check, ruff format --check, mypy" >&2
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/mypy"
