"""REST and gRPC latency and throughput of the local server against a direct in-process call.

For each catalogue size (1,682 candidates, as MovieLens 100K, and 1,000,000 synthetic ones) this builds a
``retrieval`` SavedModel with export's own servable and ScaNN index (export.servable.Retrieval,
export.index.build: the contract's signatures, K = 10), starts ``python -m serving`` on it (with a
monitoring config, so that its Prometheus page can be read), and measures in the same run:

- in-process: ``serving.bundle.SavedModelBundle.run`` in this process (what the server does per request);
- REST: ``POST /v1/models/retrieval:predict`` with ``{"instances": ["<user>"]}`` on a keep-alive connection
  (a lean raw-socket client: the clients share the machine's cores with the server), the JSON answer parsed;
- gRPC: ``PredictionService.Predict`` with the same user id and a 30 s deadline (as clients usually set);
- REST h2load / gRPC h2load: the same two calls sent by h2load (nghttp2's native load generator: HTTP/1.1
  keep-alive for REST, HTTP/2 prior knowledge with a hand-built gRPC frame for gRPC), whose CPU per request
  is small, so that these rows show what the server adds with little client cost mixed in. h2load posts one
  fixed body, so these rows ask for one fixed known user (``FIXED_USER``) every time, where the other rows
  draw a random known user per request. Each connection sends 20 warm-up requests first, in the same run
  (h2load opens new connections per run, and a connection's first requests are slow), which are dropped.
  h2load cannot see gRPC trailers (a failed call is still HTTP 200), so every h2load run is checked against
  the server's Prometheus page: the OK ``Predict`` count of the matching entrypoint grows by exactly the
  requests sent, no non-OK count grows; every logged status must be 200;
- gRPC floor / gRPC floor h2load: a "canned" grpcio server in a separate process (no TensorFlow imported):
  grpcio's sync server with the real server's thread-pool size, whose ``Predict`` returns a prebuilt copy of
  a real answer from the real server: what grpcio itself costs with zero work per call. Floors are reported,
  not judged against the target;

with one client and with eight concurrent clients (each client: one connection, one request in flight, the
next sent when the answer is in). The Python REST and gRPC clients are separate processes (one connection
each, as real clients are; ``--client-threads`` runs them as threads of this process instead, which adds the
clients' own GIL contention to the figures); the in-process calls are threads of this process. It prints
p50/p99 latency, throughput, each row's p50 overhead over in-process, gRPC / REST per load generator, and
the server process's CPU per request ("srv ms/req": user+sys CPU time of the server, or of the canned
server, read from the process's CPU-time clock just before and after the measured requests, per request;
for h2load rows, before and after the whole run, warm-up requests included).
The target: the server adds at most 1 ms at p50 on either transport, and gRPC is no slower than REST.

    python benchmarks/serving_latency.py                 # both sizes (the 1M model takes a few minutes to build)
    python benchmarks/serving_latency.py --sizes 1682    # quick (skips the 1M-candidate model)
    python benchmarks/serving_latency.py --load-generator h2load --no-floor   # h2load rows only, no floor

h2load comes from Debian's ``nghttp2-client`` package (``apt-get install -y nghttp2-client``); without it
the h2load rows are skipped with a note. Built models are kept under ``--work-dir`` and reused by later
runs. The machine's other load shows in the figures: run it on a quiet machine and compare ratios, not
absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

DIM = 32
USERS = 1000
K = 10
FIXED_USER = "42"  # the user of the h2load rows (h2load posts one fixed body) and of the floor's canned answer
H2LOAD = shutil.which("h2load")
PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


# --------------------------------------------------------------------------- the model
def index_config(candidates: int):
    from export.config import IndexConfig

    if candidates <= 10_000:
        return IndexConfig(k=K)  # the export default
    leaves = int(np.sqrt(candidates))  # ScaNN's rule of thumb: ~sqrt(N) leaves, search a few percent
    return IndexConfig(k=K, num_leaves=leaves, num_leaves_to_search=max(1, leaves // 20))


def build_model(base: Path, candidates: int, seed: int = 0) -> Path:
    """``base/retrieval/1``: a retrieval SavedModel over ``candidates`` synthetic titles (reused if present)."""
    path = base / "retrieval" / "1"
    if (path / "saved_model.pb").exists():
        return path
    from export import index as index_lib
    from export import servable
    from export.vectors import IndexVectors

    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((USERS + 1, DIM)).astype(np.float32)
    vectors = IndexVectors(
        query_keys=np.array([str(u) for u in range(1, USERS + 1)]),
        queries=queries,
        titles=np.array([f"Synthetic movie {i} ({1900 + i % 120})" for i in range(candidates)]),
        candidates=rng.standard_normal((candidates, DIM)).astype(np.float32),
    )
    start = time.perf_counter()
    layer, params = index_lib.build(index_config(candidates), vectors.candidates, name="retrieval_index")
    module = servable.Retrieval(vectors, layer, params)
    staging = base / "retrieval" / "_building"
    servable.save(module, staging)
    os.rename(staging, path)
    print(f"built {candidates:,}-candidate ScaNN model in {time.perf_counter() - start:.0f} s: {params}", flush=True)
    return path


# --------------------------------------------------------------------------- the server
METRICS_PATH = "/monitoring/prometheus/metrics"  # serving/monitoring.config's
MONITORING_CONFIG = f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n'  # --monitoring_config_file
REQUEST_COUNT = ":tensorflow:serving:request_count"  # serving.monitoring.REQUEST_COUNT (TF Serving's name)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time (s) of process ``pid`` so far (all its threads, live and ended), or None.

    Linux: the process's CPU-time clock, in ns (the clock id glibc's ``clock_getcpuclockid(pid)`` returns);
    else /proc/<pid>/stat's utime + stime (clock ticks, 10 ms); else psutil if it is installed.
    """
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except (OSError, AttributeError, OverflowError):
        pass
    try:  # /proc/<pid>/stat: the fields after the ")" that ends the command name; utime, stime are 14, 15
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return None
    return times.user + times.system


