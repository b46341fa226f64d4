"""Evaluation by the seed's definition, and the vectors that give unknown keys the popular movies."""

from __future__ import annotations

import types

import numpy as np
import pytest

from export.evaluate import evaluate, table, verdict
from export.vectors import IndexVectors, exact_top_k, popularity, retrieval_vectors, similar_vectors


def _vectors():
    # u1 prefers A > B > C, u2 prefers C > B > A; row 0 is the unknown user.
    queries = np.array([[0.0], [1.0], [-1.0]], dtype=np.float32)
    candidates = np.array([[3.0], [2.0], [1.0]], dtype=np.float32)
    return IndexVectors(
        np.array(["u1", "u2"], dtype=object), queries, np.array(["A", "B", "C"], dtype=object), candidates
    )


def _arr(*values):
    return np.array(values, dtype=object)


def test_hits_are_ranks_among_the_whole_catalogue_with_and_without_seen_movies():
    vec = _vectors()
    pop = popularity(vec.titles, _arr("A"))
    metrics = evaluate(
        vec,
        pop,
        train_users=_arr("u1"),
        train_titles=_arr("A"),
        test_users=_arr("u1", "u2"),
        test_titles=_arr("B", "A"),
        ks=(1, 2, 3),
    )
    assert metrics["test_ratings"] == 2
    # (u1, B): rank 1 (A above); without seen A: rank 0. (u2, A): rank 2 either way (u2 saw nothing).
    assert metrics["model"] == {"top_1": 0.0, "top_2": 0.5, "top_3": 1.0}
    assert metrics["model_exclude_seen"] == {"top_1": 0.5, "top_2": 0.5, "top_3": 1.0}
    # Popularity [1, 0, 0]: (u1, B) ranks after A (ties keep catalogue order: B before C); (u2, A) first.
    assert metrics["popularity"] == {"top_1": 0.5, "top_2": 1.0, "top_3": 1.0}
    assert metrics["popularity_exclude_seen"] == {"top_1": 1.0, "top_2": 1.0, "top_3": 1.0}


def test_ties_rank_a_later_catalogue_entry_below_an_earlier_one():
    vec = IndexVectors(
        _arr("u"), np.array([[0.0], [1.0]], np.float32), _arr("A", "B"), np.array([[1.0], [1.0]], np.float32)
    )
    metrics = evaluate(vec, np.zeros(2, np.float32), _arr(), _arr(), _arr("u", "u"), _arr("A", "B"), ks=(1,))
    assert metrics["model"]["top_1"] == 0.5


def test_the_true_movie_is_never_excluded_even_if_seen_in_training():
    vec = _vectors()
    metrics = evaluate(vec, np.zeros(3, np.float32), _arr("u2", "u2"), _arr("C", "B"), _arr("u2"), _arr("B"), ks=(1,))
    assert metrics["model_exclude_seen"]["top_1"] == 1.0  # C removed, B kept although seen


def test_table_has_one_row_per_metric_row():
    vec = _vectors()
    text = table(evaluate(vec, np.zeros(3, np.float32), _arr(), _arr(), _arr("u1"), _arr("A")))
    assert [line.split()[0] for line in text.splitlines()[2:6]] == [
        "model",
        "model_exclude_seen",
        "popularity",
        "popularity_exclude_seen",
    ]
    assert "top-100" in text.splitlines()[0]


def _trained():
    rng = np.random.default_rng(0)
    return types.SimpleNamespace(
        user_ids=_arr("1", "2", "3"),
        movie_titles=_arr("A", "B", "C", "D"),
        user_vectors=rng.normal(size=(4, 5)).astype(np.float32),
        movie_vectors=rng.normal(size=(5, 5)).astype(np.float32),
        movie_bias=rng.normal(size=5).astype(np.float32),
    )


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


def test_ease_weights_solve_the_constrained_least_squares_problem():
    """EASE's B minimises ||X - XB||^2 + lambda ||B||^2 subject to diag(B) = 0: its gradient is zero off the
    diagonal, i.e. (X^T X + lambda I) B - X^T X is diagonal."""
    from export.ease import weights as ease_weights

    rng = np.random.default_rng(3)
    x = rng.random((40, 7)) < 0.3
    lam = 2.5
    b = ease_weights(x, lam).astype(np.float64)
    gram = x.T.astype(np.float64) @ x
    residual = (gram + lam * np.eye(7)) @ b - gram
    off = residual - np.diag(np.diag(residual))
    assert np.allclose(np.diag(b), 0.0)
    assert np.abs(off).max() < 1e-4
    assert np.abs(b).max() > 0.01  # not trivially zero


