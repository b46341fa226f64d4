"""Latency of ``retrieval/by_history`` against ``retrieval/exclude_seen`` on the local server (issue 18 §7).

``by_history`` computes its query inside the SavedModel (the mean of the history's titles' rows of a table,
then a search of its own index, the history's titles excluded); ``exclude_seen`` looks a known user's query
up and excludes titles from its answer. This measures what the first costs against the second, in one run:

- exports a model store once into ``--work-dir`` (``python -m export --data synthetic --k 100 --tune-budget 0
  --model-base-path WORK_DIR/models``: synthetic MovieLens-100K-shaped data, about 2 minutes; reused by later
  runs), or takes an existing store with ``--store PATH`` (its ``retrieval`` versions must have
  ``by_history``);
- starts ``python -m serving`` on its ``retrieval`` model on free 127.0.0.1 ports (benchmarks/latency's
  ``Server``) and waits until a version is AVAILABLE;
- picks known users: ``--pool`` random ids of ``1..users`` (the manifest's user count) whose
  ``serving_default`` answer is not the popularity fallback; each one's K answers are its title pool;
- then, per iteration, draws one of those users and ``--history`` (50) distinct titles of its pool, and
  sends four one-row requests in a random order (so that the machine's noise hits all four alike):
  ``by_history`` with ``history_titles`` = [those titles] and ``exclude_seen`` with ``user_id`` = the user and
  ``exclude_titles`` = [the same titles], each over REST (``POST /v1/models/retrieval:predict`` with
  ``signature_name`` and columnar ``inputs``, plain ``requests`` on one keep-alive session) and over gRPC
  (``PredictionService.Predict`` through grpcio with client/'s protos, a 30 s deadline). The first
  ``--warmup`` iterations are not measured.

Every answer is checked: HTTP 200 / gRPC OK, ``movie_titles`` and ``scores`` of shape [1, K] (K: the
manifest's), no empty slot, ``fallback`` false, ``unmatched`` 0, and none of the 50 titles returned. It prints
p50/p99 per transport and signature, the server's CPU per request (user+sys CPU time of the server process
read just before and after each request), and the ratio by_history / exclude_seen of the p50s (and p99s)
per transport; the target is a p50 ratio of at most 1.5. It exits 1 if any request failed or was wrong.

    python benchmarks/history_latency.py                      # export into /tmp/history_latency once, then measure
    python benchmarks/history_latency.py --requests 1000      # more iterations (each sends 4 requests)
    python benchmarks/history_latency.py --store models       # an existing store (scripts/demo.sh's, say)

One client sends one request at a time; the client runs in this process and shares the machine's cores with
the server, alike for both signatures. Run it on a quiet machine and compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]  # export and serving, and retrieval_client (client/)

from latency.clients import PREDICT_PATH  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from latency.measure import cpu_per_request, summary  # noqa: E402
from latency.server import Server  # noqa: E402

MODEL = "retrieval"
SIGNATURES = ("by_history", "exclude_seen")
TRANSPORTS = ("REST", "gRPC")
TARGET = 1.5  # by_history p50 / exclude_seen p50
TIMEOUT = 30.0


def versions(model_dir: Path) -> list[Path]:
    """The published versions (decimal folder names with a saved_model.pb), oldest first."""
    if not model_dir.is_dir():
        return []
    found = [p for p in model_dir.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()]
    return sorted(found, key=lambda p: int(p.name))


def export_store(store: Path, k: int) -> None:
    """``python -m export`` of synthetic data into ``store`` (its output goes to store/../export.log)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    log = store.parent / "export.log"
    command = [
        sys.executable,
        "-m",
        "export",
        "--data",
        "synthetic",
        "--k",
        str(k),
        "--tune-budget",
        "0",
        "--model-base-path",
        str(store),
    ]
    print(f"exporting a model store into {store} (log: {log}) ...", flush=True)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "client"), os.environ.get("PYTHONPATH")])),
    )
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"the export failed (exit {code}); the end of {log}:\n" + "\n".join(tail))
    print(f"exported in {time.perf_counter() - start:.0f} s", flush=True)


def manifest(version: Path) -> dict:
    return json.loads((version / "assets.extra" / "manifest.json").read_text())


class Rest:
    """Plain ``requests`` on one keep-alive session: ``:predict`` with a signature and columnar inputs."""

    def __init__(self, port: int) -> None:
        import requests

        self.base = f"http://127.0.0.1:{port}/v1/models/{MODEL}"
        self.session = requests.Session()
        self.session.trust_env = False

    def status(self) -> dict:
        return self.session.get(self.base, timeout=TIMEOUT).json()

    def metadata(self) -> dict:
        return self.session.get(f"{self.base}/metadata", timeout=TIMEOUT).json()

    def predict(self, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"signature_name": signature, "inputs": inputs})
        answer = self.session.post(
            f"{self.base}:predict", data=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT
        )
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")
        outputs = answer.json()["outputs"]
        return {name: outputs.get(name) for name in ("movie_titles", "scores", "fallback", "unmatched")}

    def close(self) -> None:
        self.session.close()


