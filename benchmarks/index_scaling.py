"""ScaNN vs BruteForce through the exported SavedModel, batch of 1, at growing catalogue sizes; prints figures.

    python benchmarks/index_scaling.py [--sizes 10000,100000,1000000] [--dim 32] [--queries 300]

For each size, clustered random candidates in the retrieval layout ([embedding, bias, popularity], d = dim
+ 2) are indexed twice, as ``python -m export`` does it: BruteForce, and ScaNN with the export's defaults
(about sqrt(N) leaves, search settings chosen by ``export.index.tune`` against ``--recall-threshold``, no
hand-set flag). Each is saved as the retrieval SavedModel (export/servable.py), loaded back with
serving.bundle (as TF Serving and the local server load it) and called through ``serving_default`` one
user at a time. Printed per size and index: build time (including ScaNN's tuning), SavedModel size, p50
and p99 latency of the call, recall@10 against exact search over the same vectors. The last line is
``1M: speedup=<BruteForce p50 / ScaNN p50> recall@10=<ScaNN's>`` when 1M is among the sizes.
Queries for latency and recall are users the tuning never saw. 10M candidates need about 3 GB per copy of
the vectors: add it to --sizes where memory allows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from export import environment  # noqa: E402  (ROOT on sys.path first)

environment.configure()


def make_vectors(n: int, dim: int, users: int, seed: int = 0):
    import numpy as np

    from export.vectors import IndexVectors

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, dim)).astype(np.float32)
    embeddings = centres[rng.integers(0, 256, size=n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    pop = rng.pareto(2.0, size=(n, 1)).astype(np.float32)
    candidates = np.hstack([embeddings, 0.1 * rng.normal(size=(n, 1)).astype(np.float32), pop / pop.max()])
    queries = np.zeros((users + 1, dim + 2), np.float32)
    queries[1:, :dim] = centres[rng.integers(0, 256, size=users)] + 0.5 * rng.normal(size=(users, dim))
    queries[1:, dim] = 1.0
    queries[0, dim + 1] = 1.0
    keys = np.array([str(i) for i in range(1, users + 1)], dtype=object)
    titles = np.array([f"Movie {i:08d}" for i in range(n)], dtype=object)
    return IndexVectors(keys, queries, titles, candidates.astype(np.float32))


def measure(kind: str, vectors, tuning_rows, test_keys, threshold: float, folder: Path) -> dict:
    import numpy as np

    from export import index as index_lib
    from export import servable
    from export.config import IndexConfig
    from export.vectors import exact_top_k
    from serving.bundle import SavedModelBundle

    start = time.perf_counter()
    layer, params = index_lib.build(IndexConfig(kind=kind, k=10), vectors.candidates, name=f"{kind}_index")
    tuning: dict[str, Any] = {}
    if kind == "scann":
        params, tuning = index_lib.tune(layer, params, vectors.candidates, vectors.queries[tuning_rows], threshold)
    build_s = time.perf_counter() - start
    path = folder / kind
    servable.save(servable.Retrieval(vectors, layer, params), path)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    bundle = SavedModelBundle.load(str(path), run_warmup=False)
    try:
        times, found = [], []
        for key in test_keys:
            one = {"user_id": np.array([key.encode()], dtype=object)}
            t = time.perf_counter()
            out = bundle.run("serving_default", one)
            times.append((time.perf_counter() - t) * 1000)
            found.append([title.decode() for title in out["movie_titles"][0]])
    finally:
        bundle.close()
    _, exact = exact_top_k(vectors.query_rows(test_keys), vectors.candidates, 10)
    recall = float(
        np.mean([len(set(f) & set(vectors.titles[e].tolist())) / 10 for f, e in zip(found, exact, strict=True)])
    )
    warm = times[5:] or times
    chosen = tuning.get("chosen", {})
    return {
        "kind": kind,
        "build_s": build_s,
        "size_mb": size / 2**20,
        "p50": float(np.percentile(warm, 50)),
        "p99": float(np.percentile(warm, 99)),
        "recall": recall,
        "settings": (
            f"{params.num_leaves_to_search}/{params.num_leaves} leaves, re-order {params.num_reordering_candidates}"
            if kind == "scann"
            else "exact"
        ),
        "tuned_recall": chosen.get("recall_at_10"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=300, help="users timed and scored per index")
    parser.add_argument("--recall-threshold", type=float, default=0.95)
    args = parser.parse_args()

    import numpy as np

    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{'candidates':>11} {'index':<12} {'build s':>8} {'MiB':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'recall@10':>9}  settings"
    )
    results = {}
    for n in sizes:
        users = 400 + args.queries
        vectors = make_vectors(n, args.dim, users)
        rows = np.arange(1, users + 1)
        tuning_rows, test_keys = rows[:400], vectors.query_keys[rows[400:] - 1].tolist()
        with tempfile.TemporaryDirectory(prefix="index-scaling-") as tmp:
            for kind in ("brute_force", "scann"):
                r = measure(kind, vectors, tuning_rows, test_keys, args.recall_threshold, Path(tmp))
                results[(n, kind)] = r
                print(
                    f"{n:>11,} {kind:<12} {r['build_s']:>8.1f} {r['size_mb']:>7.1f} {r['p50']:>8.3f} "
                    f"{r['p99']:>8.3f} {r['recall']:>9.4f}  {r['settings']}",
                    flush=True,
                )
                shutil.rmtree(Path(tmp) / kind, ignore_errors=True)
        speedup = results[(n, "brute_force")]["p50"] / results[(n, "scann")]["p50"]
        print(f"{n:>11,} ScaNN vs BruteForce p50: {speedup:.1f}x", flush=True)
    if 1_000_000 in sizes:
        bf, sc = results[(1_000_000, "brute_force")], results[(1_000_000, "scann")]
        print(f"1M: speedup={bf['p50'] / sc['p50']:.1f} recall@10={sc['recall']:.4f}")


if __name__ == "__main__":
    main()
