"""REST and gRPC latency and throughput of the local server against a direct in-process call.

For each catalogue size (1,682 candidates, as MovieLens 100K, and 1,000,000 synthetic ones) this builds a
``retrieval`` SavedModel with export's own servable and ScaNN index (export.servable.Retrieval,
export.index.build: the contract's signatures, K = 10), starts ``python -m serving`` on it, and measures in
the same run:

- in-process: ``serving.bundle.SavedModelBundle.run`` in this process (what the server does per request);
- REST: ``POST /v1/models/retrieval:predict`` with ``{"instances": ["<user>"]}`` on a keep-alive connection
  (a lean raw-socket client: the clients share the machine's cores with the server), the JSON answer parsed;
- gRPC: ``PredictionService.Predict`` with the same user id and a 30 s deadline (as clients usually set);

with one client and with eight concurrent clients, a random known user per request. REST and gRPC clients
are separate processes (one connection each, as real clients are; ``--client-threads`` runs them as threads
of this process instead, which adds the clients' own GIL contention to the figures); the in-process calls
are threads of this process. It prints p50/p99 latency, throughput, and each transport's p50 overhead over
in-process.
The target: the server adds at most 1 ms at p50 on either transport, and gRPC is no slower than REST.

    python benchmarks/serving_latency.py                 # both sizes (the 1M model takes a few minutes to build)
    python benchmarks/serving_latency.py --sizes 1682    # quick (skips the 1M-candidate model)

Built models are kept under ``--work-dir`` and reused by later runs. The machine's other load shows in
the figures: run it on a quiet machine and compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DIM = 32
USERS = 1000
K = 10


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
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base_path: Path) -> None:
        self.grpc_port, self.rest_port = free_port(), free_port()
        env = dict(os.environ, SERVING_HOST="127.0.0.1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving", "--model_name=retrieval", f"--model_base_path={base_path}",
             f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"],
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- clients
def in_process_client(bundle):
    def call(user: str) -> None:
        out = bundle.run("serving_default", {"user_id": np.array([user.encode()], dtype=object)})
        assert out["movie_titles"].shape == (1, K)
    return call


def rest_client(port: int):
    """A lean HTTP/1.1 keep-alive client (raw socket, one send per request), so that the client's own CPU,
    which shares the machine with the server, stays small; the JSON answer is still parsed and checked."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    head = (b"POST /v1/models/retrieval:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")

    def call(user: str) -> None:
        body = json.dumps({"instances": [user]}).encode()
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


def grpc_client(port: int):
    """``PredictionService.Predict`` through grpcio's stub, with client/'s own protos (no TensorFlow import in
    the client processes) and a 30 s deadline, as clients usually set one."""
    import grpc

    from client.protos import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(user: str) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "retrieval"
        tensor = request.inputs["user_id"]
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add(size=1)
        tensor.string_val.append(user.encode())
        response = stub.Predict(request, timeout=30)
        assert len(response.outputs["movie_titles"].string_val) == K
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
        except BaseException as exc:  # surfaced by the parent
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
        except BaseException as exc:
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

    def measure(self, transport: str, port: int, clients: int, requests_per_client: int, warmup: int = 20) -> dict:
        conns = self._conns[:clients]
        for i, conn in enumerate(conns):
            conn.send((transport, port, requests_per_client, warmup, i))
        replies = [conn.recv() for conn in conns]
        failed = [r[1] for r in replies if r[0] == "error"]
        if failed:
            raise RuntimeError(f"{transport} client failed: {failed[0]}")
        start = time.perf_counter()
        for conn in conns:
            conn.send("go")
        replies = [conn.recv() for conn in conns]
        wall = time.perf_counter() - start
        failed = [r[1] for r in replies if r[0] == "error"]
        if failed:
            raise RuntimeError(f"{transport} client failed: {failed[0]}")
        return _summary([x for r in replies for x in r[1]], wall)

    def close(self) -> None:
        for conn in self._conns:
            conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)


