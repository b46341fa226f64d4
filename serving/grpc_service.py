"""gRPC transport: tensorflow-serving-api's PredictionService and ModelService over :class:`serving.service.Service`.

As TF Serving's ``model_servers/prediction_service_impl.cc`` and ``model_service_impl.cc``: only wire
conversion lives here (TensorProto <-> numpy, ModelSpec -> version/label) and the mapping of a StatusError's
canonical code to the ``grpc.StatusCode`` of the same name, as TF Serving's ``ToGRPCStatus``; the answers
come from the service. ``Classify``/``Regress`` run the service's checks with the signature method-name check
(INVALID_ARGUMENT for a predict signature, UNIMPLEMENTED for a real classify/regress one: tf.Example input is
not implemented here); ``MultiInference`` is UNIMPLEMENTED.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Mapping
from concurrent import futures

import grpc
import numpy as np
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.bundle import DEFAULT_SIGNATURE
from serving.dtypes import DT_STRING, is_string
from serving.errors import StatusError, code_number
from serving.monitoring import Metrics
from serving.service import Call, Service, ServingCore

logger = logging.getLogger(__name__)

ENTRYPOINT = "GRPC"


# ---------------------------------------------------------------------------------------------- tensors
def tensor_to_ndarray(alias: str, proto) -> np.ndarray:
    """A request TensorProto as numpy (DT_STRING -> object array of bytes); bad protos are INVALID_ARGUMENT."""
    try:
        if proto.dtype == DT_STRING and not proto.tensor_content:
            shape = [d.size for d in proto.tensor_shape.dim]
            values = list(proto.string_val)
            if len(values) == math.prod(shape) and all(d >= 0 for d in shape):
                array = np.empty(len(values), dtype=object)
                array[:] = values
                return array.reshape(shape)
        import tensorflow as tf

        return tf.make_ndarray(proto)
    except Exception as exc:
        raise StatusError("INVALID_ARGUMENT", f"tensor parsing error: {alias}") from exc


_CONTENT_DTYPES: dict = {}  # numpy dtype -> TF DataType enum written as tensor_content (None: make_tensor_proto)


def _content_dtype(dtype: np.dtype):
    try:
        return _CONTENT_DTYPES[dtype]
    except KeyError:
        pass
    import tensorflow as tf

    tf_dtype = tf.as_dtype(dtype)
    enum = None
    if tf_dtype.is_numpy_compatible and dtype.isnative and tf_dtype not in (tf.bfloat16, tf.resource, tf.variant):
        enum = tf_dtype.as_datatype_enum
    _CONTENT_DTYPES[dtype] = enum
    return enum


def ndarray_to_tensor(array: np.ndarray, out) -> None:
    """Fill TensorProto ``out`` from ``array`` (strings into ``string_val``, as TF Serving's AsProtoField)."""
    if is_string(array):
        out.dtype = DT_STRING
        for size in array.shape:
            out.tensor_shape.dim.add(size=size)
        values = array.ravel().tolist()
        if not all(type(v) is bytes for v in values):
            values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
        out.string_val.extend(values)
        return
    enum = _content_dtype(array.dtype)
    if enum is not None:
        out.dtype = enum
        for size in array.shape:
            out.tensor_shape.dim.add(size=size)
        out.tensor_content = np.ascontiguousarray(array).tobytes()
        return
    import tensorflow as tf

    out.CopyFrom(tf.make_tensor_proto(array))


class _LazyInputs(Mapping):
    """Request inputs converted on first access, so model/signature errors come first, as in TF Serving."""

    def __init__(self, protos) -> None:
        self._protos = protos
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, alias: str) -> np.ndarray:
        if alias not in self._cache:
            self._cache[alias] = tensor_to_ndarray(alias, self._protos[alias])
        return self._cache[alias]

    def __iter__(self) -> Iterator[str]:
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)

    def __contains__(self, alias) -> bool:
        return alias in self._protos


def _version_choice(spec) -> dict:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return {"version": spec.version.value}
    if choice == "version_label":
        return {"label": spec.version_label}
    return {}


def _abort(context, error: StatusError):
    context.abort(getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN), error.message)


def _status_proto(out, code: str, message: str) -> None:
    out.error_code = code_number(code)
    out.error_message = message


# ---------------------------------------------------------------------------------------------- services
def _rpc(api: str, *, signature: bool = False):
    """Wrap a handler ``(self, request, context, call)`` in the block every RPC shares: the service's
    :class:`~serving.service.Call` (timed, one metric: ``api``, the canonical code, the version the call
    answered from or asked for, and the signature when ``signature`` is set), and a StatusError turned into
    the gRPC status of the same name."""

    def wrap(handler):
        @functools.wraps(handler)
        def rpc(self, request, context):
            spec = request.model_spec
            call = self._service.call(
                api,
                ENTRYPOINT,
                spec.name,
                version=_version_choice(spec).get("version"),
                signature=(spec.signature_name or DEFAULT_SIGNATURE) if signature else "",
            )
            try:
                with call:
                    return handler(self, request, context, call)
            except StatusError as error:
                _abort(context, error)

        return rpc

    return wrap


