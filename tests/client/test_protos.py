"""Our .proto files: reproducibly compiled, wire-compatible with tensorflow-serving-api, and able to share a
process with TensorFlow. TF's modules run in subprocesses only (this test process never imports TF)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client_fakes import PYTHONPATH
from retrieval_client.protos import compile as protos_compile
from retrieval_client.protos import model_service_pb2, prediction_service_pb2
from retrieval_client.settings import Endpoint
from retrieval_client.transports.grpc import GrpcTransport

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=PYTHONPATH, TF_CPP_MIN_LOG_LEVEL="3")

# message -> (our module, tensorflow's module); every message our .proto files define.
MESSAGES = {
    "ModelSpec": ("retrieval_client.protos.model_pb2", "tensorflow_serving.apis.model_pb2"),
    "PredictRequest": ("retrieval_client.protos.predict_pb2", "tensorflow_serving.apis.predict_pb2"),
    "PredictResponse": ("retrieval_client.protos.predict_pb2", "tensorflow_serving.apis.predict_pb2"),
    "SignatureDefMap": (
        "retrieval_client.protos.get_model_metadata_pb2",
        "tensorflow_serving.apis.get_model_metadata_pb2",
    ),
    "GetModelMetadataRequest": (
        "retrieval_client.protos.get_model_metadata_pb2",
        "tensorflow_serving.apis.get_model_metadata_pb2",
    ),
    "GetModelMetadataResponse": (
        "retrieval_client.protos.get_model_metadata_pb2",
        "tensorflow_serving.apis.get_model_metadata_pb2",
    ),
    "GetModelStatusRequest": (
        "retrieval_client.protos.get_model_status_pb2",
        "tensorflow_serving.apis.get_model_status_pb2",
    ),
    "ModelVersionStatus": (
        "retrieval_client.protos.get_model_status_pb2",
        "tensorflow_serving.apis.get_model_status_pb2",
    ),
    "GetModelStatusResponse": (
        "retrieval_client.protos.get_model_status_pb2",
        "tensorflow_serving.apis.get_model_status_pb2",
    ),
    "StatusProto": ("retrieval_client.protos.status_pb2", "tensorflow_serving.apis.status_pb2"),
    "TensorProto": ("retrieval_client.protos.tensor_pb2", "tensorflow.core.framework.tensor_pb2"),
    "TensorShapeProto": ("retrieval_client.protos.tensor_shape_pb2", "tensorflow.core.framework.tensor_shape_pb2"),
    "TensorInfo": ("retrieval_client.protos.meta_graph_pb2", "tensorflow.core.protobuf.meta_graph_pb2"),
    "SignatureDef": ("retrieval_client.protos.meta_graph_pb2", "tensorflow.core.protobuf.meta_graph_pb2"),
}
TENSOR = (
    'dtype: DT_STRING tensor_shape { dim { size: 2 } dim { size: 1 name: "k" } } '
    'string_val: "Star Wars (1977)" string_val: "\\303\\251"'
)
SIGNATURE = (
    'inputs { key: "user_id" value { name: "serving_default_user_id:0" dtype: DT_STRING '
    'tensor_shape { dim { size: -1 } } } } outputs { key: "scores" value { name: "out:1" dtype: DT_FLOAT '
    'tensor_shape { dim { size: -1 } dim { size: 10 } } } } method_name: "tensorflow/serving/predict" '
    'defaults { key: "k" value { dtype: DT_INT32 int_val: 10 } }'
)
SPEC = 'name: "retrieval" version { value: 1795907701 } signature_name: "exclude_seen"'
SAMPLES = {
    "ModelSpec": 'name: "retrieval" version_label: "canary" signature_name: "serving_default"',
    "PredictRequest": f'model_spec {{ {SPEC} }} inputs {{ key: "user_id" value {{ {TENSOR} }} }} '
    'inputs { key: "n" value { dtype: DT_INT64 int64_val: -5 int64_val: 9 } } '
    'output_filter: "scores" output_filter: "movie_titles"',
    "PredictResponse": f'model_spec {{ {SPEC} }} outputs {{ key: "scores" value {{ dtype: DT_FLOAT '
    "tensor_shape { dim { size: 1 } dim { size: 3 } } float_val: 0.5 float_val: 0.25 "
    'float_val: -1.5 } } outputs { key: "raw" value { dtype: DT_DOUBLE double_val: 0.1 '
    'tensor_content: "\\000\\001" bool_val: true half_val: 3 int_val: 4 uint32_val: 5 '
    'uint64_val: 6 scomplex_val: 1.0 dcomplex_val: 2.0 float8_val: "\\001" version_number: 2 } }',
    "SignatureDefMap": f'signature_def {{ key: "serving_default" value {{ {SIGNATURE} }} }}',
    "GetModelMetadataRequest": f'model_spec {{ {SPEC} }} metadata_field: "signature_def"',
    "GetModelMetadataResponse": f"model_spec {{ {SPEC} }}",  # + metadata["signature_def"], packed below
    "GetModelStatusRequest": 'model_spec { name: "similar_movies" version { value: 3 } }',
    "ModelVersionStatus": 'version: 3 state: AVAILABLE status { error_code: NOT_FOUND error_message: "gone" }',
    "GetModelStatusResponse": "model_version_status { version: 4 state: LOADING } model_version_status { "
    'version: 3 state: UNLOADING status { error_code: UNAVAILABLE error_message: "x" } }',
    "StatusProto": 'error_code: FAILED_PRECONDITION error_message: "Serving signature key \\"zz\\" not found."',
    "TensorProto": TENSOR,
    "TensorShapeProto": 'dim { size: -1 name: "batch" } dim { size: 10 } unknown_rank: false',
    "TensorInfo": 'name: "serving_default_user_id:0" dtype: DT_STRING tensor_shape { unknown_rank: true }',
    "SignatureDef": SIGNATURE,
}

# Runs in a subprocess: build every sample with one side's classes, or parse the other side's bytes.
SCRIPT = r"""
import importlib, json, sys
from google.protobuf import text_format
side, messages, samples, given = json.loads(sys.stdin.read())
def cls(name):
    return getattr(importlib.import_module(messages[name][0 if side == "ours" else 1]), name)