class Server:
    """``python -m serving`` on ``base_path``, with a monitoring config that serves the Prometheus page."""

    def __init__(self, base_path: Path) -> None:
        self.grpc_port, self.rest_port = free_port(), free_port()
        fd, self._monitoring = tempfile.mkstemp(prefix="serving_latency-", suffix=".config")
        with os.fdopen(fd, "w") as f:
            f.write(MONITORING_CONFIG)
        env = dict(os.environ, SERVING_HOST="127.0.0.1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving", "--model_name=retrieval", f"--model_base_path={base_path}",
             f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
             f"--monitoring_config_file={self._monitoring}"],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line.rstrip())

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("Exporting HTTP/REST API at" in line for line in self.log):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start:\n" + "\n".join(self.log[-40:]))

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid)

    def request_counts(self) -> Counter:
        """``:tensorflow:serving:request_count`` from the Prometheus page, summed by (API, entrypoint, status)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{METRICS_PATH}", timeout=30) as answer:
            text = answer.read().decode()
        counts: Counter = Counter()
        for line in text.splitlines():
            if not line.startswith(REQUEST_COUNT + "{"):
                continue
            labels, _, value = line[len(REQUEST_COUNT) + 1:].rpartition("} ")
            found = dict(_LABEL.findall(labels))
            counts[found.get("API", ""), found.get("entrypoint", ""), found.get("status", "")] += int(float(value))
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(self._monitoring)



def check_requests(before: Counter, after: Counter, entrypoint: str, sent: int) -> None:
    """The server answered exactly ``sent`` more OK ``Predict`` calls on ``entrypoint`` and no more errors."""
    grown = after[("Predict", entrypoint, "OK")] - before[("Predict", entrypoint, "OK")]
    errors = {key: after[key] - before[key] for key in after if key[2] != "OK" and after[key] != before[key]}
    if grown != sent or errors:
        raise RuntimeError(f"the server's request_count disagrees with h2load: {sent} {entrypoint} Predict calls "
                           f"sent, OK count grew by {grown}; non-OK counts grown: {errors or 'none'}")


# --------------------------------------------------------------------------- the canned gRPC server (floor)
def _canned_server(conn, response_bytes: bytes, workers: int, options: list) -> None:
    """The canned server's process: grpcio's sync server whose ``Predict`` returns ``response_bytes`` parsed
    once; it reports ``("ready", port, tensorflow_imported)``, answers "calls" with the number of Predict
    calls so far, and stops on "stop" (or when the parent goes away)."""
    from concurrent import futures

    import grpc

    from client.protos import predict_pb2

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
    handler = grpc.unary_unary_rpc_method_handler(predict, request_deserializer=predict_pb2.PredictRequest.FromString,
                                                  response_serializer=predict_pb2.PredictResponse.SerializeToString)
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
        self.proc = context.Process(target=_canned_server, daemon=True,
                                    args=(child, response_bytes, self.workers, server_options()))
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


# --------------------------------------------------------------------------- clients
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
    head = (b"POST /v1/models/retrieval:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")

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
    from client.protos import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "retrieval"
    tensor = request.inputs["user_id"]
    tensor.dtype = 7  # DT_STRING
    tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(user.encode())
    return request


def grpc_client(port: int):
    """``PredictionService.Predict`` through grpcio, called by its path as client.transports.grpc does, with
    client/'s own protos (no TensorFlow import in the client processes) and a 30 s deadline, as clients
    usually set one."""
    import grpc

    from client.protos import predict_pb2

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    predict = channel.unary_unary(PREDICT_PATH, request_serializer=predict_pb2.PredictRequest.SerializeToString,
                                  response_deserializer=predict_pb2.PredictResponse.FromString)

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
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
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
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", repr(exc)))
            continue
        conn.send(("done", mine))


def _no_cpu() -> None:
    return None


def _cpu_per_request(cpu_before, cpu_after, requests: int) -> float | None:
    if cpu_before is None or cpu_after is None:
        return None
    return (cpu_after - cpu_before) / requests


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

    def measure(self, transport: str, port: int, clients: int, requests_per_client: int, warmup: int = 20,
                cpu=_no_cpu) -> dict:
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
        return _summary(latencies, wall, _cpu_per_request(cpu_before, cpu_after, len(latencies)))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


def _summary(latencies: list[float], wall: float, srv_cpu: float | None = None) -> dict:
    latencies.sort()
    return {"p50": statistics.median(latencies), "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "rps": len(latencies) / wall, "n": len(latencies), "srv_cpu": srv_cpu}


def measure(make_client, clients: int, requests_per_client: int, warmup: int = 20, cpu=_no_cpu) -> dict:
    """Latencies (s) of ``requests_per_client`` calls from each of ``clients`` threads of this process, the
    throughput, and the server's CPU per request (``cpu()``: its CPU seconds, or None)."""
    latencies: list[float] = []
    lock = threading.Lock()
    cpu_before: list = []
    barrier = threading.Barrier(clients + 1, action=lambda: cpu_before.append(cpu()))
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            call = make_client()
            rng = np.random.default_rng(seed)
            users = [str(u) for u in rng.integers(1, USERS + 1, size=requests_per_client + warmup)]
            for user in users[:warmup]:
                call(user)
            mine = []
            barrier.wait()
            for user in users[warmup:]:
                start = time.perf_counter()
                call(user)
                mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)
        except BaseException as exc:  # noqa: BLE001 - re-raised by measure() once the threads are joined
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu_after = cpu()
    if errors:
        raise errors[0]
    return _summary(latencies, wall, _cpu_per_request(cpu_before[0], cpu_after, len(latencies)))


