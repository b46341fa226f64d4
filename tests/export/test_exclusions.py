"""exclude_seen and similar_movies on a catalogue large enough for ScaNN's tree to matter."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from export import index as index_lib
from export import servable
from export.config import IndexConfig
from export.vectors import IndexVectors, exact_top_k

K = 10
N = 4000


@pytest.fixture(scope="module")
def vectors() -> IndexVectors:
    rng = np.random.default_rng(0)
    d = 16
    candidates = rng.normal(size=(N, d)).astype(np.float32)
    queries = rng.normal(size=(51, d)).astype(np.float32)
    titles = np.array([f"Movie {i:05d} (1990)" for i in range(N)], dtype=object)
    users = np.array([str(i) for i in range(1, 51)], dtype=object)
    return IndexVectors(users, queries, titles, candidates)


@pytest.mark.parametrize("kind", ["scann", "brute_force"])
def test_heavy_user_with_hundreds_of_exclusions_still_gets_k_unexcluded_best_titles(vectors, kind):
    layer, params = index_lib.build(IndexConfig(kind=kind, k=K), vectors.candidates, name="idx")
    module = servable.Retrieval(vectors, layer, params)
    users = ["1", "2"]
    queries = vectors.query_rows(users)
    # user 1 excludes its own 700 best titles; user 2 excludes 5 (padded with "").
    _, best = exact_top_k(queries, vectors.candidates, 700)
    heavy = vectors.titles[best[0]].tolist()
    light = vectors.titles[best[1][:5]].tolist() + [""] * 695
    out = module.exclude_seen(tf.constant(users), tf.constant([heavy, light]))
    titles = out["movie_titles"].numpy().astype(str)

    assert titles.shape == (2, K)
    assert not set(titles[0]) & set(heavy)
    assert not set(titles[1]) & set(light[:5])
    exclude = [set(best[0].tolist()), set(best[1][:5].tolist())]
    _, exact = exact_top_k(queries, vectors.candidates, K, exclude)
    for row in range(2):
        recall = len(set(titles[row]) & set(vectors.titles[exact[row]].tolist())) / K
        assert recall >= 0.9, (kind, row, recall)


def test_exclusions_wider_than_the_catalogue_minus_k_leave_empty_slots_not_excluded_titles(vectors):
    layer, params = index_lib.build(IndexConfig(kind="brute_force", k=K), vectors.candidates, name="idx")
    module = servable.Retrieval(vectors, layer, params)
    excluded = vectors.titles[: N - 3].tolist()
    out = module.exclude_seen(tf.constant(["1"]), tf.constant([excluded]))
    titles = out["movie_titles"].numpy().astype(str)[0]
    assert sorted(t for t in titles if t) == sorted(vectors.titles[N - 3 :].tolist())
    assert list(titles[3:]) == [""] * (K - 3)
    assert np.all(np.isneginf(out["scores"].numpy()[0][3:]))


@pytest.mark.parametrize("kind", ["scann", "brute_force"])
def test_similar_movies_excludes_the_query_itself(kind):
    rng = np.random.default_rng(1)
    unit = rng.normal(size=(500, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    titles = np.array([f"T{i}" for i in range(500)], dtype=object)
    queries = np.vstack([np.zeros((1, 9), np.float32), np.hstack([unit, np.zeros((500, 1), np.float32)])])
    vec = IndexVectors(titles, queries, titles, np.hstack([unit, np.zeros((500, 1), np.float32)]))
    layer, params = index_lib.build(IndexConfig(kind=kind, k=K), vec.candidates, name="sim")
    module = servable.SimilarMovies(vec, layer, params)
    out = module.serving_default(tf.constant(titles.tolist()))["movie_titles"].numpy().astype(str)
    for query, row in zip(titles.tolist(), out, strict=True):
        assert query not in set(row)
        assert "" not in set(row)
