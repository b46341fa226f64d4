#!/usr/bin/env bash
# Creates .venv-policy (if missing) with the Kubernetes manifest checkers tests/deploy runs: checkov (the
# policy scanner) and kubernetes-validate (offline schema validation). A venv of their own: checkov pins
# dependencies that clash with tensorflow's. Needs only Python and the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv-policy/bin/checkov ] || [ ! -x .venv-policy/bin/kubernetes-validate ]; then
  "$python" -m venv .venv-policy
  if ! .venv-policy/bin/python -m pip install --disable-pip-version-check \
        "checkov==3.3.30" "kubernetes-validate==1.37.0" >.venv-policy/setup.log 2>&1; then
    tail -n 40 .venv-policy/setup.log >&2
    echo "scripts/setup-policy.sh: installing checkov and kubernetes-validate failed" >&2
    exit 1
  fi
fi
