"""Train briefly, save, reload in a fresh process through serving.bundle: identical top-K."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from export import index as index_lib
from export import servable, warmup
from export.config import DEFAULT, IndexConfig
from export.validation import ValidationError, checks, runners
from export.validation.requests import Purpose, Request, warmup_inputs, with_ids
from export.validation.specs import RetrievalSpec, SimilarMoviesSpec
from export.validation.validator import validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_tiny():
    from export.data import load, split
    from export.data.synthetic import SyntheticSpec
    from export.train import train
    from export.vectors import popularity

    data = load("synthetic", synthetic=SyntheticSpec(users=60, movies=150, ratings=4000, seed=1))
    train_idx, _ = split(data.ratings)
    trained = train(dataclasses.replace(DEFAULT, epochs=2), data, train_idx, verbose=0)
    titles = np.asarray(data.ratings.movie_title).astype(str).astype(object)
    users = np.asarray(data.ratings.user_id).astype(str).astype(object)
    pop = popularity(trained.movie_titles, titles[train_idx])
    seen: dict[str, list[str]] = {}
    for u, t in zip(users[train_idx].tolist(), titles[train_idx].tolist(), strict=True):
        seen.setdefault(u, []).append(t)
    return trained, pop, seen


@pytest.mark.parametrize("kind", ["scann", "brute_force"])
@pytest.mark.parametrize("model", ["retrieval", "similar_movies"])
def test_fresh_process_answers_equal_the_in_memory_model(tmp_path, trained_tiny, kind, model):
    from export.vectors import retrieval_vectors, similar_vectors

    trained, pop, seen = trained_tiny
    vectors = (retrieval_vectors if model == "retrieval" else similar_vectors)(trained, pop)
    layer, params = index_lib.build(IndexConfig(kind=kind, k=5), vectors.candidates, name="idx")
    if model == "retrieval":
        popular = vectors.titles[np.argsort(-pop, kind="stable")[:10]].tolist()
        spec: RetrievalSpec | SimilarMoviesSpec = RetrievalSpec(vectors, seen=seen, popular=popular)
    else:
        spec = SimilarMoviesSpec(vectors)
    module = spec.module(layer, params)
    requests = spec.requests(16, np.random.default_rng(3))  # the ids default to the titles
    assert {r.signature_name for r in requests} >= {"exclude_seen_by_id" if model == "retrieval" else "by_id"}
    servable.save(module, tmp_path)
    warmup.write(tmp_path, warmup.requests(model, module.signatures(), warmup_inputs(requests)))

    expected = runners.in_memory(module, requests)
    actual = runners.in_fresh_process(tmp_path, requests, timeout_s=120)

    assert len(actual) == len(requests)
    for exp, act in zip(expected, actual, strict=True):
        assert act["movie_titles"].shape == exp["movie_titles"].shape
        assert (act["movie_titles"] == exp["movie_titles"]).all()
        np.testing.assert_allclose(act["scores"], exp["scores"], rtol=1e-5, atol=1e-5)
    # And the validator's checks agree (exclusions, the query itself, K per row, recall vs exact search).
    assert checks.compare(model, requests, expected, actual, k=5, tol=1e-4) == []
    recall_request = next(
        i for i, r in enumerate(requests) if r.purpose is Purpose.RECALL and r.signature_name == "serving_default"
    )
    keys = next(iter(requests[recall_request].inputs.values()))
    assert (
        checks.recall_at(
            vectors, keys, actual[recall_request]["movie_titles"], 5, exclude_self=model == "similar_movies"
        )
        >= 0.95
    )


def test_validation_fails_and_says_what_differed_when_the_staged_model_differs(tmp_path, trained_tiny):
    from export.vectors import retrieval_vectors

    trained, pop, seen = trained_tiny
    vectors = retrieval_vectors(trained, pop)
    layer, params = index_lib.build(IndexConfig(kind="brute_force", k=5), vectors.candidates, name="idx")
    staged = servable.Retrieval(vectors, layer, params)
    servable.save(staged, tmp_path)
    # The "in-memory" model now differs: another user's vector for every user.
    shuffled = dataclasses.replace(vectors, queries=np.roll(vectors.queries, 1, axis=0))
    layer2, _ = index_lib.build(IndexConfig(kind="brute_force", k=5), vectors.candidates, name="idx2")
    in_memory = servable.Retrieval(shuffled, layer2, params)
    spec = RetrievalSpec(vectors, seen=seen, popular=[])
    requests = spec.requests(8, np.random.default_rng(0))

    with pytest.raises(ValidationError, match="staged model differs from in-memory"):
        validate(
            spec,
            tmp_path,
            in_memory,
            requests,
            k=5,
            recall_threshold=0.0,
            tolerance=1e-4,
            timeout_s=120,
        )


def test_validation_reports_a_staged_model_that_cannot_load(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(ValidationError, match="failed to load or answer in a fresh process"):
        runners.in_fresh_process(tmp_path, [Request("serving_default", {"user_id": ["1"]})], timeout_s=120)


def test_compare_lets_exclude_seen_rows_hold_empty_slots_only_when_exclusions_leave_fewer_than_k():
    catalogue = frozenset(["A", "B", "C", "D", "E"])
    inf = float("-inf")
    request = Request(
        "exclude_seen",
        {"user_id": ["1", "2"], "exclude_titles": [["A", "B", "C"], ["A", "", ""]]},
        query="user_id",
        excluded="exclude_titles",
    )
    # Row "1" excludes 3 of 5 titles: with K=4 only 2 can be returned, the rest are "" (documented).
    full = {
        "movie_titles": np.array([["D", "E", "", ""], ["B", "C", "D", "E"]], dtype=object),
        "scores": np.array([[2.0, 1.0, inf, inf], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32),
    }
    assert checks.compare("retrieval", [request], [full], [full], k=4, tol=1e-4, catalogue=catalogue) == []
    # Row "2" excludes one title: it owes K=4, so an empty slot there is a problem (the same in both answers).
    short = {
        "movie_titles": np.array([["D", "E", "", ""], ["B", "C", "D", ""]], dtype=object),
        "scores": np.array([[2.0, 1.0, inf, inf], [4.0, 3.0, 2.0, inf]], dtype=np.float32),
    }
    problems = checks.compare("retrieval", [request], [short], [short], k=4, tol=1e-4, catalogue=catalogue)
    assert problems == ["retrieval/exclude_seen: the row for '2' holds fewer than K=4 titles"]


def test_compare_checks_that_movie_ids_are_the_returned_titles_ids():
    request = Request("serving_default", {"user_id": ["1"]}, query="user_id")
    id_of = {"A": "10", "B": "20", "C": "30"}
    answer = {
        "movie_titles": np.array([["B", "A"]], dtype=object),
        "scores": np.array([[2.0, 1.0]], dtype=np.float32),
        "movie_ids": np.array([["20", "10"]], dtype=object),
    }
    assert checks.compare("retrieval", [request], [answer], [answer], k=2, tol=1e-4, id_of=id_of) == []
    swapped = {**answer, "movie_ids": np.array([["10", "20"]], dtype=object)}
    missing = {k: v for k, v in answer.items() if k != "movie_ids"}
    for wrong in (swapped, missing):
        problems = checks.compare("retrieval", [request], [answer], [wrong], k=2, tol=1e-4, id_of=id_of)
        assert problems == ["retrieval/serving_default: movie_ids are not the ids of the returned movie_titles"]


def test_compare_checks_that_a_by_id_request_answers_as_its_title_keyed_twin():
    request = Request("serving_default", {"movie_title": ["A"]}, query="movie_title", returns_query=False)
    titles = ["A", "B", "C"]
    twin = with_ids([request], SimilarMoviesSpec.BY_ID, titles, ["10", "20", "30"])[1]
    assert twin == Request("by_id", {"movie_id": ["10"]}, Purpose.COMPARE, query="movie_id", twin=0)
    answer = {
        "movie_titles": np.array([["B", "C"]], dtype=object),
        "scores": np.array([[2.0, 1.0]], dtype=np.float32),
    }
    other = {**answer, "movie_titles": np.array([["C", "B"]], dtype=object)}
    assert checks.compare("similar_movies", [request, twin], [answer] * 2, [answer, answer], k=2, tol=1e-4) == []
    problems = checks.compare("similar_movies", [request, twin], [answer, other], [answer, other], k=2, tol=1e-4)
    assert problems == ["similar_movies/by_id does not answer as serving_default does for the same movies' titles"]
