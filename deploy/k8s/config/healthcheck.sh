#!/usr/bin/env bash
# Docker healthcheck for tensorflow_model_server (docker-compose.yml runs: bash /models-config/healthcheck.sh).
# Healthy (exit 0) only when GET /v1/models/<name> answers 200 with an AVAILABLE version, for every model.
# The tensorflow/serving runtime image has bash but neither curl nor wget, so this speaks HTTP/1.0 over
# bash's /dev/tcp. Environment: REST_API_PORT (8501), HEALTHCHECK_MODELS ("retrieval similar_movies"),
# HEALTHCHECK_TIMEOUT seconds per read (3).
set -u
port="${REST_API_PORT:-8501}"
models="${HEALTHCHECK_MODELS:-retrieval similar_movies}"
read_timeout="${HEALTHCHECK_TIMEOUT:-3}"

for model in $models; do
  if ! exec 3<>"/dev/tcp/127.0.0.1/${port}"; then
    echo "unhealthy: nothing listens on REST port ${port}"
    exit 1
  fi
  printf 'GET /v1/models/%s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "${model}" >&3
  response=""
  while IFS= read -r -t "${read_timeout}" line || [[ -n "${line}" ]]; do
    response+="${line}"$'\n'
  done <&3
  exec 3<&-
  status_line="${response%%$'\n'*}"
  status_line="${status_line%$'\r'}"
  if [[ ! "${status_line}" =~ ^HTTP/1\.[01]\ 200 ]]; then
    echo "unhealthy: ${model}: ${status_line:-no answer}"
    exit 1
  fi
  if [[ ! "${response}" =~ \"state\"[[:space:]]*:[[:space:]]*\"AVAILABLE\" ]]; then
    echo "unhealthy: ${model}: no AVAILABLE version"
    exit 1
  fi
done
echo "healthy: ${models} AVAILABLE"
