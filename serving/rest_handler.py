"""The REST API's request handling, as TF Serving's ``http_rest_api_handler.cc`` does it.

:meth:`RestApi.handle` takes an HTTP method, the request path (with its query string, as TF Serving matches
it) and the body, and returns ``(http_status, body)``; the HTTP plumbing lives in :mod:`serving.rest`.

URLs (``http_rest_api_util.cc``; matched case-insensitively, the whole path):

- ``POST /v1/models/{name}[/versions/{n}|/labels/{label}]:(predict|classify|regress)``
- ``GET  /v1/models/{name}[/versions/{n}|/labels/{label}][/metadata]``

Anything else under ``/v1/`` is ``400 Malformed request: <METHOD> <path>``. Model names and labels are
percent-decoded and only ever looked up in the server core's configuration.

``:classify`` and ``:regress`` parse their JSON (``examples``) and check the signature the way TF Serving's
classifier/regressor do (with its default ``--enable_signature_method_name_check=false``); the bundle's
models only have predict signatures, so those checks are what a client gets. A signature that passes them
would need tf.Example parsing, which the local server does not implement (UNIMPLEMENTED).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format, text_format

from serving import json_tensor
from serving.errors import StatusError

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
ENTRYPOINT = "REST"

_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I
)
_INT64_MAX = 2**63 - 1
_API_NAMES = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


def _invalid(message: str) -> StatusError:
    return StatusError("INVALID_ARGUMENT", message)


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
            raise _invalid(f"Failed to convert version: {version} to numeric.")
    parsed_label = unquote(label, errors="replace") if label else None
    return _Route(model, parsed_version, parsed_label, method or "", subresource or "")


def _signature_not_found(name: str) -> StatusError:
    return _invalid(f'Serving signature name: "{name}" not found in signature def')


def _never() -> bool:
    return False


class RestApi:
    """TF Serving's REST handler over a ``ServerCore`` (interface: docs/serving-core.md).

    ``metrics`` (a :class:`serving.monitoring.Metrics`) receives one record per model request. The
    ``--rest_api_timeout_in_ms`` deadline is kept by the HTTP layer (:mod:`serving.rest`), which answers
    DEADLINE_EXCEEDED when it passes; ``handle``'s ``expired`` tells this layer so that the metrics agree.
    """

    def __init__(self, core, *, metrics=None) -> None:
        self.core = core
        self.metrics = metrics

    # ------------------------------------------------------------------ dispatch
    def handle(self, http_method: str, path: str, body: bytes, expired=_never) -> tuple[int, str]:
        """One request under ``/v1/``: ``(http_status, JSON body)``; never raises for a bad request."""
        try:
            return 200, self._dispatch(http_method, path, body, expired)
        except StatusError as exc:
            return exc.http_status, json_tensor.error_json(exc.message)
        except Exception as exc:  # a bug or an unexpected library error: answer, log, stay up
            logger.exception("internal error serving %s %s", http_method, path)
            return 500, json_tensor.error_json(f"Internal error: {type(exc).__name__}: {exc}")

    def _dispatch(self, http_method: str, path: str, body: bytes, expired) -> str:
        route = _parse_route(http_method, path)
        if route is not None:
            if http_method == "POST" and route.method in _API_NAMES:
                return self._timed(route, _API_NAMES[route.method], body, expired)
            if http_method == "GET":
                api = "GetModelMetadata" if route.subresource == "metadata" else "GetModelStatus"
                return self._timed(route, api, body, expired)
        raise _invalid(f"Malformed request: {http_method} {path}")

    def _timed(self, route: _Route, api: str, body: bytes, expired) -> str:
        start = time.perf_counter()
        outcome = {"version": route.version, "signature": ""}
        code = "OK"
        try:
            if api == "Predict":
                return self._predict(route, body, outcome)
            if api == "GetModelMetadata":
                return self._metadata(route, outcome)
            if api == "GetModelStatus":
                return self._status(route)
            return self._classify_regress(route, api, body, outcome)
        except StatusError as exc:
            code = exc.code
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            if expired():
                code = "DEADLINE_EXCEEDED"
            if self.metrics is not None and route.model:
                self.metrics.record(
                    route.model,
                    outcome["version"],
                    outcome["signature"],
                    api,
                    code,
                    time.perf_counter() - start,
                    entrypoint=ENTRYPOINT,
                )

    def _spec(self, route: _Route) -> dict:
        return {"version": route.version, "label": route.label}

    # ------------------------------------------------------------------ predict
    def _predict(self, route: _Route, body: bytes, outcome: dict) -> str:
        doc = json_tensor.parse_json(body)
        with contextlib.ExitStack() as stack:
            # the version, resolved once (when the parser first needs the signature) and kept to the run
            held: list[Any] = []

            def servable():
                if not held:
                    held.append(stack.enter_context(self.core.servable(route.model, **self._spec(route))))
                return held[0]

            def input_dtypes(signature_name: str) -> Mapping[str, int]:
                name = signature_name or DEFAULT_SIGNATURE
                outcome["signature"] = name
                signature = servable().signature_defs.get(name)
                if signature is None:
                    raise _signature_not_found(name)
                return {alias: info.dtype for alias, info in signature.inputs.items()}

            request = json_tensor.predict_request_from_json(doc, input_dtypes)
            outputs = servable().run(request.signature_name, request.inputs)
            outcome["version"] = servable().version
        return json_tensor.predict_response_json(outputs, request.format)

    # ------------------------------------------------------------------ status and metadata
    def _status(self, route: _Route) -> str:
        if not route.model:
            raise _invalid("Missing model name in request.")
        from tensorflow.core.protobuf import error_codes_pb2
        from tensorflow_serving.apis import get_model_status_pb2

        statuses = self.core.model_status(route.model, **self._spec(route))
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = int(status.version)
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            entry.status.error_code = error_codes_pb2.Code.Value(status.error_code or "OK")
            entry.status.error_message = status.error_message or ""
        return json_format.MessageToJson(
            response,
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True,
            indent=1,
            ensure_ascii=False,
        )

    def _metadata(self, route: _Route, outcome: dict) -> str:
        if not route.model:
            raise _invalid("Missing model name in request.")
        from tensorflow_serving.apis import get_model_metadata_pb2

        version, signatures = self.core.signature_defs(route.model, **self._spec(route))
        outcome["version"] = version
        spec = get_model_metadata_pb2.GetModelMetadataResponse().model_spec
        spec.name = route.model
        spec.version.value = int(version)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in signatures.items():
            signature_map.signature_def[name].CopyFrom(signature)
        options: dict[str, Any] = dict(
            always_print_fields_with_no_presence=True, preserving_proto_field_name=True, indent=1, ensure_ascii=False
        )
        # ToJsonString(GetModelMetadataResponse) in http_rest_api_util.cc concatenates the two parts.
        return (
            '{\n"model_spec":' + json_format.MessageToJson(spec, **options) + ",\n"
            '"metadata": {"signature_def": ' + json_format.MessageToJson(signature_map, **options) + "}\n}\n"
        )

    # ------------------------------------------------------------------ classify / regress
    def _classify_regress(self, route: _Route, api: str, body: bytes, outcome: dict) -> str:
        doc = json_tensor.parse_json(body)
        name = json_tensor.signature_name(doc)
        _check_examples(doc)
        signature_name = name or DEFAULT_SIGNATURE
        outcome["signature"] = signature_name
        version, signatures = self.core.signature_defs(route.model, **self._spec(route))
        outcome["version"] = version
        signature = signatures.get(signature_name)
        if signature is None:
            raise _invalid(f"No signature was found with the name: {signature_name}")
        debug = text_format.MessageToString(signature)
        if len(signature.inputs) != 1:
            raise _invalid("Expected one input Tensor.")
        if api == "Classify":
            if len(signature.outputs) not in (1, 2):
                raise _invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
            if "inputs" not in signature.inputs:
                raise _invalid(f"No classification inputs found in SignatureDef: {debug}")
            if "classes" not in signature.outputs and "scores" not in signature.outputs:
                raise _invalid(
                    'Expected classification signature outputs to contain at least one of "classes" '
                    f'or "scores". Signature was: {debug}'
                )
        else:
            if len(signature.outputs) != 1:
                raise _invalid("Expected one output Tensor.")
            if "inputs" not in signature.inputs:
                raise _invalid(f"No regression inputs found in SignatureDef: {debug}")
            if "outputs" not in signature.outputs:
                raise _invalid(f"No regression outputs found in SignatureDef: {debug}")
        raise StatusError(
            "UNIMPLEMENTED", f"{api} over tf.Example inputs is not implemented by the local server; use :predict"
        )


# --------------------------------------------------------------------------- tf.Example JSON checks
def _feature_kind_error(name: str, kind: str) -> StatusError:
    return _invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _check_feature_value(value, name: str, kind: list) -> None:
    """``AddValueToFeature``: the value's JSON type must fit the feature's kind so far."""
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not json_tensor.is_b64(value)):
        raise _invalid(f"Feature: {name} has element with unexpected JSON type: {json_tensor.json_type(value)}")
    if isinstance(value, bool):
        wanted = "int64"
    elif isinstance(value, (dict, str)):
        wanted = "bytes"
    elif isinstance(value, float):
        wanted = "float"
        if abs(value) > json_tensor.FLOAT32_MAX and value == value and abs(value) != float("inf"):
            raise _invalid(
                f"Cannot convert JSON value: {json_tensor.json_value_to_string(value)} to float "
                "without loss of precision."
            )
    else:
        if value > 2**63 - 1:
            raise _invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
        wanted = "int64"
    if kind and kind[0] != wanted:
        raise _feature_kind_error(name, kind[0])
    if not kind:
        kind.append(wanted)
    if isinstance(value, dict):
        json_tensor.b64decode(value["b64"])


def _check_example(value) -> None:
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {json_tensor.json_type(value)}")
    for name, content in value.items():
        kind: list = []
        for item in content if isinstance(content, list) else [content]:
            _check_feature_value(item, name, kind)


def _check_examples(doc: Mapping) -> None:
    """``FillClassifyRegressRequestFromJson``'s checks of ``context`` and ``examples``."""
    if "context" in doc:
        _check_example(doc["context"])
    if "examples" not in doc:
        raise _invalid(
            f"JSON Value: {json_tensor.json_value_to_string(doc)} When method is classify, key "
            "'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _invalid(
            f"JSON Value: {json_tensor.json_value_to_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise _invalid(f"JSON Value: {json_tensor.json_value_to_string(doc)} 'examples' value is an empty array")
    for example in examples:
        _check_example(example)
