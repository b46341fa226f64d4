"""Fakes for the client's two seams (no sockets), and helpers to run the real local server.

Importable as ``client_fakes``: tests/client is on pytest's pythonpath (pyproject.toml).

FakeServer.fail_next(*outcomes) makes the next calls fail: ("NOT_FOUND", "message") is a TF Serving error
(HTTP status + {"error": ...} over REST, that grpc.StatusCode over gRPC); an Exception is raised by the
adapter / channel as is; RawHttp(status, body, content_type) is a raw HTTP answer (REST only).
"""

from __future__ import annotations

import http
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import grpc
import requests
from requests.adapters import BaseAdapter

from retrieval_client.protos import get_model_metadata_pb2, get_model_status_pb2, predict_pb2, tensor_pb2, types_pb2
from server_process import ServerProcess, versions, write_config  # tests/serving's helpers

# TF Serving's ToHTTPStatusCode (tensorflow_serving/model_servers/http_server.cc), written out independently.
TF_HTTP_STATUS = {
    "CANCELLED": 500,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
CATALOG = [f"Movie {i}" for i in range(12)]
K = 5


@dataclass(frozen=True)
class RawHttp:
    status: int
    body: bytes
    content_type: str = "text/html"


class FakeRpcError(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    # the rest of grpc.Call, unused
    def initial_metadata(self):
        return None

    def trailing_metadata(self):
        return None

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


class Status(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FakeServer:
    """retrieval: user u's ranking is CATALOG rotated by int(u); similar_movies: the catalog after the title.
    Versions 7 (label "stable") and 9 (latest, label "canary"); outputs are [batch, K] like the contract's.

    Version 9 answers as a model exported since issue 18: ``fallback`` (a user id that is not a number, a title
    not in CATALOG, a history with no CATALOG title: the ranking starts at CATALOG[0], "the most popular") and,
    on exclude_seen and the history signatures, ``unmatched``; it has ``by_history`` (the catalog after the
    history's last known title, without the history) and ``by_history_ids`` (id "i" is CATALOG[i]). Version 7
    answers as an older export: neither output, no history signatures."""

    versions: ClassVar[dict[int, str]] = {7: "stable", 9: "canary"}
    flagged_since: ClassVar[int] = 9  # the first version with fallback, unmatched and the history signatures

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.timeouts: list[float] = []
        self._failures: list = []

    def fail_next(self, *outcomes) -> None:
        self._failures.extend(outcomes)

    def next_failure(self):
        return self._failures.pop(0) if self._failures else None

    def _version(self, name: str, version: int | None, label: str | None) -> int:
        if name not in ("retrieval", "similar_movies"):
            raise Status("NOT_FOUND", f"Servable not found for request: Latest({name})")
        if label is not None:
            matches = [v for v, lab in self.versions.items() if lab == label]
            if not matches:
                raise Status("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            return matches[0]
        if version is not None and version not in self.versions:
            raise Status("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
        return version or max(self.versions)

    def predict(self, name, version, label, signature, inputs):
        self.calls.append(("predict", name, version, label, signature, inputs))
        used = self._version(name, version, label)
        signature = signature or "serving_default"
        flagged = used >= self.flagged_since
        history_signatures = ("by_history", "by_history_ids") if flagged else ()
        counted = None  # the entries unmatched counts, per row
        if name == "retrieval" and signature == "serving_default" and set(inputs) == {"user_id"}:
            keys, excluded = inputs["user_id"], [[] for _ in inputs["user_id"]]
        elif name == "retrieval" and signature == "exclude_seen" and set(inputs) == {"user_id", "exclude_titles"}:
            keys, excluded = inputs["user_id"], inputs["exclude_titles"]
            counted = excluded
        elif name == "retrieval" and signature in history_signatures and set(inputs) == {_HISTORY[signature]}:
            counted = inputs[_HISTORY[signature]]
            excluded = [[_title_of(e) if signature == "by_history_ids" else e for e in row] for row in counted]
            keys = [next((t for t in reversed(row) if t in CATALOG), "") for row in excluded]
        elif name == "similar_movies" and signature == "serving_default" and set(inputs) == {"movie_title"}:
            keys = inputs["movie_title"]
            excluded = [[key] for key in keys]
        elif signature not in ("serving_default", "exclude_seen", *history_signatures):
            raise Status("FAILED_PRECONDITION", f'Serving signature name: "{signature}" not found in signature def')
        else:
            raise Status("INVALID_ARGUMENT", f"bad inputs {sorted(inputs)} for {name}/{signature}")
        titles, scores, fallback = [], [], []
        for key, skip in zip(keys, excluded, strict=True):
            start = CATALOG.index(key) + 1 if key in CATALOG else (int(key) if key.isdigit() else 0)
            fallback.append(key not in CATALOG and not key.isdigit())
            ranking = [CATALOG[(start + i) % len(CATALOG)] for i in range(len(CATALOG))]
            row = [t for t in ranking if t not in skip][:K]
            titles.append(row)
            scores.append([round(0.9 - 0.1 * i + used / 1000, 3) for i in range(K)])
        outputs = {"movie_titles": titles, "scores": scores}
        if flagged:
            outputs["fallback"] = fallback
            if counted is not None:
                outputs["unmatched"] = [sum(1 for e in row if e and e not in CATALOG) for row in excluded]
        return outputs, used

    def status(self, name, version, label):
        self.calls.append(("status", name, version, label))
        self._version(name, version, label)
        return [(v, "AVAILABLE" if v == max(self.versions) else "END") for v in sorted(self.versions)]

    def signatures(self):
        def spec(name, dtype, *dims):
            return {"name": name, "dtype": dtype, "shape": dims}

        out = {
            "movie_titles": spec("out_titles:0", "DT_STRING", -1, K),
            "scores": spec("out_scores:0", "DT_FLOAT", -1, K),
        }
        return {
            "serving_default": ({"user_id": spec("in_user:0", "DT_STRING", -1)}, out),
            "exclude_seen": (
                {"user_id": spec("in_user:0", "DT_STRING", -1), "exclude_titles": spec("in_ex:0", "DT_STRING", -1, -1)},
                out,
            ),
        }

    def metadata(self, name, version, label):
        self.calls.append(("metadata", name, version, label))
        return self._version(name, version, label), self.signatures()


# -- REST: requests' adapter seam ------------------------------------------------------------------------
_HISTORY = {"by_history": "history_titles", "by_history_ids": "history_ids"}


def _title_of(movie_id: str) -> str:
    """The fake's catalogue ids: "i" is CATALOG[i]; any other id is unknown (an empty string: no item)."""
    return CATALOG[int(movie_id)] if movie_id.isdigit() and int(movie_id) < len(CATALOG) else movie_id and "?"


class FakeAdapter(BaseAdapter):
    def __init__(self, server: FakeServer) -> None:
        super().__init__()
        self.server = server

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        self.server.timeouts.append(timeout)
        outcome = self.server.next_failure()
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, RawHttp):
            return self._response(request, outcome.status, outcome.body, outcome.content_type)
        try:
            if outcome is not None:
                raise Status(*outcome)
            body = self._route(request)
            return self._response(request, 200, json.dumps(body).encode(), "application/json")
        except Status as exc:
            return self._response(
                request, TF_HTTP_STATUS[exc.code], json.dumps({"error": exc.message}).encode(), "application/json"
            )

    def _route(self, request):
        path = urlsplit(request.url).path
        assert path.startswith("/v1/models/"), path
        rest, _, verb = path[len("/v1/models/") :].partition(":")
        parts = [unquote(p) for p in rest.split("/")]
        suffix = parts.pop() if parts[-1] == "metadata" else None
        name, version, label = parts[0], None, None
        if len(parts) == 3:
            version, label = (int(parts[2]), None) if parts[1] == "versions" else (None, parts[2])
        if verb == "predict":
            payload = json.loads(request.body)
            outputs, _ = self.server.predict(name, version, label, payload.get("signature_name"), payload["inputs"])
            return {"outputs": outputs}
        if suffix == "metadata":
            used, sigs = self.server.metadata(name, version, label)
            return {
                "model_spec": {"name": name, "signature_name": "", "version": str(used)},
                "metadata": {
                    "signature_def": {
                        "signature_def": {
                            sig: {
                                "inputs": _json_infos(ins),
                                "outputs": _json_infos(outs),
                                "method_name": "tensorflow/serving/predict",
                            }
                            for sig, (ins, outs) in sigs.items()
                        }
                    }
                },
            }
        return {
            "model_version_status": [
                {"version": str(v), "state": s, "status": {"error_code": "OK", "error_message": ""}}
                for v, s in sorted(self.server.status(name, version, label), reverse=True)
            ]
        }

    @staticmethod
    def _response(request, status, body, content_type):
        response = requests.Response()
        response.status_code, response._content, response.url, response.request = status, body, request.url, request
        response.reason = http.HTTPStatus(status).phrase
        response.headers["Content-Type"] = content_type
        response.encoding = "utf-8"
        return response

    def close(self):
        pass


def grpc_test_server(
    service: str, method: str, handler, request_type, response_type, *, workers: int = 4, address: str = "127.0.0.1:0"
):
    """A real grpcio server answering ``/tensorflow.serving.{service}/{method}`` with ``handler(request, context)``
    (grpcio's generic-handler API: no generated stubs), listening on ``address`` (grpc's syntax: a free port
    of 127.0.0.1 by default, ``unix:/path`` for a socket). Started; the caller stops it. Returns (server, port)."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                f"tensorflow.serving.{service}",
                {
                    method: grpc.unary_unary_rpc_method_handler(
                        handler,
                        request_deserializer=request_type.FromString,
                        response_serializer=response_type.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port(address)
    server.start()
    return server, port


def _json_infos(infos):
    return {
        alias: {
            "name": i["name"],
            "dtype": i["dtype"],
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in i["shape"]], "unknown_rank": False},
        }
        for alias, i in infos.items()
    }


# -- gRPC: a channel whose callables run the FakeServer -------------------------------------------------
class FakeChannel:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.closed = False

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, **_):
        def call(request, timeout=None, **__):
            self.server.timeouts.append(timeout)
            # over the wire and back, as a real channel would
            raw = request_serializer(request)
            outcome = self.server.next_failure()
            if isinstance(outcome, Exception):
                raise outcome
            try:
                if outcome is not None:
                    raise Status(*outcome)
                return response_deserializer(self._route(method, raw).SerializeToString())
            except Status as exc:
                raise FakeRpcError(getattr(grpc.StatusCode, exc.code), exc.message) from None

        return call

    def _route(self, method, raw):
        if method == "/tensorflow.serving.PredictionService/Predict":
            req = predict_pb2.PredictRequest.FromString(raw)
            name, version, label = _spec(req.model_spec)
            inputs = {k: _nested(v) for k, v in req.inputs.items()}
            outputs, used = self.server.predict(name, version, label, req.model_spec.signature_name or None, inputs)
            resp = predict_pb2.PredictResponse()
            resp.model_spec.name, resp.model_spec.version.value = name, used
            for key, value in outputs.items():
                _to_proto(key, value, resp.outputs[key])
            return resp
        if method == "/tensorflow.serving.PredictionService/GetModelMetadata":
            req = get_model_metadata_pb2.GetModelMetadataRequest.FromString(raw)
            assert list(req.metadata_field) == ["signature_def"]
            name, version, label = _spec(req.model_spec)
            used, sigs = self.server.metadata(name, version, label)
            defs = get_model_metadata_pb2.SignatureDefMap()
            for sig, (ins, outs) in sigs.items():
                d = defs.signature_def[sig]
                d.method_name = "tensorflow/serving/predict"
                for target, infos in ((d.inputs, ins), (d.outputs, outs)):
                    for alias, i in infos.items():
                        target[alias].name = i["name"]
                        target[alias].dtype = 7 if i["dtype"] == "DT_STRING" else 1
                        for size in i["shape"]:
                            target[alias].tensor_shape.dim.add(size=size)
            resp = get_model_metadata_pb2.GetModelMetadataResponse()
            resp.model_spec.name, resp.model_spec.version.value = name, used
            resp.metadata["signature_def"].type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
            resp.metadata["signature_def"].value = defs.SerializeToString()
            return resp
        if method == "/tensorflow.serving.ModelService/GetModelStatus":
            req = get_model_status_pb2.GetModelStatusRequest.FromString(raw)
            resp = get_model_status_pb2.GetModelStatusResponse()
            for v, state in self.server.status(*_spec(req.model_spec)):
                resp.model_version_status.add(
                    version=v, state=get_model_status_pb2.ModelVersionStatus.State.Value(state)
                )
            return resp
        raise FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {method}")

    def close(self):
        self.closed = True


# output name -> (DataType number, TensorProto field) as TF Serving answers them (AsProtoField)
_OUTPUT_TYPES = {
    "movie_titles": (types_pb2.DT_STRING, "string_val"),
    "scores": (types_pb2.DT_FLOAT, "float_val"),
    "fallback": (types_pb2.DT_BOOL, "bool_val"),
    "unmatched": (types_pb2.DT_INT32, "int_val"),
}


def _to_proto(name: str, value: list, t: tensor_pb2.TensorProto) -> None:
    dtype, field = _OUTPUT_TYPES[name]
    t.dtype = dtype
    t.tensor_shape.dim.add(size=len(value))
    if value and isinstance(value[0], list):  # [batch, K]
        t.tensor_shape.dim.add(size=K)
        value = [v for row in value for v in row]
    getattr(t, field).extend([v.encode() for v in value] if dtype == types_pb2.DT_STRING else value)


def _spec(spec):
    choice = spec.WhichOneof("version_choice")
    return (
        spec.name,
        spec.version.value if choice == "version" else None,
        spec.version_label if choice == "version_label" else None,
    )


def _nested(t: tensor_pb2.TensorProto):
    flat = [v.decode() for v in t.string_val]
    dims = [d.size for d in t.tensor_shape.dim]
    if len(dims) == 1:
        return flat
    width = dims[1]
    return [flat[i * width : (i + 1) * width] for i in range(dims[0])]


# -- the real local server: tests/serving's helpers (also on pytest's pythonpath) -------------------------
@dataclass
class LocalServer:
    rest_url: str
    grpc_url: str
    store: Path

    def url(self, kind: str) -> str:
        return self.rest_url if kind == "rest" else self.grpc_url


def latest_version(base_path: Path) -> int:
    return versions(base_path)[-1]


def start_local_server(store: Path, work: Path, *, labels=(), extra_flags=(), timeout: float = 180.0):
    """``python -m serving`` serving retrieval and similar_movies of ``store`` from a models.config;
    each name in ``labels`` labels each model's latest version. Returns (ServerProcess, LocalServer)."""
    models = [
        {
            "name": name,
            "base_path": (store / name).resolve(),
            "labels": {label: latest_version(store / name) for label in labels},
        }
        for name in ("retrieval", "similar_movies")
    ]
    config = write_config(work / "models.config", models)
    if labels:  # as with TF Serving: labels in the first config name versions that are still loading
        extra_flags = ("--allow_version_labels_for_unavailable_models", *extra_flags)
    proc = ServerProcess(f"--model_config_file={config}", *extra_flags, rest=True).start(timeout)
    return proc, LocalServer(f"http://127.0.0.1:{proc.rest_port}", f"grpc://127.0.0.1:{proc.port}", store)


ROOT = Path(__file__).resolve().parents[2]
CLIENT_SRC = (
    ROOT / "client"
)  # the folder holding the retrieval_client package (its distribution: client/pyproject.toml)
# PYTHONPATH for a child that imports this checkout's client (and export and serving from the root), as installed.
PYTHONPATH = os.pathsep.join([str(CLIENT_SRC), str(ROOT)])


def readme_examples() -> list[tuple[str, str]]:
    """Every fenced ``python`` block of client/README.md, dedented, with the heading it is under (in order)."""
    text = (CLIENT_SRC / "README.md").read_text()
    out, heading = [], ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^( *)```python\n(.*?)^\2```", text, re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("# ")
        else:
            out.append((heading, textwrap.dedent(match.group(3))))
    return out


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m retrieval_client *args`` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "retrieval_client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=PYTHONPATH, **(env or {})),
    )
