"""Start-up and shut-down of the local tensorflow_model_server, as ``model_servers/server.cc`` does them.

Order: read the model config (a parse error aborts), build the ServerCore and wait until every configured
model has an AVAILABLE version ("N model(s) did not become available" aborts), then open the gRPC port and
the REST port, logging TF Serving's lines ("Running gRPC ModelServer at ...", "Exporting HTTP/REST API
at:..."). With ``--model_config_file_poll_wait_seconds`` > 0 the config file is re-read on that period; a
file that does not parse, or a config the core rejects, is logged and the old config stays.
SIGTERM / SIGINT: stop accepting, let requests in flight finish, unload, exit 0.

``--ssl_config_file``: the gRPC port speaks TLS with the SSLConfig's key and certificate (and, with
``client_verify``, requires a client certificate signed by its ``custom_ca``), as server.cc's
``BuildServerCredentialsFromSSLConfigFile``; the REST port stays plain HTTP, as in TF Serving (TLS for REST is
a proxy's or an ingress's: docs/container.md).

The listening host is 0.0.0.0, as TF Serving; the environment variable ``SERVING_HOST`` (read at start)
overrides it, e.g. 127.0.0.1 for tests. It is not a flag, so the command line stays TF Serving's.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from serving.core import CoreOptions, ServerCore
from serving.errors import StatusError
from serving.flags import ServerOptions

if TYPE_CHECKING:
    import grpc

    from serving.grpc_service import GrpcServer
    from serving.http_server import RestServer

logger = logging.getLogger(__name__)


def read_text_proto(path: str, message=None, *, parse=None):
    """Parse a text-format proto file into ``message`` (or with ``parse(text)``, which returns the message);
    NOT_FOUND for a file that cannot be read, INVALID_ARGUMENT (TF Serving's words) for one that does not parse."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return parse(text) if parse is not None else text_format.Parse(text, message)
    except OSError as exc:
        raise StatusError("NOT_FOUND", f"{path}; {exc.strerror or exc}") from exc
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise StatusError("INVALID_ARGUMENT", f"Invalid protobuf file: '{path}' ({exc})") from exc


def single_model_config(model_name: str, model_base_path: str):
    """``BuildSingleModelConfig``: one model, platform tensorflow, default (latest 1) policy."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    # TF Serving requires an absolute path here; a relative --model_base_path is taken from the cwd.
    model.base_path = os.path.abspath(model_base_path)
    model.model_platform = "tensorflow"
    return config


def model_server_config(options: ServerOptions):
    from tensorflow_serving.config import model_server_config_pb2

    if options.model_config_file:
        return read_text_proto(options.model_config_file, model_server_config_pb2.ModelServerConfig())
    logger.info(
        "Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
        options.model_name,
        options.model_base_path,
    )
    return single_model_config(options.model_name, options.model_base_path)


def _ssl_config_class():
    """``tensorflow.serving.SSLConfig`` (config/ssl_config.proto): four fields, declared here in the default
    descriptor pool because the tensorflow-serving-api wheel ships no ``ssl_config_pb2``."""
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName("tensorflow.serving.SSLConfig")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name="tensorflow_serving/config/ssl_config.proto", package="tensorflow.serving", syntax="proto3"
        )
        F = descriptor_pb2.FieldDescriptorProto
        message = proto.message_type.add(name="SSLConfig")
        strings = ("server_key", "server_cert", "custom_ca")
        for number, (name, kind) in enumerate([*((s, F.TYPE_STRING) for s in strings), ("client_verify", F.TYPE_BOOL)]):
            message.field.add(name=name, number=number + 1, type=kind, label=F.LABEL_OPTIONAL)
        pool.Add(proto)
        descriptor = pool.FindMessageTypeByName("tensorflow.serving.SSLConfig")
    return message_factory.GetMessageClass(descriptor)


def server_credentials(ssl_config_file: str) -> grpc.ServerCredentials:
    """server.cc's ``BuildServerCredentialsFromSSLConfigFile``: the SSLConfig's PEM key and certificate (the
    file holds the PEM text itself, not paths); ``client_verify`` requires and verifies a client certificate
    against ``custom_ca``. A file that does not parse aborts start-up (TF Serving: TF_CHECK_OK)."""
    import grpc

    config = read_text_proto(ssl_config_file, _ssl_config_class()())
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


def grpc_server(core, credentials: grpc.ServerCredentials | None, **options) -> GrpcServer:
    """The gRPC server of ``core``: on an insecure port, or with ``credentials`` (``--ssl_config_file``) on a
    secure one, as TF Serving's ``AddListeningPort(address, creds)``."""
    from serving.grpc_service import GrpcServer

    if credentials is None:
        return GrpcServer(core, **options)
    secure: grpc.ServerCredentials = credentials

    class TlsGrpcServer(GrpcServer):
        def start(self) -> None:
            self.port = self._server.add_secure_port(self._address, secure)
            if self.port == 0:
                raise OSError(f"Failed to BuildAndStart gRPC server: cannot bind {self._address}")
            self._server.start()

    return TlsGrpcServer(core, **options)


def session_config(options: ServerOptions):
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    config.intra_op_parallelism_threads = (
        options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
    )
    config.inter_op_parallelism_threads = (
        options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism
    )
    return config


class ModelServer:
    """The whole local server: core, config poller, gRPC and REST transports."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.host = os.environ.get("SERVING_HOST", "0.0.0.0")
        self.core: ServerCore | None = None
        self.grpc: GrpcServer | None = None
        self.rest: RestServer | None = None
        self._stopped = threading.Event()  # set when stopping begins: ends the config poll loop
        self._finished = threading.Event()  # set when stopping is complete: releases wait()
        self._lifecycle = threading.Lock()  # start() publishes the core and opens ports under it; stop() begins
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        """Load the initial models, then open the ports. StatusError if the server cannot start."""
        options = self.options
        config = model_server_config(options)
        credentials = server_credentials(options.ssl_config_file) if options.ssl_config_file else None
        monitoring = self._monitoring_config()
        batching = self._batching_options()
        from serving.monitoring import Metrics

        metrics = Metrics()
        core_options = CoreOptions(
            file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
            enable_model_warmup=options.enable_model_warmup,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_micros=options.load_retry_interval_micros,
            saved_model_tags=tuple(t for t in options.saved_model_tags.split(",") if t),
            session_config=session_config(options),
            batching=batching,
        )
        with self._lifecycle:  # a stop() that began earlier must not miss the core, nor one later the ports
            self._raise_if_stopped()
            self.core = ServerCore(core_options, metrics=metrics)
        self.core.reload_config(config)  # CANCELLED if stop() runs meanwhile
        with self._lifecycle:
            self._raise_if_stopped()
            self._open_ports(monitoring, metrics, credentials)

    def _raise_if_stopped(self) -> None:
        if self._stopped.is_set():
            raise StatusError("CANCELLED", "server stopped during start-up")

    def _open_ports(self, monitoring, metrics, credentials: grpc.ServerCredentials | None) -> None:
        options = self.options
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._poller = threading.Thread(target=self._poll_config, name="config-poller", daemon=True)
            self._poller.start()
        if options.port:
            channel_arguments = dict(options.channel_arguments())
            max_receive = int(channel_arguments.pop("grpc.max_receive_message_length", 2**31 - 1))
            self.grpc = server = grpc_server(
                self.core,
                credentials,
                host=self.host,
                port=options.port,
                max_workers=options.grpc_max_threads,
                max_receive_bytes=max_receive,
                channel_arguments=tuple(channel_arguments.items()),
                metrics=metrics,
            )
            server.start()
            logger.info("Running gRPC ModelServer at %s:%d ...", self.host, server.port)
        if options.rest_api_port:
            if options.rest_api_port == options.port:
                logger.error(
                    "server_options.http_port cannot be same as grpc_port. Please use a different port "
                    "for HTTP/REST API. Skipped exporting HTTP/REST API."
                )
            else:
                self.rest = rest = self._start_rest(monitoring, metrics)
                shown = "localhost" if self.host == "0.0.0.0" else self.host
                logger.info("Exporting HTTP/REST API at:%s:%d ...", shown, rest.port)

    def _monitoring_config(self):
        if not self.options.monitoring_config_file:
            return None
        from serving.monitoring import MonitoringConfig  # the tensorflow-serving-api wheel lacks its _pb2

        return read_text_proto(self.options.monitoring_config_file, MonitoringConfig())

    def _batching_options(self):
        """``--enable_batching``: the batching file's parameters (TF Serving's defaults without a file)."""
        if not self.options.enable_batching:
            return None
        from serving.batching import BatchingOptions, batching_parameters_class, parse_batching_parameters

        path = self.options.batching_parameters_file
        if path:
            params = read_text_proto(path, parse=parse_batching_parameters)
        else:
            params = batching_parameters_class()()
            params.thread_pool_name.value = "model_server_batch_threads"
        batching = BatchingOptions.from_parameters(params)
        logger.info("Batching requests: %s", batching)
        return batching

    def _start_rest(self, monitoring, metrics):
        from serving.http_server import RestServer

        return RestServer(
            self.core,
            host=self.host,
            port=self.options.rest_api_port,
            timeout_ms=self.options.rest_api_timeout_in_ms,
            monitoring_config=monitoring,
            metrics=metrics,
            num_threads=self.options.rest_api_num_threads,
        ).start()

    def _poll_config(self) -> None:
        """Re-read the config file each period; the file's config wins over one set by gRPC, as TF Serving."""
        from tensorflow_serving.config import model_server_config_pb2

        core = self.core
        assert core is not None  # the poller starts after the core (_open_ports)
        path = self.options.model_config_file
        while not self._stopped.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                config = read_text_proto(path, model_server_config_pb2.ModelServerConfig())
            except StatusError as exc:
                logger.error("Failed to read ModelServerConfig file: %s", exc.message)
                continue
            current = core.config
            if current is not None and config.SerializeToString(deterministic=True) == current.SerializeToString(
                deterministic=True
            ):
                continue  # unchanged: nothing to do (TF Serving re-applies it, to the same effect)
            try:
                core.reload_config(config)
            except StatusError as exc:
                logger.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s: %s", exc.code, exc.message)
            else:
                logger.info("Reloaded model config from %s", path)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has begun."""
        return self._stopped.is_set()

    def wait(self) -> None:
        """Block until :meth:`stop` (called from a signal handler's thread or another thread) has finished.

        The main thread must not return before then: an interpreter that begins to exit while gRPC is
        still draining makes grpcio's serving thread die on a call it can no longer schedule, and the
        drain never ends."""
        while not self._finished.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop accepting requests, finish those in flight, unload every model."""
        with self._lifecycle:
            if self._stopped.is_set():
                return
            self._stopped.set()
        logger.info("Shutting down: finishing requests in flight")
        try:
            if self.grpc is not None:
                self.grpc.stop(grace=30)
            if self.rest is not None:
                self.rest.stop()
            if self.core is not None:
                self.core.stop()
        finally:
            self._finished.set()
        logger.info("Server stopped")
