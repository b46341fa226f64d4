"""Export and validate a ScaNN retrieval index over 1M synthetic candidates; print time and peak memory.

    python benchmarks/export_scann_1m.py [--candidates 1000000] [--dim 64] [--users 1000]
                                          [--num-leaves 100] [--leaves-to-search 20] [--reorder 500]

ScaNN parameters default to the fixed settings its recorded figures were measured with (100 leaves, 20
searched, re-order 500); the export now sizes and tunes them itself: benchmarks/index_scaling.py measures that.

The export runs in a child process (so its peak RSS is measurable: ``ru_maxrss`` of the children, which
tracemalloc cannot see for TensorFlow's C++ allocations). The child builds the TFRS ScaNN index over
clustered random vectors (the retrieval layout: [embedding, bias, popularity]), saves the SavedModel with
its signatures and warmup records, and runs the same pre-publish validation as ``python -m export``:
a fresh process loads it through serving.bundle, answers must equal the in-memory module's, exclusions
hold, and recall@10 against exact search must be >= 0.95. Steps are timed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def child(args) -> None:
    import numpy as np

    from export import index as index_lib
    from export import servable, warmup
    from export.config import IndexConfig
    from export.validation.requests import warmup_inputs
    from export.validation.specs import RetrievalSpec
    from export.validation.validator import validate
    from export.vectors import IndexVectors

    timings = {}
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(256, args.dim)).astype(np.float32)
    assign = rng.integers(0, len(centers), size=args.candidates)
    embeddings = centers[assign] + 0.5 * rng.normal(size=(args.candidates, args.dim)).astype(np.float32)
    bias = (0.1 * rng.normal(size=(args.candidates, 1))).astype(np.float32)
    pop = rng.pareto(2.0, size=(args.candidates, 1)).astype(np.float32)
    pop /= pop.max()
    candidates = np.hstack([embeddings, bias, pop]).astype(np.float32)
    users = np.array([str(i) for i in range(1, args.users + 1)], dtype=object)
    queries = np.zeros((args.users + 1, args.dim + 2), np.float32)
    queries[1:, : args.dim] = centers[rng.integers(0, len(centers), size=args.users)] + 0.5 * rng.normal(
        size=(args.users, args.dim)
    )
    queries[1:, args.dim] = 1.0
    queries[0, args.dim + 1] = 1.0
    titles = np.array([f"Movie {i:07d} (2000)" for i in range(args.candidates)], dtype=object)
    vectors = IndexVectors(users, queries, titles, candidates)
    timings["make_vectors_s"] = time.perf_counter() - t

    t = time.perf_counter()
    config = IndexConfig(
        kind="scann",
        k=10,
        num_leaves=args.num_leaves,
        num_leaves_to_search=args.leaves_to_search,
        num_reordering_candidates=args.reorder or None,
    )  # 0 = off, as the CLI's --scann-reorder
    layer, params = index_lib.build(config, candidates, name="retrieval_index")
    module = servable.Retrieval(vectors, layer, params)
    timings["build_index_s"] = time.perf_counter() - t

    seen = {u: titles[rng.integers(0, args.candidates, size=50)].tolist() for u in users.tolist()[:20]}
    popular = titles[np.argsort(-pop[:, 0])[:20]].tolist()
    spec = RetrievalSpec(vectors, seen=seen, popular=popular)
    requests = spec.requests(64, rng)
    out = Path(args.out)
    t = time.perf_counter()
    servable.save(module, out)
    warmup.write(out, warmup.requests("retrieval", module.signatures(), warmup_inputs(requests)))
    timings["save_s"] = time.perf_counter() - t

    t = time.perf_counter()
    report = validate(spec, out, module, requests, k=10, recall_threshold=0.95, tolerance=1e-3, timeout_s=1800)
    timings["validate_s"] = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                **timings,
                "recall_at_10": report["recall_at_10"],
                "saved_model_bytes": size,
                "index": dict(vars(params)),
            }
        )
    )


def _index_defaults():
    from export.config import IndexConfig  # no TensorFlow import

    return IndexConfig()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    defaults = _index_defaults()
    parser.add_argument("--num-leaves", type=int, default=100)
    parser.add_argument("--leaves-to-search", type=int, default=defaults.num_leaves_to_search)
    parser.add_argument("--reorder", type=int, default=defaults.num_reordering_candidates, help="0 = off")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    with tempfile.TemporaryDirectory(prefix="scann-1m-") as tmp:
        out = Path(tmp) / "staged"
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--out",
            str(out),
            "--candidates",
            str(args.candidates),
            "--dim",
            str(args.dim),
            "--users",
            str(args.users),
            "--num-leaves",
            str(args.num_leaves),
            "--leaves-to-search",
            str(args.leaves_to_search),
            "--reorder",
            str(args.reorder),
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True)
        total = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest descendant, KiB on Linux
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-8000:])
        print(f"FAILED after {total:.1f} s (exit {proc.returncode})")
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"ScaNN export + validation over {args.candidates:,} candidates (d={args.dim + 2}), {os.cpu_count()} CPUs")
    for key in ("make_vectors_s", "build_index_s", "save_s", "validate_s"):
        print(f"  {key:<16} {result[key]:8.1f} s")
    print(f"  total wall time  {total:8.1f} s")
    print(f"  peak RSS (largest process) {peak_kib / 1024:8.0f} MiB")
    print(f"  SavedModel size  {result['saved_model_bytes'] / 2**20:8.0f} MiB")
    print(f"  recall@10 vs exact: {result['recall_at_10']:.4f} (threshold 0.95)")
    print(f"  index: {result['index']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
