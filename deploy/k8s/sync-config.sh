#!/usr/bin/env bash
# Refresh deploy/k8s/config/ from serving/ (the source of truth) after editing a config there.
set -euo pipefail
cd "$(dirname "$0")/../.."
for name in models.config monitoring.config batching.config healthcheck.sh; do
  cp "serving/${name}" "deploy/k8s/config/${name}"
done
