"""TF Serving's gRPC API (port 8500) over one channel, with this package's own protos (no TensorFlow).

``grpcs://`` opens ``grpc.secure_channel`` with ``grpc.ssl_channel_credentials`` (``Tls.ca_cert`` as the
roots, else grpcio's bundled ones; ``Tls.client_cert``/``client_key`` as the client's pair); ``grpc://`` an
insecure channel. Headers go as call metadata on every call (names lowercased: gRPC refuses capitals).

All error mapping of this transport is in :meth:`GrpcCodec._error`, shared with the asyncio transport
(:mod:`retrieval_client.transports.grpc_aio`, which shares the requests and answers too): every
``grpc.StatusCode`` becomes the :mod:`retrieval_client.errors` exception of the same name, carrying the
server's details; an UNAVAILABLE from a failed TLS handshake becomes :class:`~retrieval_client.errors.TlsError`,
one from an HTTP/1.1 server a word that the port speaks REST. The seam for tests is gRPC's own: pass
``channel=`` (anything with ``unary_unary(path, request_serializer, response_deserializer, ...)``, e.g.
``grpc.insecure_channel`` or a fake whose callables raise ``grpc.RpcError``).

The channel opens on the URL's ``host:port``, or on the gRPC target name given after ``grpc://``
(``dns:///host:8500``, ...: :class:`~retrieval_client.settings.Endpoint`), which grpc resolves itself.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from retrieval_client.credentials import Headers, Tls
from retrieval_client.errors import InvalidArgumentError, TlsError, UnknownError, error_for
from retrieval_client.protos import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    meta_graph_pb2,
    model_pb2,
    predict_pb2,
    tensor_pb2,
    types_pb2,
)
from retrieval_client.protos.error_codes_pb2 import Code
from retrieval_client.results import ModelMetadata, Signature, TensorSpec, VersionStatus
from retrieval_client.settings import Endpoint, ModelRef
from retrieval_client.tensors import Tensor, nest

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

_SIGNATURE_DEF_MAP = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
# dtype -> (TensorProto field for values, struct format of tensor_content)
_FIELDS = {
    "DT_FLOAT": ("float_val", "f"),
    "DT_DOUBLE": ("double_val", "d"),
    "DT_INT32": ("int_val", "i"),
    "DT_INT16": ("int_val", "h"),
    "DT_INT8": ("int_val", "b"),
    "DT_UINT8": ("int_val", "B"),
    "DT_UINT16": ("int_val", "H"),
    "DT_INT64": ("int64_val", "q"),
    "DT_UINT32": ("uint32_val", "I"),
    "DT_UINT64": ("uint64_val", "Q"),
    "DT_BOOL": ("bool_val", "?"),
    "DT_STRING": ("string_val", None),
}
_DEFAULT_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)
# gRPC core's words for a failed handshake (ssl_transport_security.cc, security_handshaker.cc), e.g.
# "Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: ...:CERTIFICATE_VERIFY_FAILED: ..."
_HANDSHAKE = re.compile(r"(?i)handshake fail|ssl_error|certificate_verify_failed|tsi_")
_HTTP1 = "http1.x server"  # "Trying to connect an http1.x server": chttp2's word for an HTTP/1.1 answer


def _method(channel: Any, path: str, request_type: Any, response_type: Any) -> Any:
    """A unary method of TF Serving's services by its path (``channel.unary_unary``: the calling API of every
    grpcio, unlike generated stubs, which need the grpcio of their generator)."""
    return channel.unary_unary(
        f"/tensorflow.serving.{path}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )


# A dns:/ipv4:/ipv6: target: calls balanced over every address (grpc's default, pick_first, uses one).
_ROUND_ROBIN = ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))


def _options(endpoint: Endpoint) -> tuple[tuple[str, Any], ...]:
    return (*_DEFAULT_OPTIONS, _ROUND_ROBIN) if endpoint.balanced else _DEFAULT_OPTIONS


def open_channel(endpoint: Endpoint, tls: Tls) -> grpc.Channel:
    """``grpc.secure_channel`` for ``grpcs://`` (``tls``'s roots and client pair), else an insecure channel."""
    if not endpoint.tls:
        return grpc.insecure_channel(endpoint.grpc_target, options=_options(endpoint))
    roots, key, chain = tls.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
    return grpc.secure_channel(endpoint.grpc_target, credentials, options=_options(endpoint))


def open_aio_channel(endpoint: Endpoint, tls: Tls) -> grpc.aio.Channel:
    """:func:`open_channel` for asyncio: a ``grpc.aio`` channel, secure or not as the URL says."""
    if not endpoint.tls:
        return grpc.aio.insecure_channel(endpoint.grpc_target, options=_options(endpoint))
    roots, key, chain = tls.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
    return grpc.aio.secure_channel(endpoint.grpc_target, credentials, options=_options(endpoint))


