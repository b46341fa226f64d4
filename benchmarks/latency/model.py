"""The benchmark's model: a ``retrieval`` SavedModel built with export's own servable and ScaNN index."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

DIM = 32

USERS = 1000

K = 10

FIXED_USER = "42"  # the user of the h2load rows (h2load posts one fixed body) and of the floor's canned answer


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
