"""The REST API's request handling, as TF Serving's ``http_rest_api_handler.cc`` does it: a JSON codec over
:class:`serving.service.Service`.

:meth:`RestApi.handle` takes an HTTP method, the request path (with its query string, as TF Serving matches
it) and the body, and returns ``(http_status, body)``; the HTTP framing lives in :mod:`serving.http_server`,
the answers in :mod:`serving.service`, the JSON <-> tensor conversion in :mod:`serving.json_to_tensor` and
:mod:`serving.tensor_to_json`.

URLs (``http_rest_api_util.cc``; matched case-insensitively, the whole path):

- ``POST /v1/models/{name}[/versions/{n}|/labels/{label}]:(predict|classify|regress)``
- ``GET  /v1/models/{name}[/versions/{n}|/labels/{label}][/metadata]``

Anything else under ``/v1/`` is ``400 Malformed request: <METHOD> <path>``. Model names and labels are
percent-decoded and only ever looked up in the server core's configuration.

``:classify`` and ``:regress`` check their JSON (``examples``, as ``FillClassifyRegressRequestFromJson``) here
and the signature in the service (with TF Serving's default ``--enable_signature_method_name_check=false``);
the bundle's models only have predict signatures, so those checks are what a client gets. A signature that
passes them would need tf.Example parsing, which the local server does not implement (UNIMPLEMENTED).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format

from serving import json_to_tensor
from serving.bundle import DEFAULT_SIGNATURE
from serving.dtypes import FLOAT32_MAX
from serving.errors import StatusError, invalid_argument
from serving.json_writer import error_json, json_type, json_value_to_string
from serving.monitoring import Metrics
from serving.service import Call, Service, ServingCore, SignatureDefs
from serving.tensor_to_json import predict_response_json

logger = logging.getLogger(__name__)

ENTRYPOINT = "REST"

_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I
)
_INT64_MAX = 2**63 - 1
_API_NAMES = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


class _Route:
    __slots__ = ("label", "method", "model", "subresource", "version")

    def __init__(self, model: str, version: int | None, label: str | None, method: str, subresource: str):
        self.model, self.version, self.label = model, version, label
        self.method, self.subresource = method, subresource


def _parse_route(http_method: str, path: str) -> _Route | None:
    """``ParseModelInfo``: None when the path does not match the method's URL pattern."""
    if http_method == "POST":
        match = _PREDICTION_PATH.fullmatch(path)
        if match is None:
            return None
        name, version, label, method = match.groups()
        subresource = ""
    elif http_method == "GET":
        match = _STATUS_PATH.fullmatch(path)
        if match is None:
            return None
        name, version, label, subresource = match.groups()
        method = ""
    else:
        return None
    model = unquote(name, errors="replace") if name else ""
    parsed_version = None
    if version:
        parsed_version = int(version)
        if parsed_version > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    parsed_label = unquote(label, errors="replace") if label else None
    return _Route(model, parsed_version, parsed_label, method or "", subresource or "")


def _signature_not_found(name: str) -> StatusError:
    return invalid_argument(f'Serving signature name: "{name}" not found in signature def')


def _never() -> bool:
    return False


_JSON_OPTIONS: dict[str, Any] = dict(
    always_print_fields_with_no_presence=True, preserving_proto_field_name=True, indent=1, ensure_ascii=False
)