class Methods:
    """TF Serving's three methods on one channel (sync or ``grpc.aio``: both have ``unary_unary``)."""

    def __init__(self, channel: Any) -> None:
        self.predict = _method(
            channel, "PredictionService/Predict", predict_pb2.PredictRequest, predict_pb2.PredictResponse
        )
        self.metadata = _method(
            channel,
            "PredictionService/GetModelMetadata",
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
        )
        self.status = _method(
            channel,
            "ModelService/GetModelStatus",
            get_model_status_pb2.GetModelStatusRequest,
            get_model_status_pb2.GetModelStatusResponse,
        )


class GrpcCodec:
    """Everything of the gRPC transport but the calls: requests, answers, and the mapping of errors. Shared by
    :class:`GrpcTransport` and the asyncio one (:mod:`retrieval_client.transports.grpc_aio`)."""

    def __init__(self, endpoint: Endpoint, tls: Tls | None, metadata: Headers) -> None:
        self.endpoint = endpoint
        self.tls = tls or Tls()
        self._metadata = tuple((name.lower(), value) for name, value in metadata)

    def _options(self, timeout: float) -> dict[str, Any]:
        """The keyword arguments of each call: its timeout, and the headers as metadata."""
        if self._metadata:
            return {"timeout": timeout, "metadata": self._metadata}
        return {"timeout": timeout}

    def _predict_request(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None
    ) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest(output_filter=list(output_filter or ()))
        _fill_spec(request.model_spec, model)
        for name, tensor in inputs.items():
            to_proto(tensor, request.inputs[name])
        return request

    def _predict_result(
        self, response: predict_pb2.PredictResponse, output_filter: Sequence[str] | None
    ) -> dict[str, Any]:
        outputs = {name: from_proto(proto, name) for name, proto in response.outputs.items()}
        if output_filter:
            outputs = {name: outputs[name] for name in output_filter if name in outputs}
        return outputs

    def _status_request(self, model: ModelRef) -> get_model_status_pb2.GetModelStatusRequest:
        request = get_model_status_pb2.GetModelStatusRequest()
        _fill_spec(request.model_spec, model)
        return request

    def _status_result(self, response: get_model_status_pb2.GetModelStatusResponse) -> list[VersionStatus]:
        versions = [
            VersionStatus(
                v.version,
                get_model_status_pb2.ModelVersionStatus.State.Name(v.state),
                _code_name(v.status.error_code),
                v.status.error_message,
            )
            for v in response.model_version_status
        ]
        return sorted(versions, key=lambda v: v.version, reverse=True)

    def _metadata_request(self, model: ModelRef) -> get_model_metadata_pb2.GetModelMetadataRequest:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _fill_spec(request.model_spec, model)
        return request

    def _metadata_result(
        self, model: ModelRef, response: get_model_metadata_pb2.GetModelMetadataResponse
    ) -> ModelMetadata:
        # ``in`` then ``[]``, not ``.get``: Map.get on message values crashes protobuf's upb before 4.25
        packed = response.metadata["signature_def"] if "signature_def" in response.metadata else None  # noqa: SIM401
        if packed is None or packed.type_url != _SIGNATURE_DEF_MAP:
            raise UnknownError(
                f"metadata of {model} holds no {_SIGNATURE_DEF_MAP} "
                f"(got {packed.type_url if packed is not None else 'nothing'})"
            )
        defs = get_model_metadata_pb2.SignatureDefMap.FromString(packed.value).signature_def
        signatures = {
            name: Signature(name, _specs(d.inputs), _specs(d.outputs), d.method_name) for name, d in defs.items()
        }
        return ModelMetadata(response.model_spec.name or model.name, response.model_spec.version.value, signatures)

    # -- the one place where gRPC errors are mapped (both transports raise what this returns) -----------------
    def _error(self, exc: grpc.RpcError) -> Exception:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        details = exc.details() if callable(getattr(exc, "details", None)) else None
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        message = details or (code.value[1] if isinstance(code, grpc.StatusCode) else str(exc))
        if name == "OK":
            return UnknownError(f"gRPC call failed with status OK: {message}")
        if name == "UNAVAILABLE":
            return self._unavailable(message)
        return error_for(name, message)

    def _unavailable(self, message: str) -> Exception:
        """UNAVAILABLE, told apart: a TLS handshake that failed, an HTTP/1.1 (REST) port, or a server not there."""
        if self.endpoint.tls and _HANDSHAKE.search(message):
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in message:
                hint = "; " + self.tls.not_trusted("grpcio's default roots")
            elif "WRONG_VERSION_NUMBER" in message or "record layer failure" in message.lower():
                hint = f"; does {self.endpoint.netloc} speak TLS? (grpc:// for a plain port)"
            return TlsError(f"TLS handshake with {self.endpoint} failed: {message}{hint}")
        if _HTTP1 in message:
            return InvalidArgumentError(
                f"{self.endpoint} answered HTTP/1.1, not gRPC: this port speaks REST (TF Serving's REST API?); "
                f"use http{'s' if self.endpoint.tls else ''}://{self.endpoint.netloc} or the gRPC port (8500 by "
                f"default) ({message})"
            )
        if self.endpoint.tls and not self.tls.client_cert and "Socket closed" in message:
            # TLS 1.3: a server that requires a client certificate closes the connection after the handshake
            message += "; if the server requires a client certificate (mutual TLS), give one (--client-cert)"
        return error_for("UNAVAILABLE", f"{message} ({self.endpoint})")


