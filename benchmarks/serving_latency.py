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
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]  # export and serving, and retrieval_client (client/)

from latency.canned import CannedServer  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from latency.clients import CLIENTS, ClientProcesses, grpc_client, in_process_client  # noqa: E402
from latency.h2load import H2LOAD, H2LOAD_MISSING, CannedCounts, ServerCounts, h2load_checked, h2load_targets  # noqa: E402
from latency.measure import measure  # noqa: E402
from latency.model import FIXED_USER, build_model  # noqa: E402
from latency.report import TRANSPORTS, generator_of, print_table  # noqa: E402
from latency.server import Server  # noqa: E402


def run(
    candidates: int,
    work_dir: Path,
    requests: int,
    rounds: int,
    client_threads: bool,
    generators: tuple[str, ...],
    floor: bool,
    baseline: Path | None = None,
) -> list[dict]:
    from serving.bundle import SavedModelBundle

    base = work_dir / f"n{candidates}"
    path = build_model(base, candidates)
    server = Server(base / "retrieval")
    bundle = processes = canned = old = None
    rows = []
    try:  # the server, client and canned-server processes are stopped whatever fails from here on
        bundle = SavedModelBundle.load(path, run_warmup=False)
        python_clients = "python" in generators
        processes = ClientProcesses(8) if python_clients and not client_threads else None
        server.wait_ready()
        if baseline is not None:  # the other checkout's server, measured in the same rounds
            old = Server(base / "retrieval", root=baseline)
            old.wait_ready()
        if floor:  # one real answer, through the Python client path, for the canned server to send back
            real = grpc_client(server.grpc_port)(FIXED_USER)
            canned = CannedServer(real.SerializeToString())
            print(
                f"canned gRPC server (grpcio sync server, {canned.workers} worker threads, no TensorFlow) on "
                f"port {canned.port}",
                flush=True,
            )
        ports = {
            "REST": server.rest_port,
            "gRPC": server.grpc_port,
            "gRPC floor": canned.port if canned is not None else None,
            "REST baseline": old.rest_port if old is not None else None,
            "gRPC baseline": old.grpc_port if old is not None else None,
        }
        cpus = {
            "REST": server.cpu,
            "gRPC": server.cpu,
            "gRPC floor": canned and canned.cpu,
            "REST baseline": old and old.cpu,
            "gRPC baseline": old and old.cpu,
        }
        targets = {}
        counts: dict[str, ServerCounts | CannedCounts] = {}
        if "h2load" in generators:
            targets = h2load_targets(server.rest_port, server.grpc_port)
            counts = {"REST": ServerCounts(server, "REST"), "gRPC": ServerCounts(server, "GRPC")}
            if canned is not None:
                targets["gRPC floor"] = h2load_targets(None, canned.port)["gRPC"]
                counts["gRPC floor"] = CannedCounts(canned)

        names = [t for t in TRANSPORTS if t == "in-process" or generator_of(t) in generators]
        names = [t for t in names if floor or "floor" not in t]
        names = [t for t in names if old is not None or "baseline" not in t]

        def measure_transport(name: str, clients: int, per_client: int) -> dict:
            if name == "in-process":  # the bundle lives here: its clients are threads of this process
                return measure(lambda: in_process_client(bundle), clients, per_client)
            if generator_of(name) == "h2load":
                kind = name.removesuffix(" h2load")
                return h2load_checked(targets[kind], clients, per_client * clients, cpus[kind], counts[kind])
            kind = "REST" if name.startswith("REST") else "gRPC"
            port = ports[name]
            assert port is not None  # names holds only the transports whose server runs
            if processes is None:
                return measure(lambda: CLIENTS[kind](port), clients, per_client, cpu=cpus[name])
            return processes.measure(kind, port, clients, per_client, cpu=cpus[name])

        for clients in (1, 8):
            per_client = max(20, requests // clients)
            pooled: dict[str, list[dict]] = {name: [] for name in names}
            for _ in range(rounds):  # interleave the transports so that machine load drifts hit them all
                for name, results in pooled.items():
                    results.append(measure_transport(name, clients, per_client))
            for name, results in pooled.items():
                cpu = [r["srv_cpu"] for r in results if r["srv_cpu"] is not None]
                rows.append(
                    {
                        "candidates": candidates,
                        "transport": name,
                        "clients": clients,
                        "p50": statistics.median(r["p50"] for r in results),
                        "p99": statistics.median(r["p99"] for r in results),
                        "rps": statistics.median(r["rps"] for r in results),
                        "srv_cpu": statistics.median(cpu) if cpu else None,
                    }
                )
    finally:
        if canned is not None:
            canned.stop()
        if processes is not None:
            processes.close()
        if old is not None:
            old.stop()
        server.stop()
        if bundle is not None:
            bundle.close()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1682, 1_000_000], help="candidate counts")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per round and setting")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting (medians reported)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/serving_latency"), help="built models")
    parser.add_argument(
        "--client-threads",
        action="store_true",
        help="run the Python REST/gRPC clients as threads of this process (the old method: "
        "measures the clients' own GIL contention too) instead of one process per client",
    )
    parser.add_argument(
        "--load-generator",
        choices=("python", "h2load", "both"),
        default="both",
        help="who sends the REST/gRPC requests: the Python clients, h2load, or both (default)",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the canned grpcio server (the 'gRPC floor' rows)")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also measure the server of another checkout of this project (a `git worktree` of main, "
        "say) in the same rounds: the 'REST baseline' and 'gRPC baseline' rows",
    )
    args = parser.parse_args(argv)
    generators: tuple[str, ...] = ("python", "h2load") if args.load_generator == "both" else (args.load_generator,)
    if "h2load" in generators and H2LOAD is None:
        print(H2LOAD_MISSING, flush=True)
        generators = tuple(g for g in generators if g != "h2load")
    rows = []
    for size in args.sizes:
        rows.extend(
            run(
                size,
                args.work_dir,
                args.requests,
                args.rounds,
                args.client_threads,
                generators,
                not args.no_floor,
                args.baseline,
            )
        )
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
