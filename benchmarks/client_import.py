"""Import cost of the client against the tensorflow-serving-api route, each in fresh interpreters.

Measures, median of ``--runs`` fresh processes each:
- ``import retrieval_client`` (the package; no transport is loaded until a client is made),
- ``import retrieval_client`` + ``retrieval_client.connect("http://...")`` (loads requests),
- ``import retrieval_client`` + ``retrieval_client.connect("grpc://...")`` (loads grpc and our generated protos),
- ``from tensorflow_serving.apis import predict_pb2`` (what a gRPC client needs on the usual route),
with each process's peak RSS, and checks that no client process loaded TensorFlow.
Target (issue 4): ``import retrieval_client`` <= 0.3 s. Exit status 1 if it is missed or TensorFlow was loaded.

    python benchmarks/client_import.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.3
PROBE = r"""
import json, resource, sys, time
t = time.perf_counter()
{code}
elapsed = time.perf_counter() - t
print(json.dumps({{"s": elapsed, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tensorflow": "tensorflow" in sys.modules}}))
"""
CASES = {
    "import retrieval_client": "import retrieval_client",
    "import retrieval_client + connect(http://)": "import retrieval_client as c\nc.connect('http://127.0.0.1:1').close()",
    "import retrieval_client + connect(grpc://)": "import retrieval_client as c\nc.connect('grpc://127.0.0.1:1').close()",
    "tensorflow_serving.apis.predict_pb2": "from tensorflow_serving.apis import predict_pb2",
}


def measure(code: str, runs: int) -> dict:
    samples = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE.format(code=code)],
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            timeout=300,
            env=dict(
                os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "client"), str(ROOT)]), TF_CPP_MIN_LOG_LEVEL="3"
            ),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{code!r} failed:\n{proc.stderr[-2000:]}")
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "s": statistics.median(s["s"] for s in samples),
        "rss_mb": statistics.median(s["rss_mb"] for s in samples),
        "tensorflow": any(s["tensorflow"] for s in samples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {
        name: measure(code, args.runs if "tensorflow" not in name else max(1, args.runs // 2))
        for name, code in CASES.items()
    }
    tf = results["tensorflow_serving.apis.predict_pb2"]
    print(f"{'':44} {'time':>9} {'peak RSS':>10} {'vs tf-serving-api':>18}  TensorFlow loaded")
    for name, r in results.items():
        ratio = "baseline" if r is tf else f"{tf['s'] / r['s']:.1f}x faster"
        print(f"{name:44} {r['s']:8.3f}s {r['rss_mb']:8.0f}MB {ratio:>18}  {r['tensorflow']}")
    ok = results["import retrieval_client"]["s"] <= TARGET_S and not any(
        r["tensorflow"] for name, r in results.items() if name.startswith("import retrieval_client")
    )
    print(f"target: import retrieval_client <= {TARGET_S} s and no TensorFlow: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
