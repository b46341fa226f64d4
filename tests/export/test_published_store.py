"""The stores the export CLI publishes answer as docs/contract.md says, loaded the way TF Serving loads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

K = 10


def _version_dir(store: Path, model: str) -> Path:
    versions = [p for p in (store / model).iterdir() if p.name.isdigit()]
    assert len(versions) == 1, versions
    return versions[0]


def _load(store: Path, model: str):
    from serving.bundle import SavedModelBundle

    return SavedModelBundle.load(str(_version_dir(store, model)), run_warmup=True)


def _text(array) -> np.ndarray:
    return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array)


def _b(values) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=object)


@pytest.fixture(scope="module", params=["scann", "brute_force"])
def store(request, model_store, brute_force_store) -> Path:
    return model_store if request.param == "scann" else brute_force_store


@pytest.fixture(scope="module")
def tiny_data():
    from export.data import load
    from export.data.synthetic import SyntheticSpec

    return load("synthetic", synthetic=SyntheticSpec(users=60, movies=150, ratings=4000, seed=0))


@pytest.fixture(scope="module")
def catalogue(tiny_data) -> list[str]:
    return sorted(set(np.asarray(tiny_data.movies.movie_title).astype(str).tolist()))


def test_store_layout_and_manifest_follow_the_contract(store, catalogue):
    for model in ("retrieval", "similar_movies"):
        version = _version_dir(store, model)
        for name in (
            "saved_model.pb",
            "variables",
            "fingerprint.pb",
            "assets.extra/tf_serving_warmup_requests",
            "assets.extra/manifest.json",
        ):
            assert (version / name).exists(), name
        manifest = json.loads((version / "assets.extra" / "manifest.json").read_text())
        assert manifest["model_name"] == model
        assert manifest["version"] == int(version.name)
        assert manifest["k"] == K
        assert manifest["data"]["source"]["kind"] == "synthetic"
        assert manifest["data"]["counts"]["train"] + manifest["data"]["counts"]["test"] == 4000
        assert manifest["data"]["counts"]["titles"] == len(catalogue)
        for row in ("model", "model_exclude_seen", "popularity", "popularity_exclude_seen"):
            assert set(manifest["metrics"][row]) == {"top_1", "top_5", "top_10", "top_50", "top_100"}
        assert manifest["index"]["kind"] in ("scann", "brute_force")
        assert manifest["index"]["recall_at_10"] >= 0.95
        assert manifest["libraries"]["tensorflow"].startswith("2.")
        assert manifest["training"]["parameters"]["preset"] == "default"


def test_signatures_have_the_contract_names_dtypes_and_shapes(store):
    from tensorflow.core.framework import types_pb2

    def dims(info):
        return [d.size for d in info.tensor_shape.dim]

    retrieval = _load(store, "retrieval")
    similar = _load(store, "similar_movies")
    try:
        sigs = retrieval.signature_defs
        assert {"serving_default", "exclude_seen"} <= set(sigs)
        assert set(sigs["serving_default"].inputs) == {"user_id"}
        assert set(sigs["exclude_seen"].inputs) == {"user_id", "exclude_titles"}
        assert dims(sigs["exclude_seen"].inputs["exclude_titles"]) == [-1, -1]
        init = {"__saved_model_init_op"}  # the by-id table's initializer, listed as TF Serving lists it
        assert set(sigs) - init == {
            "serving_default",
            "exclude_seen",
            "exclude_seen_by_id",
            "by_history",
            "by_history_ids",
        }
        assert set(sigs["exclude_seen_by_id"].inputs) == {"user_id", "exclude_ids"}
        assert dims(sigs["exclude_seen_by_id"].inputs["exclude_ids"]) == [-1, -1]
        assert set(sigs["by_history"].inputs) == {"history_titles"}
        assert dims(sigs["by_history"].inputs["history_titles"]) == [-1, -1]
        assert set(sigs["by_history_ids"].inputs) == {"history_ids"}
        assert dims(sigs["by_history_ids"].inputs["history_ids"]) == [-1, -1]
        with_exclusions = {"exclude_seen", "exclude_seen_by_id", "by_history", "by_history_ids"}
        assert set(similar.signature_defs) - init == {"serving_default", "by_id"}
        assert set(similar.signature_defs["by_id"].inputs) == {"movie_id"}
        assert dims(similar.signature_defs["by_id"].inputs["movie_id"]) == [-1]
        for name, sig in (*sigs.items(), *similar.signature_defs.items()):
            if name in init:
                continue
            counted = {"unmatched"} if sig in (sigs.get(n) for n in with_exclusions) else set()
            assert set(sig.outputs) == {"movie_titles", "scores", "movie_ids", "fallback"} | counted
            assert sig.outputs["fallback"].dtype == types_pb2.DT_BOOL
            assert dims(sig.outputs["fallback"]) == [-1]
            if counted:
                assert sig.outputs["unmatched"].dtype == types_pb2.DT_INT32
                assert dims(sig.outputs["unmatched"]) == [-1]
            assert sig.outputs["movie_titles"].dtype == types_pb2.DT_STRING
            assert sig.outputs["movie_ids"].dtype == types_pb2.DT_STRING
            assert dims(sig.outputs["movie_ids"]) == [-1, K]
            assert sig.outputs["scores"].dtype == types_pb2.DT_FLOAT
            assert dims(sig.outputs["movie_titles"]) == [-1, K]
            assert dims(sig.outputs["scores"]) == [-1, K]
            for info in sig.inputs.values():
                assert info.dtype == types_pb2.DT_STRING
        assert set(similar.signature_defs["serving_default"].inputs) == {"movie_title"}
        assert dims(sigs["serving_default"].inputs["user_id"]) == [-1]
    finally:
        retrieval.close()
        similar.close()


def test_warmup_records_are_prediction_logs_for_every_signature(store):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    for model, signatures in (
        ("retrieval", {"serving_default", "exclude_seen", "exclude_seen_by_id", "by_history", "by_history_ids"}),
        ("similar_movies", {"serving_default", "by_id"}),
    ):
        path = _version_dir(store, model) / "assets.extra" / "tf_serving_warmup_requests"
        logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
        assert 0 < len(logs) <= 1000
        assert {log.predict_log.request.model_spec.signature_name for log in logs} == signatures
        assert all(log.predict_log.request.model_spec.name == model for log in logs)


def test_retrieval_returns_k_titles_best_first(store, catalogue):
    bundle = _load(store, "retrieval")
    try:
        out = bundle.run("serving_default", {"user_id": _b(["1", "42", "7"])})
    finally:
        bundle.close()
    assert out["movie_titles"].shape == (3, K) and out["scores"].shape == (3, K)
    assert np.all(np.diff(out["scores"], axis=1) <= 1e-6)
    titles = _text(out["movie_titles"])
    assert set(titles.ravel()) <= set(catalogue)
    assert all(len(set(row)) == K for row in titles)


def test_exclude_seen_never_returns_an_excluded_title_even_for_a_heavy_user(store, catalogue):
    bundle = _load(store, "retrieval")
    try:
        # exclude_seen's own ranking with nothing excluded (it may blend EASE in; serving_default does not).
        plain = _text(
            bundle.run(
                "exclude_seen",
                {"user_id": _b(["3", "5"]), "exclude_titles": np.array([_b([""]), _b([""])], dtype=object)},
            )["movie_titles"]
        )
        heavy = list(catalogue[: len(catalogue) - 2 * K])  # all but 2K titles excluded
        light = list(plain[1][:3])  # its own best three
        rows = [heavy, light + [""] * (len(heavy) - len(light))]  # padded with ""
        out = bundle.run(
            "exclude_seen", {"user_id": _b(["3", "5"]), "exclude_titles": np.array([_b(r) for r in rows], dtype=object)}
        )
    finally:
        bundle.close()
    titles = _text(out["movie_titles"])
    assert titles.shape == (2, K)
    assert not set(titles[0]) & set(heavy)
    assert not set(titles[1]) & set(light)
    assert "" not in set(titles.ravel())
    # The light user's list is its plain list minus the excluded ones, topped up from further down.
    assert list(titles[1][: K - 3]) == [t for t in plain[1] if t not in light]


def test_similar_movies_never_returns_the_query(store, catalogue):
    bundle = _load(store, "similar_movies")
    try:
        out = bundle.run("serving_default", {"movie_title": _b(catalogue)})
    finally:
        bundle.close()
    titles = _text(out["movie_titles"])
    assert titles.shape == (len(catalogue), K)
    for query, row in zip(catalogue, titles, strict=True):
        assert query not in set(row)
        assert len(set(row)) == K


def test_unknown_keys_get_the_most_popular_movies(store, tiny_data):
    from export.data import split

    data = tiny_data
    train_idx, _ = split(data.ratings, kind="random")
    titles, counts = np.unique(np.asarray(data.ratings.movie_title)[train_idx].astype(str), return_counts=True)
    count_of = dict(zip(titles.tolist(), counts.tolist(), strict=True))
    kth = sorted(counts.tolist(), reverse=True)[K - 1]

    retrieval, similar = _load(store, "retrieval"), _load(store, "similar_movies")
    try:
        by_user = _text(retrieval.run("serving_default", {"user_id": _b(["no-such-user", ""])})["movie_titles"])
        by_title = _text(similar.run("serving_default", {"movie_title": _b(["No Such Movie (1900)"])})["movie_titles"])
    finally:
        retrieval.close()
        similar.close()
    for row in (by_user[0], by_user[1], by_title[0]):
        assert len(row) == K
        assert all(count_of[t] >= kth for t in row), [(t, count_of[t]) for t in row]
        assert [count_of[t] for t in row] == sorted([count_of[t] for t in row], reverse=True)


def test_movie_ids_are_the_catalogue_ids_of_the_returned_titles(store, tiny_data):
    """Titles are display names; movie_ids give each returned title's id. A title several ids share (the
    synthetic catalogue re-enters ~1% of its movies, as MovieLens does) gives the first of them."""
    movies = tiny_data.movies
    first: dict[str, str] = {}
    for movie_id, title in zip(movies.movie_id.tolist(), movies.movie_title.tolist(), strict=True):
        first.setdefault(title, movie_id)
    assert len(first) < len(movies)  # the catalogue has shared titles, so the rule is exercised
    retrieval, similar = _load(store, "retrieval"), _load(store, "similar_movies")
    try:
        answers = [
            retrieval.run("serving_default", {"user_id": _b(["1", "2", "no such user"])}),
            retrieval.run("exclude_seen", {"user_id": _b(["1"]), "exclude_titles": _b([[""]][0])[None, :]}),
            similar.run("serving_default", {"movie_title": _b(sorted(first)[:3])}),
        ]
    finally:
        retrieval.close()
        similar.close()
    for out in answers:
        titles, ids = _text(out["movie_titles"]), _text(out["movie_ids"])
        assert ids.shape == titles.shape
        assert [[first[t] for t in row] for row in titles.tolist()] == ids.tolist()


def test_the_by_id_signatures_answer_as_the_titles_those_ids_are_served_as(store, tiny_data):
    """Every id of a shared title finds that title; an unknown id is an unknown title; "" excludes nothing."""
    movies = tiny_data.movies
    ids_of: dict[str, list[str]] = {}
    for movie_id, title in zip(movies.movie_id.tolist(), movies.movie_title.tolist(), strict=True):
        ids_of.setdefault(title, []).append(movie_id)
    shared = sorted(t for t, ids in ids_of.items() if len(ids) > 1)[:2]
    single = sorted(t for t, ids in ids_of.items() if len(ids) == 1)[:3]
    assert shared and single
    queries = [(t, i) for t in shared for i in ids_of[t]] + [(t, ids_of[t][0]) for t in single]
    retrieval, similar = _load(store, "retrieval"), _load(store, "similar_movies")
    try:
        by_title = similar.run("serving_default", {"movie_title": _b([t for t, _ in queries] + ["No Such (1900)"])})
        by_id = similar.run("by_id", {"movie_id": _b([i for _, i in queries] + ["no-such-id"])})
        exclude = [[*single, ""], [""] * (len(single) + 1)]
        exclude_ids = [[ids_of[t][0] for t in single] + [""], [""] * (len(single) + 1)]
        users = _b(["1", "2"])
        titled = retrieval.run("exclude_seen", {"user_id": users, "exclude_titles": np.array([_b(r) for r in exclude])})
        keyed = retrieval.run(
            "exclude_seen_by_id", {"user_id": users, "exclude_ids": np.array([_b(r) for r in exclude_ids])}
        )
        unknown = retrieval.run(
            "exclude_seen_by_id", {"user_id": users, "exclude_ids": np.array([_b(["no-such-id"]), _b([""])])}
        )
        plain = retrieval.run("exclude_seen", {"user_id": users, "exclude_titles": np.array([_b([""]), _b([""])])})
    finally:
        retrieval.close()
        similar.close()
    for a, b in ((by_title, by_id), (titled, keyed), (plain, unknown)):
        assert _text(a["movie_titles"]).tolist() == _text(b["movie_titles"]).tolist()
        assert _text(a["movie_ids"]).tolist() == _text(b["movie_ids"]).tolist()
        assert np.allclose(a["scores"], b["scores"])
    assert not set(_text(keyed["movie_titles"])[0]) & set(single)  # the ids' titles are excluded


def test_by_history_answers_anyone_from_their_titles_and_flags_the_fallback(store, tiny_data, catalogue):
    """A history's titles are never returned and K remain; unknown titles are ignored and counted; an empty or
    all-unknown history is the popularity fallback, the same list as an unknown user's; by ids = by titles."""
    ids_of: dict[str, str] = {}
    for movie_id, title in zip(tiny_data.movies.movie_id.tolist(), tiny_data.movies.movie_title.tolist(), strict=True):
        ids_of.setdefault(title, movie_id)
    history = catalogue[:7]
    rows = [[*history, "No Such (1900)"], history[:2] + [""] * 6, [""] * 8, ["No Such (1900)"] + [""] * 7]
    retrieval = _load(store, "retrieval")
    try:
        titled = retrieval.run("by_history", {"history_titles": np.array([_b(r) for r in rows])})
        keyed = retrieval.run(
            "by_history_ids",
            {"history_ids": np.array([_b([ids_of.get(t, "no-such-id") if t else "" for t in r]) for r in rows])},
        )
        unknown_user = retrieval.run("serving_default", {"user_id": _b(["no such user", "1"])})
    finally:
        retrieval.close()
    titles = _text(titled["movie_titles"])
    assert titles.shape == (4, K) and (titles != "").all()
    assert not set(titles[0]) & set(history) and not set(titles[1]) & set(history[:2])
    assert titled["fallback"].tolist() == [False, False, True, True]
    assert titled["unmatched"].tolist() == [1, 0, 0, 1]
    assert unknown_user["fallback"].tolist() == [True, False]
    assert titles[2].tolist() == titles[3].tolist() == _text(unknown_user["movie_titles"])[0].tolist()
    for name in ("movie_titles", "movie_ids", "fallback", "unmatched"):
        assert np.asarray(keyed[name]).tolist() == np.asarray(titled[name]).tolist(), name


