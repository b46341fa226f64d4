"""Query and candidate vectors for the indexes, with the answer for unknown keys built in.

Everything served is a pure dot product, so the same vectors work for ScaNN and BruteForce:

retrieval (user -> movies)
    candidate row per unique title:  [movie_embedding, movie_bias, popularity]
    query for a known user:          [user_embedding,  1,          0]   -> embedding . embedding + bias
    query for an unknown user:       [0 ... 0,         0,          1]   -> popularity
  blended with EASE's factors (export/selection.py chooses the weights a, b on validation):
    candidate row:                   [movie_embedding,    movie_bias, popularity, ease_item]
    query for a known user:          [a user_embedding,   a,          0,          b ease_user]
    query for an unknown user:       [0 ... 0,            0,          1,          0 ... 0]

similar_movies (movie -> movies)
    candidate row per unique title:  [unit(movie_embedding), popularity]
    query for a known title:         [unit(movie_embedding), 0]          -> cosine similarity
    query for an unknown title:      [0 ... 0,               1]          -> popularity

``popularity`` is the title's number of training ratings divided by the largest count (in [0, 1]), so an
unknown user or title gets the most popular movies: the documented answer for an unknown key.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class IndexVectors:
    """What one model serves: query rows (row 0 = unknown key) and candidate rows (one per title)."""

    query_keys: np.ndarray  # [Q] str: user ids or titles; lookup index i + 1 -> query row i + 1
    queries: np.ndarray  # [Q + 1, d] float32
    titles: np.ndarray  # [N] str: the candidates' identifiers
    candidates: np.ndarray  # [N, d] float32

    def query_rows(self, keys) -> np.ndarray:
        """Query vectors for raw keys, unknown keys -> row 0 (what the SavedModel's lookup does)."""
        position = {k: i + 1 for i, k in enumerate(self.query_keys.tolist())}
        return self.queries[[position.get(k, 0) for k in keys]]


def popularity(titles: np.ndarray, train_titles) -> np.ndarray:
    """Training-rating count per title, scaled to [0, 1]. ``train_titles``: str, or a Coded column."""
    from export.data.records import positions

    found = positions(train_titles, {t: i for i, t in enumerate(titles.tolist())}, -1)
    counts = np.bincount(found[found >= 0], minlength=len(titles)).astype(np.float64)
    top = counts.max() if len(counts) else 0.0
    return (counts / top if top > 0 else counts).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Blend:
    """Extra factors appended to the towers' vectors: score = tower * towers' score + ease_user . ease_item."""

    tower: float  # a: the towers' weight (0: EASE alone)
    user_factors: np.ndarray  # [U + 1, r] aligned with trained.user_ids (row 0, unknown: zeros), weight in
    item_factors: np.ndarray  # [N, r] aligned with trained.movie_titles


def retrieval_vectors(trained, pop: np.ndarray, blend: Blend | None = None) -> IndexVectors:
    users, d = len(trained.user_ids), trained.user_vectors.shape[1]
    tower = 1.0 if blend is None else blend.tower
    r = 0 if blend is None else blend.item_factors.shape[1]
    queries = np.zeros((users + 1, d + 2 + r), dtype=np.float32)
    queries[1:, :d] = tower * trained.user_vectors[1:]
    queries[1:, d] = tower
    queries[0, d + 1] = 1.0
    parts = [trained.movie_vectors[1:], trained.movie_bias[1:, None], pop[:, None]]
    if blend is not None:
        queries[1:, d + 2 :] = blend.user_factors[1:]
        parts.append(blend.item_factors)
    candidates = np.concatenate(parts, axis=1).astype(np.float32)
    return IndexVectors(trained.user_ids, queries, trained.movie_titles, candidates)


def similar_vectors(trained, pop: np.ndarray) -> IndexVectors:
    movies = trained.movie_vectors[1:]
    norms = np.linalg.norm(movies, axis=1, keepdims=True)
    unit = movies / np.maximum(norms, 1e-12)
    d = unit.shape[1]
    queries = np.zeros((len(movies) + 1, d + 1), dtype=np.float32)
    queries[1:, :d] = unit
    queries[0, d] = 1.0
    candidates = np.concatenate([unit, pop[:, None]], axis=1).astype(np.float32)
    return IndexVectors(trained.movie_titles, queries, trained.movie_titles, candidates)


def exact_top_k(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    exclude: list[set[int]] | None = None,
    chunk_cells: int = 1 << 25,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (scores, indices) of the k best candidates per query, best first; ties by lower index.

    Queries are scored in chunks of about ``chunk_cells`` scores (128 MiB), so 1000 queries over 1M
    candidates never hold the whole score matrix."""
    k = min(k, candidates.shape[0])
    step = max(1, chunk_cells // max(1, candidates.shape[0]))
    out_scores, out_indices = [], []
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ candidates.T
        if exclude is not None:
            for row, columns in enumerate(exclude[start : start + step]):
                if columns:
                    scores[row, list(columns)] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        indices = np.take_along_axis(part, order, axis=1)
        out_scores.append(np.take_along_axis(scores, indices, axis=1))
        out_indices.append(indices)
    if not out_scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(out_scores), np.concatenate(out_indices)
