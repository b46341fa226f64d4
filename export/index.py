"""Nearest-neighbour indexes over candidate vectors: TFRS' ScaNN (default) or BruteForce.

Both are indexed without identifiers, so a search returns (scores, candidate row numbers); the servable
maps rows to titles itself (it needs the rows to mask exclusions and invalid slots).

``search`` takes ``k`` as a tensor. For ScaNN it widens the search with k: ``leaves_to_search`` and
``pre_reorder_num_neighbors`` grow in proportion to k / K (both capped by the index size), so a query
asking for K + hundreds of exclusions still reaches enough points and re-scores them exactly (``tfrs.layers.factorized_top_k.ScaNN.call`` passes only
``final_num_neighbors``; the widened call goes to the same serialized searcher).
"""

from __future__ import annotations

import dataclasses
import logging

import export  # noqa: F401

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from export.config import IndexConfig

logger = logging.getLogger(__name__)

MIN_POINTS_PER_LEAF = 16


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


def effective(config: IndexConfig, candidates: int) -> EffectiveIndex:
    if config.kind == "brute_force":
        return EffectiveIndex("brute_force", config.k, candidates)
    leaves = max(1, min(config.num_leaves, candidates // MIN_POINTS_PER_LEAF))
    return EffectiveIndex(
        kind="scann", k=config.k, candidates=candidates, num_leaves=leaves,
        num_leaves_to_search=max(1, min(config.num_leaves_to_search, leaves)),
        training_iterations=config.training_iterations, dimensions_per_block=config.dimensions_per_block,
        num_reordering_candidates=(min(max(config.num_reordering_candidates, config.k), candidates)
                                   if config.num_reordering_candidates else None))


def build(config: IndexConfig, candidates: np.ndarray, name: str) -> tuple[tfrs.layers.factorized_top_k.TopK, EffectiveIndex]:
    """Index ``candidates`` [N, d] with the configured kind; returns the layer and its effective parameters."""
    n = candidates.shape[0]
    params = effective(config, n)
    vectors = tf.constant(candidates, dtype=tf.float32)
    if params.kind == "brute_force":
        layer = tfrs.layers.factorized_top_k.BruteForce(k=config.k, name=name)
        layer.index(vectors)
        return layer, params
    logger.info("building ScaNN index over %d candidates (%d leaves)", n, params.num_leaves)
    layer = tfrs.layers.factorized_top_k.ScaNN(
        k=config.k, distance_measure="dot_product", num_leaves=params.num_leaves,
        num_leaves_to_search=params.num_leaves_to_search, training_iterations=params.training_iterations,
        dimensions_per_block=params.dimensions_per_block,
        num_reordering_candidates=params.num_reordering_candidates, name=name)
    layer.index(vectors)
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
    searcher = scann_ops.searcher_from_module(layer._serialized_searcher)  # noqa: SLF001 (TFRS keeps it private)
    result = searcher.search_batched_parallel(queries, final_num_neighbors=k,
                                              pre_reorder_num_neighbors=pre_reorder, leaves_to_search=leaves)
    return result.distances, tf.cast(result.indices, tf.int32)
