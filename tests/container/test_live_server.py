"""docker-compose.yml's serving command line, verbatim, starts the local server on the exported store.

The command (entrypoint + flags) and the mounts come from `docker compose config`; the local server
(`python -m serving`, which takes tensorflow_model_server's flags) stands in for tensorflow_model_server.
It runs in its own mount and network namespaces where /models is the store written by the real export CLI
(tests/conftest.py's ``model_store``, ScaNN index) mounted read-only as compose mounts ./models, and
/models-config is serving/, so the config files are the very ones in the repository and the ports are the
fixed 8500/8501 of the compose file, private to the namespace. Probes (the compose healthcheck, REST and
gRPC clients) run inside the same namespaces through nsenter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import namespaces
from container_support import ROOT

START_TIMEOUT_S = 240

PROBE = r"""
import json, sys, urllib.request, urllib.error
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow.core.framework import tensor_pb2, types_pb2, tensor_shape_pb2

def rest(method, path, body=None):
    request = urllib.request.Request("http://127.0.0.1:8501" + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()

out = {}
for model in ("retrieval", "similar_movies"):
    out["status_" + model] = rest("GET", "/v1/models/" + model)
out["predict_retrieval"] = rest("POST", "/v1/models/retrieval:predict", {"instances": ["1"]})
code, body = out["predict_retrieval"]
title = json.loads(body)["predictions"][0]["movie_titles"][0] if code == 200 else ""
out["title"] = title
out["predict_similar"] = rest("POST", "/v1/models/similar_movies:predict", {"instances": [title]})
out["unknown_model"] = rest("GET", "/v1/models/nope")
out["metrics"] = rest("GET", "/monitoring/prometheus/metrics")

request = predict_pb2.PredictRequest()
request.model_spec.name = "retrieval"
request.model_spec.signature_name = "serving_default"
tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"1"],
                                tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
request.inputs["user_id"].CopyFrom(tensor)
with grpc.insecure_channel("127.0.0.1:8500") as channel:
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
titles = response.outputs["movie_titles"]
out["grpc"] = {"version": response.model_spec.version.value,
               "shape": [d.size for d in titles.tensor_shape.dim],
               "titles": [t.decode() for t in titles.string_val]}
print(json.dumps(out))
"""


def container_mounts(serving: dict) -> dict:
    out = {}
    for volume in serving["volumes"]:
        out[volume["target"]] = (Path(volume["source"]), bool(volume.get("read_only")))
    return out


def newest_version(base: Path) -> int:
    return max(int(p.name) for p in base.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def compose_server(scann_config, model_store, tmp_path_factory):
    """The compose serving command running on ``model_store``; yields (Namespaced, serving service)."""
    serving = scann_config["services"]["serving"]
    entrypoint = serving["entrypoint"]
    assert entrypoint == ["tensorflow_model_server"]
    command = [sys.executable, "-m", "serving", *serving["command"]]

    mounts = container_mounts(serving)
    assert mounts["/models"][0] == ROOT / "models"  # the test swaps in the fixture store for ./models
    binds = [(Path(model_store), "/models", mounts["/models"][1]),
             (mounts["/models-config"][0], "/models-config", mounts["/models-config"][1])]

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    log = tmp_path_factory.mktemp("compose-server") / "server.log"
    server = namespaces.start(command, binds=binds, workdir=ROOT, log=log, env=env)
    try:
        healthcheck = serving["healthcheck"]["test"][1:]  # ["CMD", ...] -> the command docker runs
        checks = []

        def healthy():
            result = server.run(healthcheck, timeout=15)
            checks.append(result)
            return result.returncode == 0

        if not namespaces.wait_until(healthy, timeout=START_TIMEOUT_S, interval=1.0, alive=server.alive):
            last = checks[-1].stdout + checks[-1].stderr if checks else ""
            pytest.fail(f"the compose command did not become healthy (alive={server.alive()}); last healthcheck:"
                        f" {last}\nserver log:\n{server.log_text()[-6000:]}")
        yield server, serving
    finally:
        server.stop()


@pytest.fixture(scope="module")
def probe(compose_server):
    server, _ = compose_server
    result = server.run([sys.executable, "-c", PROBE], timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_compose_healthcheck_turns_healthy_when_both_models_are_available(compose_server):
    server, serving = compose_server
    result = server.run(serving["healthcheck"]["test"][1:])
    assert result.returncode == 0
    assert result.stdout.strip() == "healthy: retrieval similar_movies AVAILABLE"


def test_compose_command_serves_the_newest_exported_version_of_both_models(probe, model_store):
    for model in ("retrieval", "similar_movies"):
        code, body = probe[f"status_{model}"]
        assert code == 200, body
        versions = json.loads(body)["model_version_status"]
        assert [(v["version"], v["state"]) for v in versions] == \
            [(str(newest_version(Path(model_store) / model)), "AVAILABLE")]


def test_compose_command_answers_predictions_over_rest_and_grpc(probe, model_store):
    code, body = probe["predict_retrieval"]
    assert code == 200, body
    prediction = json.loads(body)["predictions"][0]
    assert len(prediction["movie_titles"]) == len(prediction["scores"]) > 0
    assert prediction["scores"] == sorted(prediction["scores"], reverse=True)

    code, body = probe["predict_similar"]
    assert code == 200, body
    assert probe["title"] not in json.loads(body)["predictions"][0]["movie_titles"]

    grpc = probe["grpc"]
    assert grpc["version"] == newest_version(Path(model_store) / "retrieval")
    assert grpc["shape"] == [1, len(prediction["movie_titles"])]
    assert grpc["titles"] == prediction["movie_titles"]


def test_compose_command_exposes_prometheus_metrics_from_monitoring_config(probe):
    code, body = probe["metrics"]
    assert code == 200
    assert ":tensorflow:serving:request_count" in body
    assert 'model_name="retrieval"' in body


def test_compose_command_serves_only_the_models_of_models_config(probe):
    code, body = probe["unknown_model"]
    assert code == 404
    # TF Serving's GetModelStatus words (get_model_status_impl.cc).
    assert json.loads(body) == {"error": "Could not find any versions of model nope"}


def test_store_is_mounted_read_only_as_in_compose(compose_server):
    server, _ = compose_server
    result = server.run(["bash", "-c", "touch /models/should-fail"])
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