class GrpcTransport(GrpcCodec):
    def __init__(
        self, endpoint: Endpoint, *, tls: Tls | None = None, metadata: Headers = (), channel: Any = None
    ) -> None:
        super().__init__(endpoint, tls, metadata)
        self._channel = channel if channel is not None else open_channel(endpoint, self.tls)
        self._methods = Methods(self._channel)

    # -- the Transport interface -------------------------------------------------------------------------
    def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        request = self._predict_request(model, inputs, output_filter)
        return self._predict_result(self._call(self._methods.predict, request, timeout), output_filter)

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return self._status_result(self._call(self._methods.status, self._status_request(model), timeout))

    def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        response = self._call(self._methods.metadata, self._metadata_request(model), timeout)
        return self._metadata_result(model, response)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., M], request: Message, timeout: float) -> M:
        try:
            return method(request, **self._options(timeout))
        except grpc.RpcError as exc:
            raise self._error(exc) from exc


def _fill_spec(spec: model_pb2.ModelSpec, model: ModelRef) -> None:
    spec.name = model.name
    if model.version is not None:
        spec.version.value = model.version
    elif model.label is not None:
        spec.version_label = model.label
    if model.signature_name:
        spec.signature_name = model.signature_name


def to_proto(tensor: Tensor, proto: tensor_pb2.TensorProto) -> tensor_pb2.TensorProto:
    """Fill ``proto`` with a :class:`Tensor` (values in the dtype's repeated field, as TF's AsProtoField)."""
    proto.dtype = types_pb2.DataType.Value(tensor.dtype)  # type: ignore[assignment]  # stubs: Value() -> int, not the enum
    for size in tensor.shape:
        proto.tensor_shape.dim.add(size=size)
    field, _ = _FIELDS[tensor.dtype]
    values: Sequence[Any] = tensor.values
    try:
        if tensor.dtype == "DT_STRING":
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        elif tensor.dtype in ("DT_FLOAT", "DT_DOUBLE"):
            values = [float(v) for v in values]
        getattr(proto, field).extend(values)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"values do not fit {tensor.dtype}: {exc}") from exc
    return proto


def from_proto(proto: tensor_pb2.TensorProto, name: str = "") -> Any:
    """A TensorProto as nested lists; DT_STRING as str (bytes for outputs named ``*_bytes``, as REST does)."""
    dtype = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else None
    if dtype not in _FIELDS:
        raise UnknownError(f"output {name!r} has dtype {dtype or proto.dtype}, which this client cannot decode")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    size = 1
    for dim in shape:
        size *= dim
    field, fmt = _FIELDS[dtype]
    if proto.tensor_content and fmt:
        values = list(struct.unpack(f"<{len(proto.tensor_content) // struct.calcsize(fmt)}{fmt}", proto.tensor_content))
    else:
        values = list(getattr(proto, field))
    if len(values) != size:  # TF fills a short field with its last value (or the default).
        fill = values[-1] if values else (b"" if dtype == "DT_STRING" else 0)
        values = (values + [fill] * size)[:size]
    if dtype == "DT_STRING" and not name.endswith("_bytes"):
        values = [_text(v) for v in values]
    return nest(values, shape)


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _code_name(code: int) -> str:
    return Code.Name(code) if code in Code.values() else str(code)


def _specs(tensors: Mapping[str, meta_graph_pb2.TensorInfo]) -> dict[str, TensorSpec]:
    out = {}
    for alias, info in tensors.items():
        dtype = types_pb2.DataType.Name(info.dtype) if info.dtype in types_pb2.DataType.values() else str(info.dtype)
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        out[alias] = TensorSpec(info.name, dtype, shape)
    return out
