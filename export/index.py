"""Nearest-neighbour indexes over candidate vectors: TFRS' ScaNN (default) or BruteForce.

Both are indexed without identifiers, so a search returns (scores, candidate row numbers); the servable
maps rows to titles itself (it needs the rows to mask exclusions and invalid slots).

``search`` takes ``k`` as a tensor. For ScaNN it widens the search with k: ``leaves_to_search`` and
``pre_reorder_num_neighbors`` grow in proportion to k / K (both capped by the index size), so a query
asking for K + hundreds of exclusions still reaches enough points and re-scores them exactly
(``tfrs.layers.factorized_top_k.ScaNN.call`` passes only ``final_num_neighbors``; the widened call goes to
the same serialized searcher).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from export.config import IndexConfig

logger = logging.getLogger(__name__)

MIN_POINTS_PER_LEAF = 16
# --index auto: BruteForce below this many candidates, where exact search is about as fast as ScaNN's.
AUTO_BRUTE_FORCE_BELOW = 20_000
# Autotuning: a setting must reach the recall threshold plus this margin on the tuning queries, so that the
# validation's own recall check (other queries) passes too.
RECALL_MARGIN = 0.01
_LEAF_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0)
_REORDER = (50, 100, 200, 500, 1000, 2000)


@dataclasses.dataclass(frozen=True)
class EffectiveIndex:
    """The parameters actually used: ``num_leaves`` is clamped so that a leaf holds at least
    ``MIN_POINTS_PER_LEAF`` candidates on average (a tiny catalogue gets a few leaves, or one)."""

    kind: str
    k: int
    candidates: int
    num_leaves: int | None = None
    num_leaves_to_search: int | None = None
    training_iterations: int | None = None
    dimensions_per_block: int | None = None
    num_reordering_candidates: int | None = None


def kind_for(config: IndexConfig, candidates: int) -> str:
    if config.kind == "auto":
        return "brute_force" if candidates < AUTO_BRUTE_FORCE_BELOW else "scann"
    return config.kind


def effective(config: IndexConfig, candidates: int) -> EffectiveIndex:
    """The parameters for ``candidates`` points: ``num_leaves`` None grows as sqrt(N) (ScaNN's guidance),
    clamped so that a leaf holds at least ``MIN_POINTS_PER_LEAF`` points."""
    if kind_for(config, candidates) == "brute_force":
        return EffectiveIndex("brute_force", config.k, candidates)
    wanted = config.num_leaves if config.num_leaves is not None else round(np.sqrt(candidates))
    leaves = max(1, min(wanted, candidates // MIN_POINTS_PER_LEAF))
    return EffectiveIndex(
        kind="scann",
        k=config.k,
        candidates=candidates,
        num_leaves=leaves,
        num_leaves_to_search=max(1, min(config.num_leaves_to_search, leaves)),
        training_iterations=config.training_iterations,
        dimensions_per_block=config.dimensions_per_block,
        num_reordering_candidates=(
            min(max(config.num_reordering_candidates, config.k), candidates)
            if config.num_reordering_candidates
            else None
        ),
    )


def build(
    config: IndexConfig, candidates: np.ndarray, name: str
) -> tuple[tfrs.layers.factorized_top_k.TopK, EffectiveIndex]:
    """Index ``candidates`` [N, d] with the configured kind; returns the layer and its effective parameters."""
    n = candidates.shape[0]
    params = effective(config, n)
    vectors = tf.constant(candidates, dtype=tf.float32)
    if params.kind == "brute_force":
        logger.info("building a BruteForce index over %d candidates", n)
        layer = tfrs.layers.factorized_top_k.BruteForce(k=config.k, name=name)
        layer.index(vectors)
        return layer, params
    logger.info("building ScaNN index over %d candidates (%d leaves)", n, params.num_leaves)
    layer = tfrs.layers.factorized_top_k.ScaNN(
        k=config.k,
        distance_measure="dot_product",
        num_leaves=params.num_leaves,
        num_leaves_to_search=params.num_leaves_to_search,
        training_iterations=params.training_iterations,
        dimensions_per_block=params.dimensions_per_block,
        num_reordering_candidates=params.num_reordering_candidates,
        name=name,
    )
    layer.index(vectors)
    layer.searcher_name = f"scann-{name}-{uuid.uuid4().hex}"  # _searcher_handle: one resource per index
    return layer, params


def search(layer, params: EffectiveIndex, queries: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
    """(scores [B, k'], rows [B, k'] int32, -1 where the index had nothing), best first; k may be a tensor."""
    if params.kind == "brute_force":
        scores, rows = layer(queries, k=k)
        return scores, tf.cast(rows, tf.int32)
    from scann.scann_ops.py import scann_ops

    k = tf.convert_to_tensor(k, dtype=tf.int32)
    base = params.num_leaves_to_search
    leaves = tf.minimum(params.num_leaves, (base * k + params.k - 1) // params.k)
    leaves = tf.maximum(leaves, base)
    pre_reorder = -1
    if params.num_reordering_candidates:
        # Re-score as many candidates per wanted result as for K (reorder / K of them), capped at N.
        per_k = (k + params.k - 1) // params.k
        pre_reorder = tf.minimum(tf.maximum(k, params.num_reordering_candidates * per_k), params.candidates)
    searcher = scann_ops.ScannSearcher(_searcher_handle(layer))
    result = searcher.search_batched_parallel(
        queries, final_num_neighbors=k, pre_reorder_num_neighbors=pre_reorder, leaves_to_search=leaves
    )
    return result.distances, tf.cast(result.indices, tf.int32)


def _searcher_handle(layer) -> tf.Tensor:
    """The layer's ScaNN searcher resource, under a name of its own.

    ``scann_ops.searcher_from_module`` recreates the searcher with ScaNN's ``TensorsToScann`` op and an empty
    ``shared_name``; the resource manager then keys it by the op's node name, which is the same in every
    index's traced ``recreate_handle``. TF Serving runs each signature in one session graph and never
    notices, but ``tf.saved_model.load`` (eager, one resource manager per process) hands the first index's
    searcher to every later one, whose search then fails with ``SCANN_RET_CHECK_EQ`` (different
    dimensions). A name per built index (``build`` sets it) keeps them apart, also across loaded versions.
    """
    from scann.scann_ops.py import scann_ops

    state = layer._serialized_searcher
    return scann_ops.tensors_to_scann(
        state.dataset,
        state.scann_config,
        state.serialized_partitioner,
        state.datapoint_to_token,
        state.ah_codebook,
        state.hashed_dataset,
        state.int8_dataset,
        state.int8_multipliers,
        state.dp_norms,
        shared_name=layer.searcher_name,
    )


def tune(
    layer,
    params: EffectiveIndex,
    candidates: np.ndarray,
    queries: np.ndarray,
    recall_threshold: float,
    sample: int = 200,
    timed: int = 30,
    seed: int = 0,
) -> tuple[EffectiveIndex, dict]:
    """The fastest (leaves to search, re-ordering) whose recall@10 against exact search on ``sample`` of
    ``queries`` (chosen at random) reaches ``recall_threshold`` + ``RECALL_MARGIN``; both are search-time settings
    of the built index, so nothing is rebuilt. For each number of leaves (ascending) the smallest re-ordering
    that reaches the recall is kept, and those settings are timed at batch 1 (median of ``timed`` queries); the fastest
    wins, or among those within 10 % of it (noise, on a small index) the one with the best recall. If none
    reaches it, the setting with the highest recall is returned (validation then refuses to publish and
    says which flags to raise). Returns the chosen parameters and what was tried (the manifest records it).
    """
    import time

    from export.vectors import exact_top_k

    if params.kind != "scann":
        return params, {}
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(queries), size=min(sample, len(queries)), replace=False)
    held_out = tf.constant(queries[rows], dtype=tf.float32)
    k = min(10, params.k)
    _, exact = exact_top_k(queries[rows], candidates, k)
    target = min(1.0, recall_threshold + RECALL_MARGIN)
    num_leaves = params.num_leaves
    assert num_leaves is not None  # effective() sets it for every ScaNN index
    leaves_options = sorted({max(1, min(num_leaves, round(num_leaves * f))) for f in _LEAF_FRACTIONS})
    reorder_options = sorted({min(max(r, params.k), params.candidates) for r in _REORDER})

    def recall(setting: EffectiveIndex) -> float:
        _, found = search(layer, setting, held_out, k)
        found = found.numpy()
        return float(
            np.mean([len(set(f[:k].tolist()) & set(e.tolist())) / k for f, e in zip(found, exact, strict=True)])
        )

    def p50_ms(setting: EffectiveIndex) -> float:
        times = []
        for i in range(min(timed, len(rows))):
            one = held_out[i : i + 1]
            start = time.perf_counter()
            search(layer, setting, one, params.k)
            times.append((time.perf_counter() - start) * 1000)
        return float(np.median(times))

    tried: list[dict[str, Any]] = []
    for leaves in leaves_options:
        for reorder in reorder_options:
            setting = dataclasses.replace(params, num_leaves_to_search=leaves, num_reordering_candidates=reorder)
            value = recall(setting)
            entry = {"leaves_to_search": leaves, "reorder": reorder, "recall_at_10": round(value, 4)}
            tried.append(entry)
            if value >= target:
                search(layer, setting, held_out[:1], params.k)  # warm the traced search once
                entry["p50_ms"] = round(p50_ms(setting), 4)
                break  # more re-ordering at this many leaves only costs time
    timed_ok = [t for t in tried if "p50_ms" in t]
    if timed_ok:
        # The fastest; among settings within 10 % of it (timing noise on small indexes), the best recall.
        fastest = min(t["p50_ms"] for t in timed_ok)
        chosen = max(
            (t for t in timed_ok if t["p50_ms"] <= 1.1 * fastest), key=lambda t: (t["recall_at_10"], -t["p50_ms"])
        )
    else:
        chosen = max(tried, key=lambda t: (t["recall_at_10"], -t["leaves_to_search"], -t["reorder"]))
    tuned = dataclasses.replace(
        params, num_leaves_to_search=chosen["leaves_to_search"], num_reordering_candidates=chosen["reorder"]
    )
    logger.info(
        "ScaNN search settings for %d candidates: %d of %d leaves, re-order %d (recall@%d %.4f%s)",
        params.candidates,
        tuned.num_leaves_to_search,
        tuned.num_leaves,
        tuned.num_reordering_candidates,
        k,
        chosen["recall_at_10"],
        f", p50 {chosen['p50_ms']} ms" if "p50_ms" in chosen else "",
    )
    return tuned, {"target_recall": target, "queries": len(rows), "tried": tried, "chosen": chosen}