out = {}
for name, text in samples.items():
    msg = text_format.Parse(text, cls(name)())
    if name == "GetModelMetadataResponse":
        packed = msg.metadata["signature_def"]
        packed.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
        packed.value = text_format.Parse(samples["SignatureDefMap"], cls("SignatureDefMap")()).SerializeToString(
            deterministic=True)
    mine = msg.SerializeToString(deterministic=True)
    entry = {"bytes": mine.hex(), "text": text_format.MessageToString(msg)}
    if given:  # parse the other side's bytes: same text, and the same bytes when re-serialized
        theirs = cls(name).FromString(bytes.fromhex(given[name]))
        entry["parsed_text"] = text_format.MessageToString(theirs)
        entry["reserialized"] = theirs.SerializeToString(deterministic=True).hex()
    out[name] = entry
out["_tensorflow_loaded"] = "tensorflow" in sys.modules
print(json.dumps(out))
"""


def _side(side: str, given: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        input=json.dumps([side, MESSAGES, SAMPLES, given]),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=str(ROOT),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wire():
    ours = _side("ours")
    theirs = _side("tf", {name: e["bytes"] for name, e in ours.items() if name in MESSAGES})
    ours_again = _side("ours", {name: e["bytes"] for name, e in theirs.items() if name in MESSAGES})
    return ours, theirs, ours_again


def test_the_samples_cover_every_message_our_protos_define():
    from retrieval_client.protos import _pool

    defined = set()
    for path in (ROOT / "client" / "retrieval_client" / "protos").glob("*.proto"):
        fd = _pool.POOL.FindFileByName(f"retrieval_client/protos/{path.name}")
        defined |= set(fd.message_types_by_name)
    assert defined == set(MESSAGES) == set(SAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_our_bytes_parse_with_tensorflow_serving_api_and_back(name, wire):
    ours, theirs, ours_again = wire
    assert not ours["_tensorflow_loaded"] and theirs["_tensorflow_loaded"]
    # The same sample encodes to the same bytes with either side's classes...
    assert ours[name]["bytes"] == theirs[name]["bytes"]
    # ...tensorflow-serving-api reads ours as it reads its own, and writes back the very same bytes...
    assert theirs[name]["parsed_text"] == theirs[name]["text"]
    assert theirs[name]["reserialized"] == ours[name]["bytes"]
    # ...and we read its bytes as we read our own.
    assert ours_again[name]["parsed_text"] == ours[name]["text"]
    assert ours_again[name]["reserialized"] == theirs[name]["bytes"]


def test_service_paths_are_tensorflow_servings():
    ours = {
        f"/{s.full_name}/{m.name}"
        for module in (prediction_service_pb2, model_service_pb2)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert ours == {
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
    }

    class Channel:  # records what the transport asks grpcio for
        def __init__(self):
            self.methods = {}

        def unary_unary(self, path, request_serializer, response_deserializer):
            self.methods[path] = response_deserializer.__self__  # Message.FromString: bound to its class

    channel = Channel()
    GrpcTransport(Endpoint.parse("grpc://localhost:8500"), channel=channel)
    assert set(channel.methods) == ours
    responses = {
        f"/{s.full_name}/{m.name}": m.output_type.full_name
        for module in (prediction_service_pb2, model_service_pb2)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert {path: response.DESCRIPTOR.full_name for path, response in channel.methods.items()} == responses
    # tensorflow-serving-api's own stubs (read as text: prediction_service_pb2 does not import under protobuf 7)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; print(u.find_spec('tensorflow_serving').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    apis = Path(proc.stdout.strip()) / "apis"
    theirs = (apis / "prediction_service_pb2_grpc.py").read_text() + (apis / "model_service_pb2_grpc.py").read_text()
    for path in ours:
        assert f"'{path}'" in theirs


def test_regenerating_the_modules_changes_nothing():
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the test extra")
    wanted = protos_compile.generate()
    have = {p.name: p.read_text() for p in (ROOT / "client" / "retrieval_client" / "protos").glob("*_pb2*.py*")}
    assert wanted == have, "run: python -m retrieval_client.protos.compile"
    assert all("_pool.POOL.AddSerializedFile(" in text for name, text in wanted.items() if name.endswith("_pb2.py"))


COEXIST = r"""
import sys
first = sys.argv[1]
if first == "tf":
    from tensorflow_serving.apis import predict_pb2 as theirs
    import retrieval_client as client
    from retrieval_client.protos import predict_pb2 as ours
