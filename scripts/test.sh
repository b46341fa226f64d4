#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, runs the linters (scripts/lint.sh), then the whole
# test suite. Extra arguments go to pytest (e.g. scripts/test.sh tests/client -x).
#   --fast     the edit-test lane, which needs only Python: no slow, engine, root or tools tests, no reinstall unless
#              pyproject.toml changed, and none of the rest of the setup (.venv-policy, Debian packages, kubectl)
#   --no-lint  skip the linters
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0 lint=1 args=()
for arg in "$@"; do
  case "$arg" in
    --fast) fast=1 ;;
    --no-lint) lint=0 ;;
    *) args+=("$arg") ;;
  esac
done
# Disk: a whole run on a fresh machine writes about 10 GB (the venvs, the engine's images and build
# cache under /tmp/dockerd, the tests' stores). With less free, tests fail one by one on "No space left on
# device"; say so first.
need_gb=12
if [ "$fast" = 0 ]; then
  # the project's and the temporary folder's file systems, each once
  df -Pk . "${TMPDIR:-/tmp}" | awk 'NR > 1 { print int($4 / 1048576), $6 }' | sort -u -k2,2 |
    while read -r free_gb mount; do
      if [ "$free_gb" -lt "$need_gb" ]; then
        echo "scripts/test.sh: warning: $free_gb GB free on $mount; a whole run needs about $need_gb GB:" \
          "free some (docker system prune, old /tmp/dockerd) or expect 'No space left on device'" >&2
      fi
    done
fi
# The fast lane reinstalls only when pyproject.toml changed since the last setup (a pip pass costs ~7 s here).
if [ "$fast" = 0 ] || [ ! -x .venv/bin/python ] || [ ! .venv/setup.log -nt pyproject.toml ]; then
  scripts/setup.sh all,test
fi
if [ "$lint" = 1 ]; then
  scripts/lint.sh
fi
if [ "$fast" = 1 ]; then
  exec .venv/bin/python -m pytest -m "not slow and not engine and not root and not tools" "${args[@]}"
fi
# The rest is for the tests the fast lane leaves out (marked engine, root and tools where they are defined).
# checkov and kubernetes-validate for tests/deploy, in .venv-policy (their pins clash with tensorflow's).
scripts/setup-policy.sh
# Debian's Docker engine (docker.io: dockerd, which the container tests start as root when no engine answers),
# docker-compose 1.29 (what those tests run the compose files with), debootstrap (the stand-in for the Python
# base image when no registry is reachable); iproute2 and util-linux (ip, unshare, nsenter) for the
# healthcheck tests, which run a canned server in a private network namespace; nginx-light (nginx with its
# TLS, HTTP/2 and grpc_pass modules) for tests/client/test_tls.py, the TLS terminator and bearer-token check in
# front of the local server, as in front of TF Serving (docs/container.md).
missing=()
command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${missing[*]}; install these Debian packages (needs root)" >&2
    exit 1
  fi
fi
# kubectl (its built-in kustomize renders deploy/k8s/ in tests/deploy): these machines come with it (1.32);
# Debian 12 packages none.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "scripts/test.sh: kubectl is missing (tests/deploy renders deploy/k8s with kubectl kustomize)" >&2
  exit 1
fi
exec .venv/bin/python -m pytest "${args[@]}"