class RestApi:
    """TF Serving's REST handler over a server core (:class:`serving.service.ServingCore`).

    ``metrics`` (a :class:`serving.monitoring.Metrics`) receives one record per model request. The
    ``--rest_api_timeout_in_ms`` deadline is kept by the HTTP layer (:mod:`serving.http_server`), which
    answers DEADLINE_EXCEEDED when it passes; ``handle``'s ``expired`` tells this layer so that the metrics
    agree.
    """

    def __init__(self, core: ServingCore, *, metrics: Metrics | None = None) -> None:
        self.service = Service(core, metrics)

    # ------------------------------------------------------------------ dispatch
    def handle(self, http_method: str, path: str, body: bytes, expired: Callable[[], bool] = _never) -> tuple[int, str]:
        """One request under ``/v1/``: ``(http_status, JSON body)``; never raises for a bad request."""
        try:
            return 200, self._dispatch(http_method, path, body, expired)
        except StatusError as exc:
            return exc.http_status, error_json(exc.message)
        except Exception as exc:  # a bug or an unexpected library error: answer, log, stay up
            logger.exception("internal error serving %s %s", http_method, path)
            return 500, error_json(f"Internal error: {type(exc).__name__}: {exc}")

    def _dispatch(self, http_method: str, path: str, body: bytes, expired: Callable[[], bool]) -> str:
        route = _parse_route(http_method, path)
        if route is not None:
            if http_method == "POST" and route.method in _API_NAMES:
                api = _API_NAMES[route.method]
            elif http_method == "GET":
                api = "GetModelMetadata" if route.subresource == "metadata" else "GetModelStatus"
            else:
                api = ""
            if api:
                call = self.service.call(
                    api, ENTRYPOINT, route.model, version=route.version, expired=expired, record=bool(route.model)
                )
                with call:
                    if api == "Predict":
                        return self._predict(route, body, call)
                    if api == "GetModelMetadata":
                        return self._metadata(route, call)
                    if api == "GetModelStatus":
                        return self._status(route)
                    return self._classify_regress(route, api, body, call)
        raise invalid_argument(f"Malformed request: {http_method} {path}")

    # ------------------------------------------------------------------ predict
    def _predict(self, route: _Route, body: bytes, call: Call) -> str:
        doc = json_to_tensor.parse_json(body)
        call.signature = json_to_tensor.signature_name(doc) or DEFAULT_SIGNATURE
        request_format: list[str] = []

        def decode(signature_defs: SignatureDefs) -> Mapping:
            def input_dtypes(signature_name: str) -> Mapping[str, int]:
                name = signature_name or DEFAULT_SIGNATURE
                signature = signature_defs.get(name)
                if signature is None:
                    raise _signature_not_found(name)
                return {alias: info.dtype for alias, info in signature.inputs.items()}

            request = json_to_tensor.predict_request_from_json(doc, input_dtypes)
            request_format.append(request.format)
            return request.inputs

        outputs = self.service.predict(
            call, route.model, version=route.version, label=route.label, signature_name=call.signature, inputs=decode
        )
        return predict_response_json(outputs, request_format[0])

    # ------------------------------------------------------------------ status and metadata
    def _status(self, route: _Route) -> str:
        if not route.model:
            raise invalid_argument("Missing model name in request.")
        response = self.service.model_status(route.model, version=route.version, label=route.label)
        return json_format.MessageToJson(response, **_JSON_OPTIONS)

    def _metadata(self, route: _Route, call: Call) -> str:
        if not route.model:
            raise invalid_argument("Missing model name in request.")
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = self.service.signature_def_map(call, route.model, version=route.version, label=route.label)
        spec = get_model_metadata_pb2.GetModelMetadataResponse().model_spec
        spec.name = route.model
        spec.version.value = call.version
        # ToJsonString(GetModelMetadataResponse) in http_rest_api_util.cc concatenates the two parts.
        return (
            '{\n"model_spec":' + json_format.MessageToJson(spec, **_JSON_OPTIONS) + ",\n"
            '"metadata": {"signature_def": ' + json_format.MessageToJson(signature_map, **_JSON_OPTIONS) + "}\n}\n"
        )

    # ------------------------------------------------------------------ classify / regress
    def _classify_regress(self, route: _Route, api: str, body: bytes, call: Call) -> str:
        doc = json_to_tensor.parse_json(body)
        name = json_to_tensor.signature_name(doc)
        _check_examples(doc)
        call.signature = name or DEFAULT_SIGNATURE
        self.service.classify_regress(
            call,
            route.model,
            regress=api == "Regress",
            version=route.version,
            label=route.label,
            signature_name=name,
        )
        raise AssertionError("classify_regress always raises")  # pragma: no cover


# --------------------------------------------------------------------------- tf.Example JSON checks
def _feature_kind_error(name: str, kind: str) -> StatusError:
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _check_feature_value(value, name: str, kind: list) -> None:
    """``AddValueToFeature``: the value's JSON type must fit the feature's kind so far."""
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not json_to_tensor.is_b64(value)):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if isinstance(value, bool):
        wanted = "int64"
    elif isinstance(value, (dict, str)):
        wanted = "bytes"
    elif isinstance(value, float):
        wanted = "float"
        if abs(value) > FLOAT32_MAX and value == value and abs(value) != float("inf"):
            raise invalid_argument(
                f"Cannot convert JSON value: {json_value_to_string(value)} to float without loss of precision."
            )
    else:
        if value > 2**63 - 1:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        wanted = "int64"
    if kind and kind[0] != wanted:
        raise _feature_kind_error(name, kind[0])
    if not kind:
        kind.append(wanted)
    if isinstance(value, dict):
        json_to_tensor.b64decode(value["b64"])


def _check_example(value) -> None:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        kind: list = []
        for item in content if isinstance(content, list) else [content]:
            _check_feature_value(item, name, kind)


def _check_examples(doc: Mapping) -> None:
    """``FillClassifyRegressRequestFromJson``'s checks of ``context`` and ``examples``."""
    if "context" in doc:
        _check_example(doc["context"])
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} When method is classify, key "
            "'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} 'examples' value is an empty array")
    for example in examples:
        _check_example(example)
