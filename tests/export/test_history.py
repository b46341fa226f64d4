"""The history query model of ``by_history`` (export/history.py), its choice (export/history_selection.py) and
its new-user protocol (export/history_evaluation.py), on tiny data."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from export import ease, history, history_evaluation, history_selection
from export.data import load
from export.data.synthetic import SyntheticSpec
from export.vectors import IndexVectors, popularity


@pytest.fixture(scope="module")
def data():
    return load("synthetic", synthetic=SyntheticSpec.tiny())


@pytest.fixture(scope="module")
def columns(data):
    """The training part (here every rating): users, titles (Coded) and timestamps."""
    ratings = data.ratings
    return ratings.coded("user_id"), ratings.coded("movie_title"), np.asarray(ratings.timestamp)


@pytest.fixture(scope="module")
def trained(data):
    titles = np.unique(np.asarray(data.movies.movie_title).astype(str)).astype(object)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(titles) + 1, 8)).astype(np.float32)
    return types.SimpleNamespace(movie_titles=titles, movie_vectors=vectors, movie_bias=vectors[:, 0] * 0.1)


@pytest.fixture(scope="module")
def pairs(columns, trained):
    users, titles, times = columns
    return history_evaluation.Pairs.of(users, titles, trained.movie_titles, times)


def _histories(pairs: history_evaluation.Pairs) -> list[np.ndarray]:
    bounds = pairs.bounds()
    return [pairs.titles[bounds[u] : bounds[u + 1]] for u in range(pairs.n_users)]


def test_full_rank_queries_of_a_known_users_history_reproduce_eases_scores(pairs):
    x = pairs.matrix()
    b = ease.weights(x, 50.0)
    pop = pairs.popularity()
    (recipe, vectors), *_ = history.ease_vectors(x, b, 50.0, np.arange(pairs.n_titles), pop, [None])
    assert recipe == history.Recipe("ease", 50.0, None) and vectors.item_queries.shape == (
        pairs.n_titles,
        pairs.n_titles + 1,
    )
    seen = _histories(pairs)[:20]
    scores = vectors.queries(seen) @ vectors.candidates.T
    exact = x.rows(np.arange(20)) @ b
    sizes = np.array([len(h) for h in seen], dtype=np.float32)[:, None]
    assert np.allclose(scores * sizes, exact, atol=1e-4)  # the mean only rescales x B: the same ranking


def test_low_rank_fold_in_approximates_eases_scores_better_with_rank(pairs):
    x = pairs.matrix()
    b = ease.weights(x, 50.0)
    exact = x.rows(np.arange(pairs.n_users)) @ b
    pop = pairs.popularity()
    errors = {}
    for recipe, vectors in history.ease_vectors(x, b, 50.0, np.arange(pairs.n_titles), pop, [8, 32, 140]):
        approx = vectors.queries(_histories(pairs)) @ vectors.candidates.T
        approx *= np.diff(pairs.bounds())[:, None]
        errors[recipe.rank] = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
    assert errors[140] < 0.02 < errors[32] < errors[8] < 1.0, errors


def test_unknown_and_empty_histories_get_the_empty_query_and_popularity(trained):
    pop = np.linspace(1.0, 0.0, len(trained.movie_titles), dtype=np.float32)
    vectors = history.towers_vectors(trained, pop)
    d = trained.movie_vectors.shape[1]
    assert vectors.item_queries.shape == vectors.candidates.shape == (len(pop), d + 2)
    assert np.all(vectors.item_queries[:, -1] == 0) and np.array_equal(vectors.candidates[:, -1], pop)
    queries = vectors.queries([[], [-1, len(pop)], [3, -1], [3, 5, 5]])
    assert np.array_equal(queries[0], vectors.empty_query) and np.array_equal(queries[1], vectors.empty_query)
    assert np.allclose(queries[0] @ vectors.candidates.T, pop)  # the most popular first
    assert np.allclose(queries[2], vectors.item_queries[3])  # unknown titles ignored
    assert np.allclose(queries[3], (vectors.item_queries[3] + 2 * vectors.item_queries[5]) / 3)  # each occurrence
    assert np.allclose(queries[2, :d], trained.movie_vectors[4]) and queries[2, d] == 1.0  # the bias coefficient
    assert vectors.positions([["", trained.movie_titles[3], "nope"]]) == [[-1, 3, -1]]
    scores, top = vectors.top_k([[], [int(np.argmax(pop)), 7, -1]], 5)
    assert top[0].tolist() == np.argsort(-pop, kind="stable")[:5].tolist()  # empty: the most popular
    assert not {int(np.argmax(pop)), 7} & set(top[1].tolist()) and np.all(np.diff(scores, axis=1) <= 0)


def test_held_out_users_are_absent_from_what_the_baselines_are_fitted_on(pairs):
    for part in history_evaluation.PARTS:
        new = history_evaluation.new_users(pairs, part, seed=3)
        assert len(new.users) == int(0.2 * pairs.n_users)  # every tiny user has >= 2 titles
        assert not np.isin(pairs.users[new.fit], new.users).any()
        assert np.isin(pairs.users[~new.fit], new.users).all()
        x = pairs.matrix(new.fit)
        assert not x.rows(new.users).any() and x.rows(np.setdiff1d(np.arange(pairs.n_users), new.users)).any()
        counts = np.bincount(pairs.titles[new.fit], minlength=pairs.n_titles)
        assert np.allclose(pairs.popularity(new.fit), counts / counts.max())  # popularity: the others' counts


def test_validation_and_test_users_are_disjoint_and_each_history_is_split_in_two(pairs):
    val = history_evaluation.new_users(pairs, "validation", seed=5)
    test = history_evaluation.new_users(pairs, "test", seed=5)
    assert len(val.users) and len(test.users) and not set(val.users.tolist()) & set(test.users.tolist())
    assert history_evaluation.new_users(pairs, "test", seed=5).users.tolist() == test.users.tolist()  # reproducible
    histories = _histories(pairs)
    for user, given, targets in zip(val.users.tolist(), val.given, val.targets, strict=True):
        assert not set(given.tolist()) & set(targets.tolist())
        assert sorted([*given.tolist(), *targets.tolist()]) == sorted(histories[user].tolist())
        assert len(given) == round(0.8 * len(histories[user]))


def test_the_time_split_feeds_each_users_earliest_titles(columns, trained):
    users, titles, times = columns
    pairs = history_evaluation.Pairs.of(users, titles, trained.movie_titles, times)
    index = {t: i for i, t in enumerate(trained.movie_titles.tolist())}
    user_number = {u: i for i, u in enumerate(np.unique(users.values()).tolist())}
    when = {}
    for u, t, s in zip(users.values().tolist(), titles.values().tolist(), times.tolist(), strict=True):
        key = (user_number[u], index[t])
        when[key] = min(when.get(key, s), s)
    new = history_evaluation.new_users(pairs, "test", split="time", seed=1)
    for user, given, targets in zip(new.users.tolist(), new.given, new.targets, strict=True):
        assert max(when[user, t] for t in given.tolist()) <= min(when[user, t] for t in targets.tolist())
    randomly = history_evaluation.new_users(pairs, "test", split="random", seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(new.given, randomly.given, strict=True))
    with pytest.raises(ValueError, match="timestamps"):
        history_selection.choose(users, titles, trained, np.zeros(len(trained.movie_titles), np.float32), split="time")


def test_choose_offers_every_recipe_and_names_the_winner(columns, trained):
    users, titles, times = columns
    pop = popularity(trained.movie_titles, titles)
    lines: list[str] = []
    vectors, record = history_selection.choose(
        users, titles, trained, pop, timestamps=times, lambdas=(10.0, 100.0), ranks=(16, 32, 500), report=lines.append
    )
    n = len(trained.movie_titles)
    assert np.array_equal(vectors.titles, trained.movie_titles)
    assert vectors.item_queries.shape[0] == vectors.candidates.shape[0] == n
    assert vectors.item_queries.shape[1] == vectors.candidates.shape[1] == vectors.empty_query.shape[0]
    assert vectors.item_queries.dtype == vectors.candidates.dtype == np.float32
    assert np.array_equal(vectors.candidates[:, -1], pop) and np.all(vectors.item_queries[:, -1] == 0)
    offered = [(t["recipe"], t.get("lambda"), t.get("rank")) for t in record["candidates"]]
    assert offered[:3] == [("towers", None, None), ("ease", 10.0, "full"), ("ease", 100.0, "full")]
    assert [t["rank"] for t in record["candidates"][3:]] == [16, 32]  # 500 >= the catalogue: not offered
    best = max(t[history_selection.CRITERION] for t in record["candidates"])
    winner = [t for t in record["candidates"] if history.Recipe.of(t) == history.Recipe.of(record["chosen"])]
    assert winner and (
        winner[0][history_selection.CRITERION] == best or "within the 95% CI of the best" in record["why"]
    )
    assert record["chosen"]["recipe"] == "ease"  # random towers cannot win
    assert vectors.candidates.shape[1] == winner[0]["dimensions"]
    assert "leak" in record and record["protocol"]["part"] == "validation"
    assert any("serves by_history" in line for line in lines)
    assert json.loads(json.dumps(record)) == record  # the manifest's: plain JSON types


def test_without_ease_the_towers_item_vectors_serve(columns, trained):
    users, titles, _ = columns
    pop = popularity(trained.movie_titles, titles)
    vectors, record = history_selection.choose(users, titles, trained, pop, max_items=10, report=lambda line: None)
    assert record["chosen"] == {"recipe": "towers"} and "skipped" in record["ease"]
    assert [t["recipe"] for t in record["candidates"]] == ["towers"]
    assert np.array_equal(vectors.candidates[:, :-1], np.c_[trained.movie_vectors[1:], trained.movie_bias[1:]])
    metrics = history_evaluation.evaluate_new_users(users, titles, trained, record, report=lambda line: None)
    assert set(metrics) >= {"model", "popularity"} and "ease" not in metrics
    assert "skipped" in metrics["baselines"]["ease"] and "leak" in metrics["model_recipe"]
    assert metrics["comparison"]["popularity"]["verdict"] == "worse"  # random towers: honestly behind
    assert "DOES NOT BEAT IT" in history_evaluation.table(metrics) and "skipped" in history_evaluation.table(metrics)


def test_the_test_table_gives_confidence_intervals_and_verdicts(columns, trained):
    users, titles, times = columns
    pop = popularity(trained.movie_titles, titles)
    _, record = history_selection.choose(
        users, titles, trained, pop, timestamps=times, lambdas=(100.0,), ranks=(16,), lam=100.0, report=lambda x: None
    )
    metrics = history_evaluation.evaluate_new_users(
        users, titles, trained, record, timestamps=times, report=lambda x: None
    )
    val = history_evaluation.new_users(
        history_evaluation.Pairs.of(users, titles, trained.movie_titles, times), "validation"
    )
    assert metrics["protocol"]["part"] == "test" and metrics["test_users"] == len(val.users)
    assert set(history_evaluation.ROWS) <= set(metrics) and set(metrics["ci95"]) == set(history_evaluation.ROWS)
    for row in history_evaluation.ROWS:
        assert set(metrics[row]) == {"top_1", "top_5", "top_10", "top_50", "top_100", "recall_20", "ndcg_100"}
        assert all(0 <= v <= 1 for v in metrics[row].values()) and metrics["ci95"][row]["top_10"] > 0
    assert metrics["comparison"]["ease"]["serves_ease"] is True
    text = history_evaluation.table(metrics)
    assert "±" in text and "recall@20" in text and "serves EASE's factors" in text
    assert text.count("model vs ") == 3
    assert json.loads(json.dumps(metrics)) == metrics


def test_verdicts_are_beats_only_outside_the_confidence_interval():
    rng = np.random.default_rng(0)
    base = {c: rng.random(400) for c in history_evaluation.JUDGED}
    assert history_evaluation._compare(base, base)["verdict"] == "ties"
    assert (
        history_evaluation._compare({c: v + 0.001 for c, v in base.items()}, base)["verdict"] == "beats"
    )  # paired: sure
    assert history_evaluation._compare({c: v + 0.1 for c, v in base.items()}, base)["verdict"] == "beats"
    worse = dict(base, top_10=base["top_10"] - 0.1)
    assert history_evaluation._compare(worse, base)["verdict"] == "worse"
    better_but_noisy = {c: v + 0.01 + rng.normal(0, 0.5, 400) for c, v in base.items()}
    assert history_evaluation._compare(better_but_noisy, base)["verdict"] == "ties"


def test_known_users_compare_by_history_with_exclude_seen(columns, trained):
    users, titles, _ = columns
    pop = popularity(trained.movie_titles, titles)
    user_ids = np.unique(users.values()).astype(object)
    queries = np.zeros((len(user_ids) + 1, 1), np.float32)
    queries[0] = 1.0
    served = IndexVectors(user_ids, queries, trained.movie_titles, pop[:, None])  # popularity for everyone
    vectors = history.towers_vectors(trained, pop)
    half = len(users) // 2
    got = history_evaluation.known_users(vectors, served, pop, users[:half], titles[:half], users[half:], titles[half:])
    assert set(got) == {"by_history", "exclude_seen", "ci95", "test_ratings"} and got["test_ratings"] > 0
    assert got["exclude_seen"]["top_100"] > 0 and set(got["ci95"]) == {"by_history", "exclude_seen"}


def test_the_report_draws_a_new_users_panel(tmp_path, columns, trained):
    from export import report

    users, titles, _ = columns
    pop = popularity(trained.movie_titles, titles)
    _, record = history_selection.choose(
        users, titles, trained, pop, lambdas=(100.0,), ranks=(16,), report=lambda x: None
    )
    metrics = {"model": {"top_10": 0.1}, "test_ratings": 5}
    new_users = history_evaluation.evaluate_new_users(users, titles, trained, record, report=lambda x: None)
    plain = report.write(tmp_path / "a", "retrieval", metrics, None).stat().st_size
    drawn = report.write(tmp_path / "b", "retrieval", {**metrics, "new_users": new_users}, None)
    assert drawn.name == report.REPORT_FILE and drawn.stat().st_size > plain


def test_the_winner_is_the_best_unless_a_cheaper_one_is_within_the_confidence_interval():
    rng = np.random.default_rng(1)
    hits = rng.random(2000) < 0.3

    def trial(dimensions, value):
        return {
            "recipe": "ease",
            "lambda": 1.0,
            "rank": dimensions,
            "dimensions": dimensions,
            history_selection.CRITERION: value,
        }

    close = hits.astype(float)
    close[np.flatnonzero(hits)[:3]] = 0.0  # three hits fewer than the best: within the CI
    index, why = history_selection._winner(
        [trial(65, float(close.mean())), trial(257, float(hits.mean()))], [close, hits.astype(float)]
    )
    assert index == 0 and "within the 95% CI of the best" in why and "65 against 257" in why
    far = hits & (rng.random(2000) < 0.5)  # half the hits lost: clearly worse
    index, why = history_selection._winner(
        [trial(65, float(far.mean())), trial(257, float(hits.mean()))], [far * 1.0, hits * 1.0]
    )
    assert index == 1 and why.startswith("the best") and "next:" in why
    better_and_cheap = [trial(65, float(hits.mean())), trial(257, float(far.mean()))]
    assert history_selection._winner(better_and_cheap, [hits.astype(float), far.astype(float)])[0] == 0


def test_the_refit_adds_the_validation_users_to_eases_inverse_without_a_new_one(pairs):
    new = history_evaluation.new_users(pairs, "validation")
    everyone = pairs.matrix()
    p = ease.inverse(pairs.matrix(new.fit), 30.0)
    updated = ease.with_users(p, everyone.rows(new.users))
    assert np.allclose(updated, ease.inverse(everyone, 30.0), atol=1e-9)
    assert np.allclose(ease.weights_of(updated), ease.weights(everyone, 30.0), atol=1e-6)
    assert np.array_equal(ease.weights_of(p), ease.weights(pairs.matrix(new.fit), 30.0))  # the same B as before
