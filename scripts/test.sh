#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/client -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all,test
# A real compose implementation, to validate docker-compose.yml without a Docker engine.
if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  else
    echo "scripts/test.sh: docker-compose is missing; install Debian's docker-compose package (needs root)" >&2
    exit 1
  fi
fi
exec .venv/bin/python -m pytest "$@"