def _summary(latencies: list[float], wall: float) -> dict:
    latencies.sort()
    return {"p50": statistics.median(latencies), "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "rps": len(latencies) / wall, "n": len(latencies)}


def measure(make_client, clients: int, requests_per_client: int, warmup: int = 20) -> dict:
    """Latencies (s) of ``requests_per_client`` calls from each of ``clients`` threads of this process, and the
    throughput."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
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
        except BaseException as exc:  # surfaced below
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
    if errors:
        raise errors[0]
    return _summary(latencies, wall)


# --------------------------------------------------------------------------- main
def run(candidates: int, work_dir: Path, requests: int, rounds: int, client_threads: bool) -> list[dict]:
    from serving.bundle import SavedModelBundle

    base = work_dir / f"n{candidates}"
    path = build_model(base, candidates)
    server = Server(base / "retrieval")
    bundle = processes = None
    rows = []
    try:  # the server process is stopped whatever fails from here on
        bundle = SavedModelBundle.load(path, run_warmup=False)
        processes = None if client_threads else ClientProcesses(8)
        server.wait_ready()
        ports = {"REST": server.rest_port, "gRPC": server.grpc_port}

        def measure_transport(name: str, clients: int, per_client: int) -> dict:
            if name == "in-process":  # the bundle lives here: its clients are threads of this process
                return measure(lambda: in_process_client(bundle), clients, per_client)
            if processes is None:
                return measure(lambda: CLIENTS[name](ports[name]), clients, per_client)
            return processes.measure(name, ports[name], clients, per_client)

        for clients in (1, 8):
            per_client = max(20, requests // clients)
            pooled: dict[str, list[dict]] = {name: [] for name in ("in-process", "REST", "gRPC")}
            for _ in range(rounds):  # interleave the transports so that machine load drifts hit all three
                for name in pooled:
                    pooled[name].append(measure_transport(name, clients, per_client))
            for name, results in pooled.items():
                rows.append({"candidates": candidates, "transport": name, "clients": clients,
                             "p50": statistics.median(r["p50"] for r in results),
                             "p99": statistics.median(r["p99"] for r in results),
                             "rps": statistics.median(r["rps"] for r in results)})
    finally:
        if processes is not None:
            processes.close()
        server.stop()
        if bundle is not None:
            bundle.close()
    return rows


def print_table(rows: list[dict]) -> None:
    base = {(r["candidates"], r["clients"]): r for r in rows if r["transport"] == "in-process"}
    rest = {(r["candidates"], r["clients"]): r for r in rows if r["transport"] == "REST"}
    header = (f"{'candidates':>11} {'clients':>7} {'transport':>10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
              f"{'+p50 ms':>8} {'p50 x':>6} {'vs REST':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        key = (r["candidates"], r["clients"])
        added = (r["p50"] - base[key]["p50"]) * 1e3
        ratio = r["p50"] / base[key]["p50"]
        vs_rest = f"{r['p50'] / rest[key]['p50']:.2f}" if r["transport"] == "gRPC" else ""
        print(f"{r['candidates']:>11,} {r['clients']:>7} {r['transport']:>10} {r['p50'] * 1e3:>8.3f} "
              f"{r['p99'] * 1e3:>8.3f} {r['rps']:>8.0f} {added:>8.3f} {ratio:>6.2f} {vs_rest:>8}")
    print()
    for r in rows:
        if r["transport"] == "in-process":
            continue
        key = (r["candidates"], r["clients"])
        added = (r["p50"] - base[key]["p50"]) * 1e3
        verdict = "meets" if added <= 1.0 else "MISSES"
        print(f"{r['transport']:>4} {r['candidates']:>9,} candidates, {r['clients']} client(s): server adds "
              f"{added:.3f} ms at p50 ({verdict} the 1 ms target)")
    for key, r in rest.items():
        g = next(x for x in rows if x["transport"] == "gRPC" and (x["candidates"], x["clients"]) == key)
        print(f"gRPC/REST p50 at {key[0]:,} candidates, {key[1]} client(s): {g['p50'] / r['p50']:.2f} "
              f"({'no slower' if g['p50'] <= r['p50'] else 'SLOWER'})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1682, 1_000_000], help="candidate counts")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per round and setting")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting (medians reported)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/serving_latency"), help="built models")
    parser.add_argument("--client-threads", action="store_true",
                        help="run the REST/gRPC clients as threads of this process (the old method: measures the "
                             "clients' own GIL contention too) instead of one process per client")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        rows.extend(run(size, args.work_dir, args.requests, args.rounds, args.client_threads))
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
