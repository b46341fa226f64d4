#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/client -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all,test
# Debian's docker-compose (a real compose implementation, to validate docker-compose.yml without a Docker
# engine); iproute2 and util-linux (ip, unshare, nsenter) for the tests that run the compose command line
# in its own mount and network namespace.
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${missing[*]}; install these Debian packages (needs root)" >&2
    exit 1
  fi
fi
exec .venv/bin/python -m pytest "$@"
