"""The "floor": a canned grpcio server in its own process whose Predict returns one prebuilt real answer."""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from latency.clients import PREDICT_PATH
from latency.measure import cpu_seconds


def _canned_server(conn, response_bytes: bytes, workers: int, options: list) -> None:
    """The canned server's process: grpcio's sync server whose ``Predict`` returns ``response_bytes`` parsed
    once; it reports ``("ready", port, tensorflow_imported)``, answers "calls" with the number of Predict
    calls so far, and stops on "stop" (or when the parent goes away)."""
    from concurrent import futures

    import grpc

    from retrieval_client.protos import predict_pb2

    response = predict_pb2.PredictResponse.FromString(response_bytes)
    lock = threading.Lock()
    calls = 0

    def predict(request, context):
        nonlocal calls
        with lock:
            calls += 1
        return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
    # registered as tensorflow_serving's generated add_PredictionServiceServicer_to_server does for the server
    handler = grpc.unary_unary_rpc_method_handler(
        predict,
        request_deserializer=predict_pb2.PredictRequest.FromString,
        response_serializer=predict_pb2.PredictResponse.SerializeToString,
    )
    service, method = PREDICT_PATH.strip("/").split("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn.send(("ready", port, "tensorflow" in sys.modules))
    try:
        while (message := conn.recv()) != "stop":
            if message == "calls":
                with lock:
                    conn.send(calls)
    except EOFError:  # the parent is gone
        pass
    finally:
        server.stop(0).wait(10)


class CannedServer:
    """A process running :func:`_canned_server` (spawned: it imports grpcio and client/'s protos only)."""

    def __init__(self, response_bytes: bytes) -> None:
        import dataclasses
        import multiprocessing

        from serving.flags import ServerOptions
        from serving.grpc_service import server_options

        defaults = {f.name: f.default for f in dataclasses.fields(ServerOptions)}
        self.workers = defaults["grpc_max_threads"]  # what serving.grpc_service.GrpcServer gets by default
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.proc = context.Process(
            target=_canned_server, daemon=True, args=(child, response_bytes, self.workers, server_options())
        )
        self.proc.start()
        child.close()  # only the child holds its end now: its exit shows here as EOFError
        try:
            deadline = time.monotonic() + 120
            while not self._conn.poll(0.2):
                if not self.proc.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the canned gRPC server did not start (exit code {self.proc.exitcode})")
            try:
                _, self.port, tensorflow_imported = self._conn.recv()
            except EOFError:  # it died before saying "ready"
                self.proc.join(5)
                raise RuntimeError(f"the canned gRPC server died (exit code {self.proc.exitcode})") from None
            if tensorflow_imported:
                raise RuntimeError("the canned gRPC server's process imported TensorFlow")
        except BaseException:
            self.stop()
            raise

    def cpu(self) -> float | None:
        assert self.proc.pid is not None  # started in __init__
        return cpu_seconds(self.proc.pid)

    def calls(self) -> int:
        self._conn.send("calls")
        return self._conn.recv()

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._conn.send("stop")
            self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