# --------------------------------------------------------------------------- h2load
H2LOAD_MISSING = ("h2load not found: install it with `apt-get install -y nghttp2-client` (Debian/Ubuntu); "
                  "skipping the h2load rows")
_H2LOAD_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                              r"(\d+) errored, (\d+) timeout")


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load_targets(rest_port: int | None, grpc_port: int | None) -> dict[str, tuple[str, bytes, list[str], bool]]:
    """``{transport: (url, body, headers, http1)}`` for the h2load rows, all for ``FIXED_USER``."""
    targets = {}
    if rest_port is not None:
        targets["REST"] = (f"http://127.0.0.1:{rest_port}/v1/models/retrieval:predict", rest_body(FIXED_USER),
                           ["content-type: application/json"], True)
    if grpc_port is not None:
        targets["gRPC"] = (f"http://127.0.0.1:{grpc_port}{PREDICT_PATH}",
                           grpc_frame(predict_request(FIXED_USER).SerializeToString()),
                           ["content-type: application/grpc", "te: trailers"], False)
    return targets


def h2load(target: tuple[str, bytes, list[str], bool], connections: int, requests: int, warmup: int = 20,
           cpu=_no_cpu) -> dict:
    """One h2load run over ``connections`` connections, one request in flight on each: ``warmup`` requests per
    connection, then ``requests`` measured ones.

    Each new connection's first requests are slow (the REST server starts a thread per connection; both
    servers warm up per connection): 1-40 ms here against a p50 of 2-3 ms with 8 connections. So, as the
    Python clients do, each connection warms up before it is measured, in the same run (a separate warm-up
    run would warm other connections): h2load sends ``warmup`` requests per connection more, and the first
    ``warmup * connections`` requests by start time, which hold every connection's first ones, are dropped.
    Latencies come from h2load's ``--log-file`` (start µs, status, µs to the end of the response), written
    to a fresh file: h2load appends to an existing one. Throughput is the measured requests over the span
    from the first one's start to the last one's end; the server's CPU is read around the whole run and
    divided by all requests sent. ``"sent"`` in the result is that total.
    """
    url, body, headers, http1 = target
    total = requests + warmup * connections  # h2load gives each connection total // connections requests
    with tempfile.TemporaryDirectory(prefix="serving_latency-h2load-") as tmp:
        data, log = Path(tmp, "body"), Path(tmp, "requests.log")
        data.write_bytes(body)
        command = [H2LOAD, "-n", str(total), "-c", str(connections), "-m", "1", "-t", "1", "-d", str(data),
                   f"--log-file={log}"]
        if http1:
            command.append("--h1")
        for header in headers:
            command += ["-H", header]
        cpu_before = cpu()
        done = subprocess.run(command + [url], check=False, capture_output=True, text=True, timeout=600)
        cpu_after = cpu()
        lines = log.read_text().splitlines() if log.exists() else []
    report = _H2LOAD_REQUESTS.search(done.stdout)
    if done.returncode != 0 or report is None:
        raise RuntimeError(f"h2load failed (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    counted, _, _, succeeded, failed, errored, timeouts = map(int, report.groups())
    if (counted, succeeded, failed, errored, timeouts) != (total, total, 0, 0, 0):
        raise RuntimeError(f"h2load: {report.group(0)} (wanted {total} succeeded)\n{done.stdout[-2000:]}")
    entries = sorted(tuple(int(x) for x in line.split("\t")[:3]) for line in lines)
    bad = [e for e in entries if e[1] != 200]
    if len(entries) != total or bad:
        raise RuntimeError(f"h2load logged {len(entries)} requests (sent {total}), {len(bad)} not HTTP 200: "
                           f"{bad[:5]}")
    measured = entries[warmup * connections:]
    span_us = max(s + d for s, _, d in measured) - measured[0][0]
    result = _summary([d / 1e6 for _, _, d in measured], span_us / 1e6, _cpu_per_request(cpu_before, cpu_after, total))
    return {**result, "sent": total}


def h2load_checked(target, connections: int, requests: int, cpu, counts) -> dict:
    """:func:`h2load`, checked against ``counts()``, the server's own count of answered calls, read before
    and after: it must have grown by exactly the calls h2load sent (warm-up included)."""
    before = counts()
    result = h2load(target, connections, requests, cpu=cpu)
    counts.check(before, counts(), result["sent"])
    return result


class _ServerCounts:
    """Served OK Predict calls of the real server, from its Prometheus page, for one entrypoint."""

    def __init__(self, server: Server, entrypoint: str) -> None:
        self._server, self._entrypoint = server, entrypoint

    def __call__(self) -> Counter:
        return self._server.request_counts()

    def check(self, before: Counter, after: Counter, sent: int) -> None:
        check_requests(before, after, self._entrypoint, sent)


class _CannedCounts:
    """Predict calls the canned server answered (it counts them itself)."""

    def __init__(self, canned: CannedServer) -> None:
        self._canned = canned

    def __call__(self) -> int:
        return self._canned.calls()

    def check(self, before: int, after: int, sent: int) -> None:
        if after - before != sent:
            raise RuntimeError(f"the canned gRPC server answered {after - before} Predict calls; h2load sent {sent}")


# --------------------------------------------------------------------------- main
TRANSPORTS = ("in-process", "REST", "gRPC", "gRPC floor", "REST h2load", "gRPC h2load", "gRPC floor h2load")


def generator_of(transport: str) -> str:
    return "h2load" if transport.endswith("h2load") else "python"


def rest_reference(transport: str) -> str | None:
    """The REST row a gRPC row is compared with: the same load generator's."""
    if not transport.startswith("gRPC"):
        return None
    return "REST h2load" if generator_of(transport) == "h2load" else "REST"


def run(candidates: int, work_dir: Path, requests: int, rounds: int, client_threads: bool,
        generators: tuple[str, ...], floor: bool) -> list[dict]:
    from serving.bundle import SavedModelBundle

    base = work_dir / f"n{candidates}"
    path = build_model(base, candidates)
    server = Server(base / "retrieval")
    bundle = processes = canned = None
    rows = []
    try:  # the server, client and canned-server processes are stopped whatever fails from here on
        bundle = SavedModelBundle.load(path, run_warmup=False)
        python_clients = "python" in generators
        processes = ClientProcesses(8) if python_clients and not client_threads else None
        server.wait_ready()
        if floor:  # one real answer, through the Python client path, for the canned server to send back
            real = grpc_client(server.grpc_port)(FIXED_USER)
            canned = CannedServer(real.SerializeToString())
            print(f"canned gRPC server (grpcio sync server, {canned.workers} worker threads, no TensorFlow) on "
                  f"port {canned.port}", flush=True)
        ports = {"REST": server.rest_port, "gRPC": server.grpc_port, "gRPC floor": canned and canned.port}
        cpus = {"REST": server.cpu, "gRPC": server.cpu, "gRPC floor": canned and canned.cpu}
        targets = {}
        counts = {}
        if "h2load" in generators:
            targets = h2load_targets(server.rest_port, server.grpc_port)
            counts = {"REST": _ServerCounts(server, "REST"), "gRPC": _ServerCounts(server, "GRPC")}
            if canned is not None:
                targets["gRPC floor"] = h2load_targets(None, canned.port)["gRPC"]
                counts["gRPC floor"] = _CannedCounts(canned)

        names = [t for t in TRANSPORTS if t == "in-process" or generator_of(t) in generators]
        names = [t for t in names if floor or "floor" not in t]

        def measure_transport(name: str, clients: int, per_client: int) -> dict:
            if name == "in-process":  # the bundle lives here: its clients are threads of this process
                return measure(lambda: in_process_client(bundle), clients, per_client)
            if generator_of(name) == "h2load":
                kind = name.removesuffix(" h2load")
                return h2load_checked(targets[kind], clients, per_client * clients, cpus[kind], counts[kind])
            client = CLIENTS["REST" if name == "REST" else "gRPC"]
            if processes is None:
                return measure(lambda: client(ports[name]), clients, per_client, cpu=cpus[name])
            return processes.measure("REST" if name == "REST" else "gRPC", ports[name], clients, per_client,
                                     cpu=cpus[name])

        for clients in (1, 8):
            per_client = max(20, requests // clients)
            pooled: dict[str, list[dict]] = {name: [] for name in names}
            for _ in range(rounds):  # interleave the transports so that machine load drifts hit them all
                for name, results in pooled.items():
                    results.append(measure_transport(name, clients, per_client))
            for name, results in pooled.items():
                cpu = [r["srv_cpu"] for r in results if r["srv_cpu"] is not None]
                rows.append({"candidates": candidates, "transport": name, "clients": clients,
                             "p50": statistics.median(r["p50"] for r in results),
                             "p99": statistics.median(r["p99"] for r in results),
                             "rps": statistics.median(r["rps"] for r in results),
                             "srv_cpu": statistics.median(cpu) if cpu else None})
    finally:
        if canned is not None:
            canned.stop()
        if processes is not None:
            processes.close()
        server.stop()
        if bundle is not None:
            bundle.close()
    return rows


def print_table(rows: list[dict]) -> None:
    by_key = {(r["candidates"], r["clients"], r["transport"]): r for r in rows}
    header = (f"{'candidates':>11} {'clients':>7} {'transport':>17} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
              f"{'+p50 ms':>8} {'p50 x':>6} {'vs REST':>8} {'srv ms/req':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        base = by_key[(r["candidates"], r["clients"], "in-process")]
        added = (r["p50"] - base["p50"]) * 1e3
        ratio = r["p50"] / base["p50"]
        reference = by_key.get((r["candidates"], r["clients"], rest_reference(r["transport"])))
        vs_rest = f"{r['p50'] / reference['p50']:.2f}" if reference else ""
        cpu = f"{r['srv_cpu'] * 1e3:.3f}" if r["srv_cpu"] is not None else ""
        print(f"{r['candidates']:>11,} {r['clients']:>7} {r['transport']:>17} {r['p50'] * 1e3:>8.3f} "
              f"{r['p99'] * 1e3:>8.3f} {r['rps']:>8.0f} {added:>8.3f} {ratio:>6.2f} {vs_rest:>8} {cpu:>10}")
    print()
    for r in rows:
        if r["transport"] == "in-process" or "floor" in r["transport"]:
            continue
        base = by_key[(r["candidates"], r["clients"], "in-process")]
        added = (r["p50"] - base["p50"]) * 1e3
        verdict = "meets" if added <= 1.0 else "MISSES"
        print(f"{r['transport']:>11} {r['candidates']:>9,} candidates, {r['clients']} client(s): server adds "
              f"{added:.3f} ms at p50 ({verdict} the 1 ms target)")
    for r in rows:
        if not r["transport"].startswith("gRPC") or "floor" in r["transport"]:
            continue
        rest = by_key.get((r["candidates"], r["clients"], rest_reference(r["transport"])))
        if rest is None:
            continue
        print(f"gRPC/REST p50 ({generator_of(r['transport'])} clients) at {r['candidates']:,} candidates, "
              f"{r['clients']} client(s): {r['p50'] / rest['p50']:.2f} "
              f"({'no slower' if r['p50'] <= rest['p50'] else 'SLOWER'})")
    for r in rows:
        if "floor" not in r["transport"]:
            continue
        base = by_key[(r["candidates"], r["clients"], "in-process")]
        rest = by_key.get((r["candidates"], r["clients"], rest_reference(r["transport"])))
        line = (f"floor ({generator_of(r['transport'])} clients) at {r['candidates']:,} candidates, "
                f"{r['clients']} client(s): grpcio alone (canned answer, no model) p50 {r['p50'] * 1e3:.3f} ms, "
                f"{(r['p50'] - base['p50']) * 1e3:+.3f} ms over in-process")
        if rest is not None:
            line += (f"; {r['p50'] / rest['p50']:.2f}x the REST p50 with the model ({rest['p50'] * 1e3:.3f} ms)")
            if r["srv_cpu"] is not None and rest["srv_cpu"] is not None:
                line += (f"; server CPU {r['srv_cpu'] * 1e3:.3f} ms/req vs REST's "
                         f"{rest['srv_cpu'] * 1e3:.3f}")
        print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1682, 1_000_000], help="candidate counts")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per round and setting")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting (medians reported)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/serving_latency"), help="built models")
    parser.add_argument("--client-threads", action="store_true",
                        help="run the Python REST/gRPC clients as threads of this process (the old method: "
                             "measures the clients' own GIL contention too) instead of one process per client")
    parser.add_argument("--load-generator", choices=("python", "h2load", "both"), default="both",
                        help="who sends the REST/gRPC requests: the Python clients, h2load, or both (default)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the canned grpcio server (the 'gRPC floor' rows)")
    args = parser.parse_args(argv)
    generators = ("python", "h2load") if args.load_generator == "both" else (args.load_generator,)
    if "h2load" in generators and H2LOAD is None:
        print(H2LOAD_MISSING, flush=True)
        generators = tuple(g for g in generators if g != "h2load")
    rows = []
    for size in args.sizes:
        rows.extend(run(size, args.work_dir, args.requests, args.rounds, args.client_threads, generators,
                        not args.no_floor))
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
