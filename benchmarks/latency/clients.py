"""The clients: in-process calls, a lean REST client, a gRPC client, and client processes that run them."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import numpy as np

from latency.measure import cpu_per_request, no_cpu, summary
from latency.model import USERS, K

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


def in_process_client(bundle):
    def call(user: str) -> None:
        out = bundle.run("serving_default", {"user_id": np.array([user.encode()], dtype=object)})
        assert out["movie_titles"].shape == (1, K)

    return call


def rest_body(user: str) -> bytes:
    return json.dumps({"instances": [user]}).encode()


def rest_client(port: int):
    """A lean HTTP/1.1 keep-alive client (raw socket, one send per request), so that the client's own CPU,
    which shares the machine with the server, stays small; the JSON answer is still parsed and checked."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    head = (
        b"POST /v1/models/retrieval:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    )

    def call(user: str) -> None:
        body = rest_body(user)
        sock.sendall(head % len(body) + body)
        status = reader.readline()
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        answer = json.loads(reader.read(length))
        assert status.startswith(b"HTTP/1.1 200") and len(answer["predictions"][0]["movie_titles"]) == K, answer

    return call


def predict_request(user: str):
    """The ``PredictRequest`` for one user, built with client/'s own protos (no TensorFlow import)."""
    from retrieval_client.protos import predict_pb2, types_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "retrieval"
    tensor = request.inputs["user_id"]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(user.encode())
    return request


def grpc_client(port: int):
    """``PredictionService.Predict`` through grpcio, called by its path as client.transports.grpc does, with
    client/'s own protos (no TensorFlow import in the client processes) and a 30 s deadline, as clients
    usually set one."""
    import grpc

    from retrieval_client.protos import predict_pb2

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    predict = channel.unary_unary(
        PREDICT_PATH,
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )

    def call(user: str):
        response = predict(predict_request(user), timeout=30)
        assert len(response.outputs["movie_titles"].string_val) == K
        return response

    return call


CLIENTS = {"REST": rest_client, "gRPC": grpc_client}


def _client_process(conn) -> None:
    """A client process: for each task ``(transport, port, requests, warmup, seed)`` it connects, warms up,
    says "ready", waits for "go", and sends back its latencies; ``None`` ends it."""
    while (task := conn.recv()) is not None:
        transport, port, requests, warmup, seed = task
        try:
            call = CLIENTS[transport](port)
            rng = np.random.default_rng(seed)
            users = [str(u) for u in rng.integers(1, USERS + 1, size=requests + warmup)]
            for user in users[:warmup]:
                call(user)
        except Exception as exc:
            conn.send(("error", repr(exc)))
            continue
        conn.send(("ready", None))
        conn.recv()  # "go"
        mine = []
        try:
            for user in users[warmup:]:
                start = time.perf_counter()
                call(user)
                mine.append(time.perf_counter() - start)
        except Exception as exc:
            conn.send(("error", repr(exc)))
            continue
        conn.send(("done", mine))


class ClientProcesses:
    """Client processes (spawned, no TensorFlow), one connection each, as separate clients would be: clients
    in threads of one Python process would measure their own GIL contention rather than the server."""

    def __init__(self, count: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conns, self._procs = [], []
        for _ in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=_client_process, args=(child,), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def measure(
        self, transport: str, port: int, clients: int, requests_per_client: int, warmup: int = 20, cpu=no_cpu
    ) -> dict:
        """As :func:`measure`; ``cpu()`` (the server's CPU seconds) is read just before "go" and at the end."""
        conns = self._conns[:clients]
        for i, conn in enumerate(conns):
            conn.send((transport, port, requests_per_client, warmup, i))
        replies = [conn.recv() for conn in conns]
        failed = [r[1] for r in replies if r[0] == "error"]
        if failed:
            raise RuntimeError(f"{transport} client failed: {failed[0]}")
        cpu_before = cpu()
        start = time.perf_counter()
        for conn in conns:
            conn.send("go")
        replies = [conn.recv() for conn in conns]
        wall = time.perf_counter() - start
        cpu_after = cpu()
        failed = [r[1] for r in replies if r[0] == "error"]
        if failed:
            raise RuntimeError(f"{transport} client failed: {failed[0]}")
        latencies = [x for r in replies for x in r[1]]
        return summary(latencies, wall, cpu_per_request(cpu_before, cpu_after, len(latencies)))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
