#!/usr/bin/env bash
# The main job on a machine with no Docker and no internet beyond the package registries:
#   set up .venv -> train, evaluate, validate and publish both models into ./models -> serve them with the
#   local tensorflow_model_server stand-in -> print recommendations for user "42" over REST and gRPC.
#
# Data: MOVIELENS=/path/to/ml-100k[.zip] (a GroupLens download) if set; otherwise MovieLens 100K through
# tensorflow-datasets; if that cannot be downloaded, synthetic MovieLens-shaped data, with a loud notice
# (the manifest of every version records its data source).
# Knobs (environment): MODEL_STORE (default ./models), GRPC_PORT (8500), REST_PORT (8501),
# EXPORT_ARGS (extra flags for `python -m export`, e.g. "--index brute_force"; "--preset seed --no-gate": the
# seed preset does not beat popularity, so the gate would refuse it).
set -euo pipefail
cd "$(dirname "$0")/.."
store="$(realpath -m "${MODEL_STORE:-models}")"  # absolute: TF Serving configs need absolute base paths
grpc_port="${GRPC_PORT:-8500}"
rest_port="${REST_PORT:-8501}"

scripts/setup.sh all
py=.venv/bin/python

if [ -n "${MOVIELENS:-}" ]; then
  data="$MOVIELENS"
elif "$py" -c 'import export.data as d; d.load("tfds")' >/dev/null 2>/tmp/demo-tfds.$$; then
  data=tfds
else
  echo "==================================================================================" >&2
  echo "  NOTICE: MovieLens 100K could not be loaded through tensorflow-datasets:" >&2
  sed 's/^/    /' /tmp/demo-tfds.$$ | tail -n 1 >&2
  echo "  This run uses SYNTHETIC MovieLens-shaped data; its figures say nothing about" >&2
  echo "  MovieLens. For real data: MOVIELENS=/path/to/ml-100k[.zip] $0" >&2
  echo "==================================================================================" >&2
  data=synthetic
fi
rm -f /tmp/demo-tfds.$$

# shellcheck disable=SC2086  # EXPORT_ARGS is a list of flags
"$py" -m export --data "$data" --model-base-path "$store" ${EXPORT_ARGS:-}

# The container's models.config names /models/<name>; here the store is $store.
config="$store/models.local.config"
sed "s#\"/models/#\"$store/#" serving/models.config > "$config"

"$py" -m serving --port="$grpc_port" --rest_api_port="$rest_port" --model_config_file="$config" \
  --monitoring_config_file=serving/monitoring.config > "$store/serving.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

# Wait for both models, as long as the server is alive (it opens its ports once they are AVAILABLE).
ready='import retrieval_client as rc, sys; rc.connect(sys.argv[1]).wait_until_available(timeout=2)'
until "$py" -c "$ready" "http://localhost:$rest_port" 2>/dev/null; do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "the local server stopped; its log ($store/serving.log):" >&2; tail -n 30 "$store/serving.log" >&2; exit 1
  fi
  sleep 1
done
echo "--- user 42, over REST"
"$py" -m retrieval_client recommend 42 --url "http://localhost:$rest_port"
echo "--- user 42, over gRPC"
"$py" -m retrieval_client recommend 42 --url "grpc://localhost:$grpc_port"
# Similar movies to user 42's first recommendation (a title the catalogue surely has, real or synthetic).
title=$("$py" -m retrieval_client recommend 42 -k 1 --json --url "http://localhost:$rest_port" |
        "$py" -c 'import json, sys; print(json.load(sys.stdin)["42"]["hits"][0]["title"])')
echo "--- movies similar to $title"
"$py" -m retrieval_client similar "$title" --url "grpc://localhost:$grpc_port"
echo "--- a new user who liked $title (by_history: no retraining)"
"$py" -m retrieval_client recommend --history "$title" --url "http://localhost:$rest_port"