def test_item_knn_is_cosine_between_title_columns():
    from export.evaluate import item_knn_weights

    x = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=bool)
    s = item_knn_weights(x)
    # columns: A=(1,1,0), B=(1,0,1), C=(0,1,0): cos(A,B)=1/2, cos(A,C)=1/sqrt2, cos(B,C)=0
    assert np.allclose(s, [[0, 0.5, 2**-0.5], [0.5, 0, 0], [2**-0.5, 0, 0]], atol=1e-6)


def test_baselines_rank_by_history_and_the_comparison_says_who_wins():
    # u1 and u2 both watched A and B; u3 watched A: EASE and item-kNN put B first for u3, the model puts C first.
    vec = IndexVectors(
        _arr("u1", "u2", "u3"),
        np.array([[0.0], [0.0], [0.0], [1.0]], np.float32),
        _arr("A", "B", "C"),
        np.array([[0.0], [0.0], [1.0]], np.float32),
    )
    train_users, train_titles = _arr("u1", "u1", "u2", "u2", "u3"), _arr("A", "B", "A", "B", "A")
    pop = popularity(vec.titles, train_titles)
    metrics = evaluate(vec, pop, train_users, train_titles, _arr("u3"), _arr("B"), ks=(1, 10, 100), ease_lambda=0.5)
    assert metrics["ease_exclude_seen"]["top_1"] == 1.0 and metrics["item_knn_exclude_seen"]["top_1"] == 1.0
    assert metrics["model_exclude_seen"]["top_1"] == 0.0
    assert metrics["baselines"]["ease"] == {"lambda": 0.5}
    # top-10 and top-100 cover the whole 3-title catalogue: every row hits there, so the model ties with all.
    assert all(row["verdict"] == "ties" and not row["beats"] for row in metrics["comparison"].values())
    assert sorted(metrics["comparison"]) == ["ease", "item_knn", "popularity"]


def test_comparison_fails_when_the_model_is_behind_in_a_seen_excluded_column():
    from export.evaluate import compare, verdict

    metrics = {
        "model_exclude_seen": {"top_10": 0.20, "top_100": 0.70},
        "popularity_exclude_seen": {"top_10": 0.10, "top_100": 0.40},
        "ease_exclude_seen": {"top_10": 0.25, "top_100": 0.60},
        "baselines": {"item_knn": {"skipped": "skipped: too big"}},
    }
    metrics["comparison"] = compare(metrics)
    assert metrics["comparison"]["popularity"]["beats"] is True
    assert metrics["comparison"]["ease"] == {
        "beats": False,
        "verdict": "worse",
        "top_10_exclude_seen": [0.20, 0.25],
        "top_100_exclude_seen": [0.70, 0.60],
        "ci95_of_difference": {"top_10": 0.0, "top_100": 0.0},
    }
    lines = verdict(metrics)
    assert lines[0].startswith("model vs popularity: beats it")
    assert lines[1].startswith("model vs ease: DOES NOT BEAT IT") and "top-10 0.2000 vs 0.2500" in lines[1]
    assert lines[2] == "model vs item_knn: skipped: too big"


def _judged(model: tuple, theirs: tuple, width: float) -> dict:
    """The comparison of a model and one baseline at (top-10, top-100), each rate with half-width ``width``."""
    from export.evaluate import compare

    metrics = {
        "model_exclude_seen": dict(zip(("top_10", "top_100"), model, strict=True)),
        "popularity_exclude_seen": dict(zip(("top_10", "top_100"), theirs, strict=True)),
        "ci95": {
            "model_exclude_seen": {"top_10": width, "top_100": width},
            "popularity_exclude_seen": {"top_10": width, "top_100": width},
        },
    }
    return compare(metrics)["popularity"]


