"""Evaluation by the seed's definition, and the vectors that give unknown keys the popular movies."""

from __future__ import annotations

import types

import numpy as np
import pytest

from export.evaluate import evaluate, table
from export.vectors import IndexVectors, exact_top_k, popularity, retrieval_vectors, similar_vectors


def _vectors():
    # u1 prefers A > B > C, u2 prefers C > B > A; row 0 is the unknown user.
    queries = np.array([[0.0], [1.0], [-1.0]], dtype=np.float32)
    candidates = np.array([[3.0], [2.0], [1.0]], dtype=np.float32)
    return IndexVectors(np.array(["u1", "u2"], dtype=object), queries, np.array(["A", "B", "C"], dtype=object),
                        candidates)


def _arr(*values):
    return np.array(values, dtype=object)


def test_hits_are_ranks_among_the_whole_catalogue_with_and_without_seen_movies():
    vec = _vectors()
    pop = popularity(vec.titles, _arr("A"))
    metrics = evaluate(vec, pop, train_users=_arr("u1"), train_titles=_arr("A"),
                       test_users=_arr("u1", "u2"), test_titles=_arr("B", "A"), ks=(1, 2, 3))
    assert metrics["test_ratings"] == 2
    # (u1, B): rank 1 (A above); without seen A: rank 0. (u2, A): rank 2 either way (u2 saw nothing).
    assert metrics["model"] == {"top_1": 0.0, "top_2": 0.5, "top_3": 1.0}
    assert metrics["model_exclude_seen"] == {"top_1": 0.5, "top_2": 0.5, "top_3": 1.0}
    # Popularity [1, 0, 0]: (u1, B) ranks after A (ties keep catalogue order: B before C); (u2, A) first.
    assert metrics["popularity"] == {"top_1": 0.5, "top_2": 1.0, "top_3": 1.0}
    assert metrics["popularity_exclude_seen"] == {"top_1": 1.0, "top_2": 1.0, "top_3": 1.0}


def test_ties_rank_a_later_catalogue_entry_below_an_earlier_one():
    vec = IndexVectors(_arr("u"), np.array([[0.0], [1.0]], np.float32), _arr("A", "B"),
                       np.array([[1.0], [1.0]], np.float32))
    metrics = evaluate(vec, np.zeros(2, np.float32), _arr(), _arr(), _arr("u", "u"), _arr("A", "B"), ks=(1,))
    assert metrics["model"]["top_1"] == 0.5


def test_the_true_movie_is_never_excluded_even_if_seen_in_training():
    vec = _vectors()
    metrics = evaluate(vec, np.zeros(3, np.float32), _arr("u2", "u2"), _arr("C", "B"), _arr("u2"), _arr("B"),
                       ks=(1,))
    assert metrics["model_exclude_seen"]["top_1"] == 1.0  # C removed, B kept although seen


def test_table_has_one_row_per_metric_row():
    vec = _vectors()
    text = table(evaluate(vec, np.zeros(3, np.float32), _arr(), _arr(), _arr("u1"), _arr("A")))
    assert [line.split()[0] for line in text.splitlines()[2:6]] == [
        "model", "model_exclude_seen", "popularity", "popularity_exclude_seen"]
    assert "top-100" in text.splitlines()[0]


def _trained():
    rng = np.random.default_rng(0)
    return types.SimpleNamespace(
        user_ids=_arr("1", "2", "3"), movie_titles=_arr("A", "B", "C", "D"),
        user_vectors=rng.normal(size=(4, 5)).astype(np.float32),
        movie_vectors=rng.normal(size=(5, 5)).astype(np.float32),
        movie_bias=rng.normal(size=5).astype(np.float32))


def test_known_users_score_embedding_plus_bias_and_unknown_users_score_popularity():
    trained = _trained()
    pop = popularity(trained.movie_titles, _arr("C", "C", "A", "D", "C"))
    assert pop.tolist() == pytest.approx([1 / 3, 0.0, 1.0, 1 / 3])
    vec = retrieval_vectors(trained, pop)
    scores = vec.query_rows(["2", "nobody"]) @ vec.candidates.T
    expected_known = trained.user_vectors[2] @ trained.movie_vectors[1:].T + trained.movie_bias[1:]
    np.testing.assert_allclose(scores[0], expected_known, rtol=1e-5)
    np.testing.assert_allclose(scores[1], pop)
    _, best = exact_top_k(vec.query_rows(["nobody"]), vec.candidates, 2)
    assert vec.titles[best[0]].tolist() == ["C", "A"]  # most popular first; ties by catalogue order


def test_similar_movies_score_cosine_for_known_titles_and_popularity_for_unknown():
    trained = _trained()
    pop = np.array([0.1, 0.9, 0.5, 0.0], np.float32)
    vec = similar_vectors(trained, pop)
    scores = vec.query_rows(["B", "Z (1900)"]) @ vec.candidates.T
    m = trained.movie_vectors[1:]
    cosine = (m / np.linalg.norm(m, axis=1, keepdims=True)) @ (m[1] / np.linalg.norm(m[1]))
    np.testing.assert_allclose(scores[0], cosine, rtol=1e-5)
    np.testing.assert_allclose(scores[1], pop)