@pytest.mark.parametrize("first", ["serving_default", "exclude_seen", "by_history"])
def test_every_signature_answers_when_loaded_with_tf_saved_model_load(store, first):
    """TF2's loader (as in a notebook) shares one resource manager across the process: every index's ScaNN
    searcher must keep its own (export/index.py), whichever signature is called first."""
    import tensorflow as tf

    inputs = {
        "serving_default": {"user_id": tf.constant(["1"])},
        "exclude_seen": {"user_id": tf.constant(["1"]), "exclude_titles": tf.constant([[""]])},
        "exclude_seen_by_id": {"user_id": tf.constant(["1"]), "exclude_ids": tf.constant([[""]])},
        "by_history": {"history_titles": tf.constant([["", "x"]])},
        "by_history_ids": {"history_ids": tf.constant([["", "x"]])},
    }
    retrieval = tf.saved_model.load(str(_version_dir(store, "retrieval")))
    order = [first] + [name for name in inputs if name != first]
    for name in order:
        out = retrieval.signatures[name](**inputs[name])
        assert out["movie_titles"].shape == (1, K), name
    similar = tf.saved_model.load(str(_version_dir(store, "similar_movies")))
    for name, key in (("by_id", "movie_id"), ("serving_default", "movie_title")):
        assert similar.signatures[name](**{key: tf.constant(["x"])})["fallback"].numpy().tolist() == [True]
