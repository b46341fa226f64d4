"""What the client adds per call over the raw request it sends, on both transports, in one run.

Starts ``python -m serving`` on a tiny BruteForce store (exported with ``python -m export`` on synthetic
data, or ``--store`` to reuse one holding ``retrieval/<version>/``) and times, interleaved in rounds so that
machine load hits all alike, ``--calls`` calls of one user's recommendations each way:

REST   raw requests.post           a new connection per call (what a quick script does)
       raw requests.Session.post   the same body on a pooled connection, JSON parsed, nothing else
       client.recommend            client.connect("http://...")
gRPC   raw stub.Predict            channel.unary_unary on Predict's path (a stub), one channel, prebuilt request
       client.recommend            client.connect("grpc://...")

It prints the median per call and the client's overhead over each raw call (difference and ratio).

    python benchmarks/client_overhead.py [--calls 300] [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]  # export and serving, and retrieval_client (client/)

import retrieval_client as client  # noqa: E402 - this checkout's client: importable once on sys.path (above)
from retrieval_client.protos import predict_pb2, types_pb2  # noqa: E402 - the same
from serving.testing import ServerProcess  # noqa: E402 - the same

USER = "42"


def export_store(work: Path) -> Path:
    store = work / "models"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "--data",
            "synthetic",
            "--synthetic-size",
            "tiny",
            "--epochs",
            "1",
            "--index",
            "brute_force",
            "--model-base-path",
            str(store),
        ],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"export failed:\n{proc.stderr[-3000:]}")
    return store


def start_server(store: Path) -> ServerProcess:
    """The local server on ``store``'s retrieval model (serving.testing: free ports, ready when it logs so)."""
    return ServerProcess("--model_name=retrieval", f"--model_base_path={store / 'retrieval'}", rest=True).start(300)


def contenders(rest_url: str, grpc_url: str):
    predict_url = f"{rest_url}/v1/models/retrieval:predict"
    body = json.dumps({"inputs": {"user_id": [USER]}}).encode()
    session = requests.Session()
    channel = grpc.insecure_channel(grpc_url.removeprefix("grpc://"))
    predict = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",  # what a generated stub does
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "retrieval"
    request.inputs["user_id"].dtype = types_pb2.DT_STRING
    request.inputs["user_id"].tensor_shape.dim.add(size=1)
    request.inputs["user_id"].string_val.append(USER.encode())
    rest_client, grpc_client = client.connect(rest_url), client.connect(grpc_url)

    def raw_post():
        r = requests.post(predict_url, data=body, timeout=10)
        r.raise_for_status()
        r.json()

    def raw_session():
        r = session.post(predict_url, data=body, timeout=10)
        r.raise_for_status()
        r.json()

    calls = {
        "REST raw requests.post": raw_post,
        "REST raw Session.post": raw_session,
        "REST client.recommend": lambda: rest_client.recommend(USER),
        "gRPC raw stub.Predict": lambda: predict(request, timeout=10),
        "gRPC client.recommend": lambda: grpc_client.recommend(USER),
    }
    # same answer both ways, or the comparison means nothing
    assert [h.title for h in rest_client.recommend(USER)] == [
        t.decode() for t in predict(request, timeout=10).outputs["movie_titles"].string_val
    ]
    return calls, [session.close, channel.close, rest_client.close, grpc_client.close]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--store", type=Path, help="a model store with retrieval/<version>/ (default: export one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or export_store(Path(tmp))
        server = start_server(store)
        rest_url, grpc_url = f"http://127.0.0.1:{server.rest_port}", f"grpc://127.0.0.1:{server.port}"
        try:
            calls, closers = contenders(rest_url, grpc_url)
            for call in calls.values():  # warm up connections and the model
                for _ in range(20):
                    call()
            samples: dict[str, list[float]] = {name: [] for name in calls}
            per_round = max(1, args.calls // args.rounds)
            for _ in range(args.rounds):
                for name, call in calls.items():
                    for _ in range(per_round):
                        start = time.perf_counter()
                        call()
                        samples[name].append(time.perf_counter() - start)
            for close in closers:
                close()
        finally:
            server.stop()
    med = {name: statistics.median(s) * 1e6 for name, s in samples.items()}
    print(f"{per_round * args.rounds} calls each, median per call (one user, K=10):")
    for name, us in med.items():
        print(f"  {name:28} {us:8.0f} us")
    print("client overhead:")
    for ours, raw in (
        ("REST client.recommend", "REST raw Session.post"),
        ("REST client.recommend", "REST raw requests.post"),
        ("gRPC client.recommend", "gRPC raw stub.Predict"),
    ):
        print(f"  {ours} vs {raw:24} {med[ours] - med[raw]:+7.0f} us  ({med[ours] / med[raw]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