class Grpc:
    """``PredictionService.Predict`` through grpcio, called by its path with client/'s protos."""

    def __init__(self, port: int) -> None:
        import grpc

        from retrieval_client.protos import predict_pb2

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.rpc = self.channel.unary_unary(
            PREDICT_PATH,
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )

    def predict(self, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
        from retrieval_client.protos import predict_pb2, types_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            tensor = request.inputs[name]
            tensor.dtype = types_pb2.DT_STRING
            rows = value if isinstance(value[0], list) else None
            tensor.tensor_shape.dim.add(size=len(value))
            if rows is not None:
                tensor.tensor_shape.dim.add(size=len(rows[0]))
            flat = [v for row in rows for v in row] if rows is not None else value
            tensor.string_val.extend(v.encode() for v in flat)
        response = self.rpc(request, timeout=TIMEOUT)
        return {name: _nested(response.outputs[name]) for name in ("movie_titles", "scores", "fallback", "unmatched")}

    def close(self) -> None:
        self.channel.close()


def _nested(proto) -> list:
    """A [batch] or [batch, K] output as nested lists (the fields these outputs use, or tensor_content)."""
    import numpy as np

    from retrieval_client.protos import types_pb2

    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == types_pb2.DT_STRING:
        values: Any = np.array([v.decode("utf-8", "replace") for v in proto.string_val], dtype=object)
    else:
        dtype, field = {
            types_pb2.DT_FLOAT: (np.float32, "float_val"),
            types_pb2.DT_BOOL: (np.bool_, "bool_val"),
            types_pb2.DT_INT32: (np.int32, "int_val"),
        }[proto.dtype]
        if proto.tensor_content:
            values = np.frombuffer(proto.tensor_content, dtype=dtype)
        else:
            values = np.array(list(getattr(proto, field)), dtype=dtype)
    size = int(np.prod(shape)) if shape else 1
    if len(values) != size:  # TF fills a short field with its last value
        values = np.resize(values, size) if len(values) else np.zeros(size, dtype=values.dtype)
    return values.reshape(shape).tolist()


def check(outputs: dict[str, Any], k: int, given: list[str]) -> None:
    """One row of K titles and scores, no empty slot, not the fallback, nothing unmatched, no given title."""
    titles, scores = outputs["movie_titles"], outputs["scores"]
    if not (isinstance(titles, list) and len(titles) == 1 and len(titles[0]) == k):
        raise AssertionError(f"movie_titles is not of shape [1, {k}]: {str(titles)[:200]}")
    if not (isinstance(scores, list) and len(scores) == 1 and len(scores[0]) == k):
        raise AssertionError(f"scores is not of shape [1, {k}]: {str(scores)[:200]}")
    if "" in titles[0]:
        raise AssertionError(f"an empty slot among the {k} titles")
    if outputs["fallback"] != [False]:
        raise AssertionError(f"fallback is {outputs['fallback']}, not [False]")
    if outputs["unmatched"] != [0]:
        raise AssertionError(f"unmatched is {outputs['unmatched']}, not [0]")
    returned = set(given) & set(titles[0])
    if returned:
        raise AssertionError(f"{len(returned)} given title(s) returned, e.g. {sorted(returned)[0]!r}")


def wait_available(rest: Rest, timeout: float = 600) -> int:
    """The version that is AVAILABLE (the newest, when several are)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = rest.status()
            ready = [int(v["version"]) for v in last.get("model_version_status", []) if v.get("state") == "AVAILABLE"]
            if ready:
                return max(ready)
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"{MODEL} is not AVAILABLE within {timeout:.0f} s: {last}")


def known_users(rest: Rest, users: int, k: int, pool: int, rng: random.Random) -> dict[str, list[str]]:
    """``pool`` random ids of 1..users that the model knows, each with its serving_default titles."""
    candidates = [str(u) for u in rng.sample(range(1, users + 1), min(pool, users))]
    outputs = rest.predict("serving_default", {"user_id": candidates})
    found = {}
    for user, titles, fallback in zip(candidates, outputs["movie_titles"], outputs["fallback"], strict=True):
        if not fallback and len(titles) == k and "" not in titles:
            found[user] = titles
    if not found:
        raise RuntimeError(f"none of {len(candidates)} user ids of 1..{users} is known to the model")
    return found


def run(args: argparse.Namespace) -> int:
    store = args.store or args.work_dir / "models"
    if args.store is None and not versions(store / MODEL):
        export_store(store, args.k)
    published = versions(store / MODEL)
    if not published:
        raise SystemExit(f"no {MODEL} version in {store}")
    info = manifest(published[-1])
    k = int(info["k"])
    users = int(info["data"]["counts"]["users"])
    titles_count = int(info["data"]["counts"]["titles"])
    print(
        f"store {store}: {MODEL} version {published[-1].name}, K = {k}, {users:,} users, {titles_count:,} titles, "
        f"data {info['data']['source'].get('kind')}",
        flush=True,
    )
    if args.history > titles_count - k:
        raise SystemExit(f"--history {args.history} leaves fewer than K = {k} of {titles_count} titles")

    server = Server(store / MODEL)
    rest = grpc = None
    try:
        server.wait_ready()
        rest = Rest(server.rest_port)
        version = wait_available(rest)
        signatures = rest.metadata()["metadata"]["signature_def"]["signature_def"]
        missing = [s for s in SIGNATURES if s not in signatures]
        if missing:
            raise SystemExit(f"{MODEL} version {version} has no {', '.join(missing)} signature (an older export?)")
        grpc = Grpc(server.grpc_port)
        rng = random.Random(args.seed)
        pools = known_users(rest, users, k, args.pool, rng)
        if any(len(titles) < args.history for titles in pools.values()):
            raise SystemExit(f"--history {args.history} is more than K = {k} answers per user")
        print(
            f"server on 127.0.0.1 (gRPC {server.grpc_port}, REST {server.rest_port}), version {version} AVAILABLE; "
            f"{len(pools)} known users; {args.warmup} warm-up + {args.requests} measured iterations of 4 requests, "
            f"history / exclusions of {args.history} titles",
            flush=True,
        )
        clients: dict[str, Rest | Grpc] = {"REST": rest, "gRPC": grpc}
        latencies: dict[tuple[str, str], list[float]] = {(t, s): [] for t in TRANSPORTS for s in SIGNATURES}
        cpu: dict[tuple[str, str], list[float]] = {key: [] for key in latencies}
        failures: dict[tuple[str, str], list[str]] = {key: [] for key in latencies}
        user_ids = sorted(pools, key=int)
        start = time.perf_counter()
        for i in range(args.warmup + args.requests):
            user = rng.choice(user_ids)
            given = rng.sample(pools[user], args.history)
            inputs: dict[str, dict[str, Any]] = {
                "by_history": {"history_titles": [given]},
                "exclude_seen": {"user_id": [user], "exclude_titles": [given]},
            }
            order = list(latencies)
            rng.shuffle(order)
            for transport, signature in order:
                cpu_before = server.cpu()
                t0 = time.perf_counter()
                try:
                    outputs = clients[transport].predict(signature, inputs[signature])
                    elapsed = time.perf_counter() - t0
                    check(outputs, k, given)
                except Exception as exc:
                    failures[transport, signature].append(f"iteration {i}, user {user}: {exc!r}"[:400])
                    continue
                cpu_after = server.cpu()
                if i >= args.warmup:
                    latencies[transport, signature].append(elapsed)
                    per = cpu_per_request(cpu_before, cpu_after, 1)
                    if per is not None:
                        cpu[transport, signature].append(per)
        wall = time.perf_counter() - start
    finally:
        if grpc is not None:
            grpc.close()
        if rest is not None:
            rest.close()
        server.stop()

    rows = {key: summary(values, wall) if values else None for key, values in latencies.items()}
    print()
    header = f"{'transport':>9} {'signature':>12} {'n':>5} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'srv ms/req':>10}"
    print(header)
    print("-" * len(header))
    for (transport, signature), row in rows.items():
        srv = cpu[transport, signature]
        srv_text = f"{statistics.mean(srv) * 1e3:.3f}" if srv else ""
        failed = len(failures[transport, signature])
        if row is None:
            print(f"{transport:>9} {signature:>12} {0:>5} {failed:>6}")
            continue
        print(
            f"{transport:>9} {signature:>12} {row['n']:>5} {failed:>6} {row['p50'] * 1e3:>8.3f} "
            f"{row['p99'] * 1e3:>8.3f} {srv_text:>10}"
        )
    print()
    for transport in TRANSPORTS:
        new, old = rows[transport, "by_history"], rows[transport, "exclude_seen"]
        if new is None or old is None:
            continue
        ratio = new["p50"] / old["p50"]
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(
            f"{transport}: by_history / exclude_seen p50 {ratio:.2f}x ({new['p50'] * 1e3:.3f} / "
            f"{old['p50'] * 1e3:.3f} ms; {verdict} the {TARGET}x target), p99 {new['p99'] / old['p99']:.2f}x, "
            f"K = {k}, {args.history} titles"
        )
    failing = {key: messages for key, messages in failures.items() if messages}
    if failing:
        print()
        for (transport, signature), messages in failing.items():
            print(f"FAILED {transport} {signature}: {len(messages)} request(s); first: {messages[0]}")
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured iterations (each: the 4 requests)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up iterations, not measured")
    parser.add_argument("--history", type=int, default=50, help="titles in each history / exclusion row")
    parser.add_argument("--pool", type=int, default=200, help="random user ids tried as the known users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=100, help="K of the export (not of --store, whose K is read)")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("/tmp/history_latency"), help="the exported store (WORK_DIR/models)"
    )
    parser.add_argument("--store", type=Path, help="an existing model store to serve instead of exporting one")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