@pytest.mark.parametrize(
    "model, theirs, expected",
    [
        ((0.30, 0.70), (0.20, 0.60), "beats"),  # both differences 0.10 > sqrt(2) x 0.03 = 0.0424
        ((0.23, 0.70), (0.20, 0.60), "ties"),  # 0.03 at top-10 is within 0.0424: not a win
        ((0.3650, 0.80), (0.3650, 0.80), "ties"),  # the "beats it (top-10 0.3650 vs 0.3650)"
        ((0.19, 0.59), (0.20, 0.60), "ties"),  # behind, but within the interval
        ((0.30, 0.50), (0.20, 0.60), "worse"),  # ahead at top-10, behind beyond the interval at top-100
        ((0.10, 0.60), (0.20, 0.60), "worse"),
    ],
)
def test_a_verdict_is_beats_only_outside_the_difference_s_confidence_interval(model, theirs, expected):
    row = _judged(model, theirs, 0.03)
    assert row["verdict"] == expected and row["beats"] is (expected == "beats")
    assert row["ci95_of_difference"] == {"top_10": 0.042426, "top_100": 0.042426}


def test_the_verdict_lines_say_beats_ties_or_does_not_beat_with_the_interval():

    for model, said in (((0.30, 0.70), "beats it"), ((0.21, 0.61), "ties with it"), ((0.1, 0.5), "DOES NOT BEAT IT")):
        lines = verdict({"comparison": {"popularity": _judged(model, (0.20, 0.60), 0.03)}})
        assert lines == [
            f"model vs popularity: {said} (seen excluded: top-10 {model[0]:.4f} vs 0.2000 ±0.0424, "
            f"top-100 {model[1]:.4f} vs 0.6000 ±0.0424)"
        ]


def test_against_ease_when_exclude_seen_serves_ease_s_factors_it_says_so():

    row = _judged((0.30, 0.70), (0.20, 0.60), 0.01)
    served = {"exclude_seen": {"tower": 0.0, "ease": 1.0}}
    lines = verdict({"comparison": {"ease": row}, "served": served})
    assert lines[0].startswith("model vs ease: serves EASE's factors (beats it) (seen excluded:")
    blend = {"exclude_seen": {"tower": 1.0, "ease": 0.5}}  # a blend with the towers: a real comparison
    assert verdict({"comparison": {"ease": row}, "served": blend})[0].startswith("model vs ease: beats it")


def test_baselines_above_the_item_bound_are_skipped_with_the_reason():
    vec = _vectors()
    metrics = evaluate(vec, np.zeros(3, np.float32), _arr("u1"), _arr("A"), _arr("u1"), _arr("B"), max_items=2)
    assert "ease" not in metrics and "item_knn_exclude_seen" not in metrics
    assert "3 titles > 2" in metrics["baselines"]["ease"]["skipped"]
    assert sorted(metrics["comparison"]) == ["popularity"]
    assert any(line.startswith("model vs ease: skipped: 3 titles > 2") for line in verdict(metrics))
    assert "model vs" not in table(metrics)  # said once, by verdict, as the run's last lines


def test_above_the_cap_a_sample_of_users_is_evaluated_whole_and_the_interval_reported():
    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in range(50)], dtype=object)
    titles = np.array([f"t{i}" for i in range(30)], dtype=object)
    vec = IndexVectors(
        users, rng.standard_normal((51, 4)).astype(np.float32), titles, rng.standard_normal((30, 4)).astype(np.float32)
    )
    test_users = np.repeat(users, 4)  # 200 test ratings, 4 per user
    test_titles = titles[rng.integers(0, 30, 200)]
    pop = popularity(titles, titles[:5])
    full = evaluate(vec, pop, _arr(), _arr(), test_users, test_titles, ks=(10,), max_items=0)
    part = evaluate(vec, pop, _arr(), _arr(), test_users, test_titles, ks=(10,), max_items=0, max_ratings=41)
    assert full["sample"] == {"ratings": 200, "of_ratings": 200, "users": 50, "of_users": 50}
    assert part["sample"]["users"] == 11 and part["sample"]["ratings"] == 44  # whole users, just past the cap
    assert part["test_ratings"] == 44 and part["sample"]["of_users"] == 50
    p = full["model"]["top_10"]
    assert full["ci95"]["model"]["top_10"] == pytest.approx(1.96 * np.sqrt(p * (1 - p) / 200), abs=1e-6)
    assert part["ci95"]["model"]["top_10"] > full["ci95"]["model"]["top_10"] > 0
    assert "a random sample of 11 of 50 test users" in table(part, ks=(10,))