else:
    import retrieval_client as client
    from retrieval_client.protos import predict_pb2 as ours
    from tensorflow_serving.apis import predict_pb2 as theirs
import tensorflow as tf
request = ours.PredictRequest()
request.model_spec.name = "retrieval"
from retrieval_client.protos import tensor_pb2
from retrieval_client.transports.grpc import GrpcTransport  # the whole gRPC transport imports too
request.inputs["user_id"].CopyFrom(tensor_pb2.TensorProto(dtype=7, string_val=[b"42"]))
request.inputs["user_id"].tensor_shape.dim.add(size=1)
parsed = theirs.PredictRequest.FromString(request.SerializeToString())
assert tf.make_ndarray(parsed.inputs["user_id"]).tolist() == [b"42"], parsed
back = ours.PredictRequest.FromString(parsed.SerializeToString())
assert back == request and type(back) is not type(parsed)
print("ok", first)
"""


@pytest.mark.slow
@pytest.mark.parametrize("first", ["tf", "client"])
def test_tensorflow_and_the_client_share_one_process_in_either_order(first):
    proc = subprocess.run(
        [sys.executable, "-c", COEXIST, first], capture_output=True, text=True, env=ENV, cwd=str(ROOT), timeout=240
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith(f"ok {first}"), proc.stderr[-4000:]