def _require_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise StatusError("INVALID_ARGUMENT", "Missing ModelSpec")


class _Servicer:
    """What both services share: the service they answer from (and record metrics in)."""

    def __init__(self, core: ServingCore, metrics: Metrics | None = None) -> None:
        self._core = core
        self._service = Service(core, metrics)


class PredictionService(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    @_rpc("Predict", signature=True)
    def Predict(self, request, context, call: Call):
        _require_spec(request)
        spec = request.model_spec
        remaining = context.time_remaining()  # the client's deadline bounds the call, as in TF Serving
        timeout_ms = remaining * 1000.0 if remaining is not None and remaining < 1e8 else None
        outputs = self._service.predict(
            call,
            spec.name,
            signature_name=spec.signature_name,
            inputs=_LazyInputs(request.inputs),
            output_filter=tuple(request.output_filter),
            timeout_ms=timeout_ms,
            **_version_choice(spec),
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.signature_name = call.signature
        response.model_spec.version.value = call.version
        for alias, value in outputs.items():
            ndarray_to_tensor(value, response.outputs[alias])
        return response

    @_rpc("GetModelMetadata")
    def GetModelMetadata(self, request, context, call: Call):
        _require_spec(request)
        spec = request.model_spec
        return self._service.model_metadata(
            call, spec.name, metadata_fields=tuple(request.metadata_field), **_version_choice(spec)
        )

    @_rpc("Classification", signature=True)
    def Classify(self, request, context, call: Call):
        spec = request.model_spec
        self._service.classify_regress(
            call,
            spec.name,
            regress=False,
            signature_name=call.signature,
            method_name_check=True,
            **_version_choice(spec),
        )

    @_rpc("Regression", signature=True)
    def Regress(self, request, context, call: Call):
        spec = request.model_spec
        self._service.classify_regress(
            call,
            spec.name,
            regress=True,
            signature_name=call.signature,
            method_name_check=True,
            **_version_choice(spec),
        )

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by the local server")


class ModelService(_Servicer, model_service_pb2_grpc.ModelServiceServicer):
    @_rpc("GetModelStatus")
    def GetModelStatus(self, request, context, call: Call):
        _require_spec(request)
        return self._service.model_status(request.model_spec.name, **_version_choice(request.model_spec))

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        config = request.config
        try:
            if config.WhichOneof("config") != "model_config_list":
                raise StatusError(
                    "INVALID_ARGUMENT",
                    "ServerModelConfig type not supported by "
                    "HandleReloadConfigRequest. Only ModelConfigList is currently supported",
                )
            for index, model in enumerate(config.model_config_list.config):
                logger.info(
                    "Config entry index : %d path : %s name : %s platform : %s",
                    index,
                    model.base_path,
                    model.name,
                    model.model_platform,
                )
            self._core.reload_config(config)
        except StatusError as error:
            logger.error("ReloadConfig failed: %s", error.message)
            _status_proto(response.status, error.code, error.message)
            _abort(context, error)
        _status_proto(response.status, "OK", "")
        return response


def server_options(max_receive_bytes: int = 2**31 - 1, channel_arguments: tuple = ()) -> list[tuple]:
    """The options :class:`GrpcServer` gives ``grpc.server`` (message limits, no port sharing, then the
    ``--grpc_channel_arguments``)."""
    return [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0),
        *channel_arguments,
    ]


class GrpcServer:
    """The gRPC server of the local model server: both services on ``host:port`` (port 0 = any free port)."""

    def __init__(
        self,
        core: ServingCore,
        *,
        host: str = "0.0.0.0",
        port: int = 8500,
        max_workers: int = 8,
        max_receive_bytes: int = 2**31 - 1,
        channel_arguments: tuple = (),
        metrics=None,
    ) -> None:
        options = server_options(max_receive_bytes, channel_arguments)
        self._executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
        self._server = grpc.server(self._executor, options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(core, metrics), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, metrics), self._server)
        self._address = f"{host}:{port}"
        self.port = port
        self.host = host

    def start(self) -> None:
        self.port = self._server.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError(f"Failed to BuildAndStart gRPC server: cannot bind {self._address}")
        self._server.start()

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting calls; calls in flight get ``grace`` seconds to finish; then end the worker threads
        (grpcio leaves the executor it was given running)."""
        stopped = self._server.stop(grace).wait(grace + 5)
        if not stopped:
            logger.warning("gRPC server did not finish stopping within %.0f s; going on", grace + 5)
        self._executor.shutdown(wait=stopped)
