"""The same suite over both transports against the real local server (``python -m serving``) serving a
BruteForce store exported by the tests (``brute_force_store``: users "1".."60", K = 10)."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

import retrieval_client as client
from client_fakes import latest_version, run_cli
from retrieval_client import Client

ROOT = Path(__file__).resolve().parents[2]
K = 10


@pytest.fixture
def c(local_server, transport_kind):
    with Client(local_server.url(transport_kind), timeout=30) as c:
        yield c


def titles(hits):
    return [h.title for h in hits]


def keyed(hits):
    return [(h.title, h.id) for h in hits]


def test_one_user_gets_k_hits_best_first(c):
    hits = c.recommend("42")
    assert len(hits) == K and all(isinstance(h, client.Hit) and h.title for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert c.recommend(42, k=3) == hits[:3]
    # Each hit carries its catalogue id (movie_ids): the synthetic catalogue's ids are "1".."150".
    assert all(h.id.isdigit() and 1 <= int(h.id) <= 150 for h in hits)
    assert len({h.id for h in hits}) == K


def test_a_batch_answers_each_user_as_if_alone(c):
    batch = c.recommend(["1", "2", "3"], k=5)
    assert [titles(row) for row in batch] == [titles(c.recommend(u, k=5)) for u in ("1", "2", "3")]


def _pad_as_tf_serving_batching_does(rows: list[list[str]], width: int) -> list[list[str]]:
    """A request narrower than the widest of its batch, as TF Serving's BatchingSession pads it
    (batching_util.cc, PadTensor: the pad value is the request tensor's first element)."""
    return [row + [rows[0][0]] * (width - len(row)) for row in rows]


class _Recording:
    """A transport that keeps the inputs the client sends."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sent: list[dict[str, Any]] = []

    def predict(self, model, inputs, output_filter, timeout):
        self.sent.append(dict(inputs))
        return self.inner.predict(model, inputs, output_filter, timeout)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_exclusions_survive_tf_servings_batch_padding(local_server, transport_kind):
    # With --enable_batching (the compose file's), a request can be padded to a wider batch with its own
    # first element: the client's leading "" column keeps that from excluding titles for other users.
    from retrieval_client.settings import Endpoint
    from retrieval_client.transports import for_endpoint

    url = local_server.url(transport_kind)
    with Client(url, timeout=30) as c:
        # user 2's best title under exclude_seen's own ranking (it may blend EASE in: export/selection.py)
        best_of_2 = c.recommend(["2"], exclude=[["no such movie"]])[0][0].title
        exclude = [[best_of_2], ["no such movie"]]  # user 1 excludes user 2's best movie
        expected = [titles(row) for row in c.recommend(["1", "2"], exclude=exclude)]
        assert best_of_2 in expected[1]
        recording = _Recording(for_endpoint(Endpoint.parse(url)))
        with Client(url, timeout=30, transport=recording) as spied:
            assert [titles(row) for row in spied.recommend(["1", "2"], exclude=exclude)] == expected
        sent = recording.sent[-1]["exclude_titles"]
        width = sent.shape[1]
        rows = [list(sent.values[i * width : (i + 1) * width]) for i in range(sent.shape[0])]

        def served(rows):
            out = c.predict("retrieval", {"user_id": ["1", "2"], "exclude_titles": rows}, signature_name="exclude_seen")
            return out["movie_titles"]

        assert served(_pad_as_tf_serving_batching_does(rows, width + 3)) == expected
        # what the leading "" guards against: the same rows without it lose user 2's best movie
        unguarded = served(_pad_as_tf_serving_batching_does([row[1:] for row in rows], width + 3))
        assert best_of_2 not in unguarded[1]


def test_k_above_the_exported_k_is_a_clear_invalid_argument(c):
    with pytest.raises(client.InvalidArgumentError, match=f"k={K + 1} is above K={K}"):
        c.recommend("1", k=K + 1)
    with pytest.raises(client.InvalidArgumentError, match=f"above K={K}"):
        c.similar("anything", k=50)


def test_excluded_titles_never_come_back_and_the_rest_moves_up(c):
    base = c.recommend("7", exclude=[])  # exclude_seen's own ranking (it may differ from serving_default's)
    seen = titles(base[:2])

    hits = c.recommend("7", exclude=seen)

    assert not set(seen) & set(titles(hits))
    assert titles(hits)[: K - 2] == titles(base)[2:]
    batch = c.recommend(["7", "8"], exclude=[seen, []])
    assert titles(batch[0]) == titles(hits) and titles(batch[1]) == titles(c.recommend("8", exclude=[]))


def test_similar_never_lists_the_movie_itself(c):
    title = c.recommend("5")[0].title
    hits = c.similar(title)
    assert len(hits) == K and title not in titles(hits)
    assert [titles(row) for row in c.similar([title, hits[0].title], k=4)] == [
        titles(hits[:4]),
        titles(c.similar(hits[0].title, k=4)),
    ]


def test_ids_answer_as_the_titles_they_are_served_as(c):
    """exclude_ids and similar_by_id: the by-id signatures give what the titles give, ids included."""
    base = c.recommend("7", exclude=[])
    seen = base[:2]
    by_title = c.recommend("7", exclude=titles(seen))
    assert c.recommend("7", exclude_ids=[h.id for h in seen]) == by_title
    batch = c.recommend(["7", "8"], exclude_ids=[[int(seen[0].id), seen[1].id], []])  # a batch: the same movies
    assert [keyed(row) for row in batch] == [keyed(by_title), keyed(c.recommend("8", exclude=[]))]
    assert c.recommend("7", exclude_ids=["no such id"]) == base  # an unknown id excludes nothing
    assert c.similar_by_id(seen[0].id) == c.similar(seen[0].title)
    assert [keyed(row) for row in c.similar_by_id([seen[0].id, int(seen[1].id)], k=3)] == [
        keyed(row) for row in c.similar(titles(seen), k=3)
    ]
    with pytest.raises(client.InvalidArgumentError, match="not both"):
        c.recommend("7", exclude=["a"], exclude_ids=["1"])
    with pytest.raises(client.InvalidArgumentError, match="exclude_ids needs one list of movie ids per user id"):
        c.recommend(["7", "8"], exclude_ids=[["1"]])


def test_status_shows_the_published_version_available(c, local_server):
    for model in ("retrieval", "similar_movies"):
        versions = c.status(model)
        assert [(v.version, v.state, v.error_code) for v in versions] == [
            (latest_version(local_server.store / model), "AVAILABLE", "OK")
        ]


def test_metadata_shows_the_contracts_signatures(c, local_server):
    meta = c.metadata()
    assert (meta.name, meta.version) == ("retrieval", latest_version(local_server.store / "retrieval"))
    default, exclude = meta.signatures["serving_default"], meta.signatures["exclude_seen"]
    assert {a: (s.dtype, s.shape) for a, s in default.inputs.items()} == {"user_id": ("DT_STRING", (-1,))}
    assert {a: (s.dtype, s.shape) for a, s in exclude.inputs.items()} == {
        "user_id": ("DT_STRING", (-1,)),
        "exclude_titles": ("DT_STRING", (-1, -1)),
    }
    for sig in (default, exclude):  # and fallback, unmatched: test_metadata_shows_the_history_signatures_...
        assert {a: (s.dtype, s.shape) for a, s in sig.outputs.items()}.items() >= {
            "movie_titles": ("DT_STRING", (-1, K)),
            "scores": ("DT_FLOAT", (-1, K)),
            "movie_ids": ("DT_STRING", (-1, K)),
        }.items()
    assert {a: (s.dtype, s.shape) for a, s in meta.signatures["exclude_seen_by_id"].inputs.items()} == {
        "user_id": ("DT_STRING", (-1,)),
        "exclude_ids": ("DT_STRING", (-1, -1)),
    }
    similar = c.metadata("similar_movies").signatures
    assert set(similar["serving_default"].inputs) == {"movie_title"}
    assert set(similar["by_id"].inputs) == {"movie_id"}


def test_a_version_or_a_label_selects_that_version(c, local_server):
    version = latest_version(local_server.store / "retrieval")
    latest = c.recommend("9")
    assert c.recommend("9", version=version) == latest == c.recommend("9", label="stable")
    assert [v.version for v in c.status(label="stable")] == [version]


def test_unknown_servables_are_named_errors(c):
    with pytest.raises(client.NotFoundError, match=r"Servable not found for request: Latest\(nope\)"):
        c.predict("nope", {"user_id": ["1"]})
    with pytest.raises(client.NotFoundError, match="nope"):  # GetModelStatus words it its own way
        c.status("nope")
    with pytest.raises(client.NotFoundError, match=r"Specific\(retrieval, 1\)"):
        c.recommend("1", version=1)
    with pytest.raises(client.InvalidArgumentError, match="Unrecognized servable version label: beta"):
        c.metadata(label="beta")
    # REST folds FAILED_PRECONDITION into HTTP 400, so it arrives as INVALID_ARGUMENT (see client.errors)
    with pytest.raises((client.FailedPreconditionError, client.InvalidArgumentError), match="zz"):
        c.predict("retrieval", {"user_id": ["1"]}, signature_name="zz")
    with pytest.raises(client.InvalidArgumentError):
        c.predict("retrieval", {"movie_title": ["x"]})


def test_predict_reaches_any_signature_and_filters_outputs(c):
    out = c.predict(
        "retrieval",
        {"user_id": ["3", "4"], "exclude_titles": [["", ""], ["", ""]]},
        signature_name="exclude_seen",
        output_filter=["movie_titles"],
    )
    assert list(out) == ["movie_titles"] and [len(r) for r in out["movie_titles"]] == [K, K]
    assert out["movie_titles"][0] == titles(c.recommend("3", exclude=[]))  # the same signature
    with pytest.raises(client.InvalidArgumentError, match="nope"):
        c.predict("retrieval", {"user_id": ["3"]}, output_filter=["nope"])


def test_one_client_serves_many_threads(c):
    expected = {u: titles(c.recommend(str(u))) for u in range(1, 9)}
    got, failures = {}, []

    def work(u):
        try:
            got[u] = [titles(c.recommend(str(u))) for _ in range(5)]
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and got == {u: [expected[u]] * 5 for u in expected}


def test_both_transports_give_identical_answers(local_server):
    with Client(local_server.rest_url) as rest, Client(local_server.grpc_url) as rpc:
        for call in (
            lambda x: x.recommend(["10", "11"]),
            lambda x: x.recommend("12", exclude=["x"]),
            lambda x: x.similar(x.recommend("13")[0].title),
            lambda x: x.status("similar_movies"),
            lambda x: x.metadata("retrieval"),
        ):
            assert call(rest) == call(rpc)


# -- issue 18: fallback and unmatched on every answer, recommendations for a history -------------------------
# These need a store exported with the by_history signatures and the fallback/unmatched outputs (export/).


def test_every_answer_says_whether_it_is_the_popularity_fallback(c):
    known, unknown = c.recommend(["1", "nosuchuser"])
    assert (known.fallback, unknown.fallback) == (False, True) and (known.unmatched, unknown.unmatched) == (0, 0)
    assert len(unknown) == K
    title = known[0].title
    assert c.similar(title).fallback is False and c.similar("no such movie").fallback is True
    assert c.similar_by_id(known[0].id).fallback is False and c.similar_by_id("no such id").fallback is True
    assert c.recommend("nosuchuser", exclude=[]).fallback is True
    assert c.recommend("nosuchuser", exclude_ids=[]).fallback is True
    # the popularity fallback is one list, whatever was unknown
    assert titles(c.similar("no such movie")) == titles(unknown) == titles(c.similar_by_id("no such id"))


def test_unmatched_counts_exclusions_that_match_no_movie(c):
    base = c.recommend("7", exclude=[])
    seen = base[:2]
    by_title = c.recommend("7", exclude=[*titles(seen), "no such movie", "nor this", ""])
    assert (by_title.fallback, by_title.unmatched) == (False, 2)  # "" is padding, not an entry
    assert by_title == c.recommend("7", exclude=titles(seen))  # ignored: the same answer
    by_id = c.recommend(["7", "8"], exclude_ids=[[seen[0].id, "no such id"], []])
    assert [(row.fallback, row.unmatched) for row in by_id] == [(False, 1), (False, 0)]


def test_a_history_gets_k_hits_never_its_own(c):
    history = titles(c.recommend("5", k=3))

    hits = c.recommend_for_history(history)

    assert isinstance(hits, client.Recommendations) and len(hits) == K
    assert (hits.fallback, hits.unmatched) == (False, 0)
    assert not set(history) & set(titles(hits))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.id.isdigit() for h in hits)
    assert c.recommend_for_history(tuple(history), k=4) == hits[:4]


def test_history_ids_answer_as_the_titles_they_are_served_as(c):
    seen = c.recommend("9", k=3)
    by_title = c.recommend_for_history(titles(seen))
    assert keyed(c.recommend_for_history_ids([h.id for h in seen])) == keyed(by_title)
    mixed = c.recommend_for_history_ids([int(seen[0].id), seen[1].id, seen[2].id, "no such id"])
    assert keyed(mixed) == keyed(by_title) and (mixed.fallback, mixed.unmatched) == (False, 1)


def test_unknown_history_items_are_ignored_and_counted(c):
    history = titles(c.recommend("11", k=2))
    alone = c.recommend_for_history(history)
    padded = c.recommend_for_history([history[0], "no such movie", history[1], "nor this"])
    assert padded == alone and (padded.fallback, padded.unmatched) == (False, 2)
    nothing_known = c.recommend_for_history(["no such movie"])
    assert (nothing_known.fallback, nothing_known.unmatched) == (True, 1)
    assert titles(nothing_known) == titles(c.recommend("nosuchuser"))  # the popularity fallback
    empty = c.recommend_for_history([])
    assert (empty.fallback, empty.unmatched) == (True, 0) and titles(empty) == titles(nothing_known)


def test_a_batch_of_histories_answers_each_as_if_alone(c):
    histories = [titles(c.recommend(u, k=n)) for u, n in (("1", 1), ("2", 4), ("3", 2))] + [[]]
    batch = c.recommend_for_history(histories)
    assert [keyed(row) for row in batch] == [keyed(c.recommend_for_history(h)) for h in histories]
    assert [row.fallback for row in batch] == [False, False, False, True]
    ids = [[h.id for h in c.recommend(u, k=2)] for u in ("4", "5")]
    assert [keyed(row) for row in c.recommend_for_history_ids(ids)] == [
        keyed(c.recommend_for_history_ids(row)) for row in ids
    ]


def test_histories_survive_tf_servings_batch_padding(local_server, transport_kind):
    # As for exclusions: TF Serving's batching pads a request with its first element; the client's leading ""
    # column keeps the first history's first title out of the other histories.
    from retrieval_client.settings import Endpoint
    from retrieval_client.transports import for_endpoint

    url = local_server.url(transport_kind)
    with Client(url, timeout=30) as c:
        second = titles(c.recommend("2", k=1))
        best_of_second = c.recommend_for_history(second)[0].title
        histories = [[best_of_second], second]  # the first history starts with the second one's best movie
        expected = [titles(row) for row in c.recommend_for_history(histories)]
        assert best_of_second in expected[1]
        recording = _Recording(for_endpoint(Endpoint.parse(url)))
        with Client(url, timeout=30, transport=recording) as spied:
            assert [titles(row) for row in spied.recommend_for_history(histories)] == expected
        sent = recording.sent[-1]["history_titles"]
        width = sent.shape[1]
        rows = [list(sent.values[i * width : (i + 1) * width]) for i in range(sent.shape[0])]

        def served(rows):
            return c.predict("retrieval", {"history_titles": rows}, signature_name="by_history")["movie_titles"]

        assert served(_pad_as_tf_serving_batching_does(rows, width + 3)) == expected
        unguarded = served(_pad_as_tf_serving_batching_does([row[1:] for row in rows], width + 3))
        assert best_of_second not in unguarded[1]


def test_metadata_shows_the_history_signatures_and_the_flags(c):
    signatures = c.metadata().signatures
    for name, alias in (("by_history", "history_titles"), ("by_history_ids", "history_ids")):
        sig = signatures[name]
        assert {a: (s.dtype, s.shape) for a, s in sig.inputs.items()} == {alias: ("DT_STRING", (-1, -1))}
        assert {a: (s.dtype, s.shape) for a, s in sig.outputs.items()} == {
            "movie_titles": ("DT_STRING", (-1, K)),
            "scores": ("DT_FLOAT", (-1, K)),
            "movie_ids": ("DT_STRING", (-1, K)),
            "fallback": ("DT_BOOL", (-1,)),
            "unmatched": ("DT_INT32", (-1,)),
        }
    for name in ("serving_default", "exclude_seen", "exclude_seen_by_id"):
        assert (signatures[name].outputs["fallback"].dtype, signatures[name].outputs["fallback"].shape) == (
            "DT_BOOL",
            (-1,),
        )
    for name in ("exclude_seen", "exclude_seen_by_id"):
        assert signatures[name].outputs["unmatched"].dtype == "DT_INT32"
    assert "unmatched" not in signatures["serving_default"].outputs
    for sig in c.metadata("similar_movies").signatures.values():
        if not sig.name.startswith("__"):
            assert sig.outputs["fallback"].dtype == "DT_BOOL"


def test_both_transports_give_identical_flags(local_server):
    with Client(local_server.rest_url) as rest, Client(local_server.grpc_url) as rpc:
        history = titles(rest.recommend("20", k=2))
        for call in (
            lambda x: x.recommend(["20", "nosuchuser"], exclude=[["nope"], []]),
            lambda x: x.recommend_for_history([history, ["nope"], []]),
            lambda x: x.recommend_for_history_ids([["1", "2", "no such id"]]),
            lambda x: x.similar(["no such movie", history[0]]),
        ):
            a, b = call(rest), call(rpc)
            assert a == b and [(r.fallback, r.unmatched) for r in a] == [(r.fallback, r.unmatched) for r in b]


def test_cli_history_notices_and_strict(local_server, transport_kind, c):
    url = local_server.url(transport_kind)
    history = titles(c.recommend("30", k=2))

    as_json = run_cli("recommend", "--history", *history, "no such movie", "-k", "3", "--json", "--url", url)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "history": {
            "hits": [dataclasses.asdict(h) for h in c.recommend_for_history(history, k=3)],
            "fallback": False,
            "unmatched": 1,
        }
    }
    by_id = run_cli("recommend", "--history-id", c.recommend("30")[0].id, "-k", "3", "--url", url)
    assert by_id.returncode == 0 and by_id.stdout.splitlines()[0] == "history:"
    table = run_cli("recommend", "30", "nosuchuser", "-k", "2", "--url", url)
    assert table.stdout.splitlines()[-1] == (
        '  (fallback: user "nosuchuser" is unknown to the model; these are the most popular movies)'
    )
    strict = run_cli("recommend", "30", "nosuchuser", "--strict", "--url", url)
    assert strict.returncode == 1 and strict.stdout == ""
    assert strict.stderr.startswith('error: NOT_FOUND: user "nosuchuser" is unknown to the model')
    assert run_cli("similar", history[0], "--strict", "--url", url).returncode == 0


# -- the CLI and the README, as a user runs them ----------------------------------------------------------


def test_cli_prints_a_table_or_json(local_server, transport_kind, c):
    url = local_server.url(transport_kind)
    expected = c.recommend("42", k=5)

    table = run_cli("recommend", "42", "-k", "5", "--url", url)
    as_json = run_cli("recommend", "42", "-k", "5", "--url", url, "--json", "--exclude", expected[0].title)

    assert table.returncode == 0 and table.stdout.splitlines()[0] == "42:"
    assert re.fullmatch(r"  #  ID +SCORE  TITLE", table.stdout.splitlines()[1])
    rows = [line.split(None, 3) for line in table.stdout.splitlines()[2:]]
    assert [(int(rank), id_, title) for rank, id_, _, title in rows] == [
        (rank, h.id, h.title) for rank, h in enumerate(expected, 1)
    ]
    assert as_json.returncode == 0
    assert [h["title"] for h in json.loads(as_json.stdout)["42"]["hits"]] == titles(
        c.recommend("42", k=5, exclude=[expected[0].title])
    )
    similar = run_cli("similar", expected[0].title, "-k", "3", "--json", env={"RETRIEVAL_URL": url})
    assert [h["title"] for h in json.loads(similar.stdout)[expected[0].title]["hits"]] == titles(
        c.similar(expected[0].title, k=3)
    )
    by_id = run_cli("similar", expected[0].id, "--by-id", "-k", "3", "--json", "--url", url)
    assert [h["title"] for h in json.loads(by_id.stdout)[expected[0].id]["hits"]] == titles(
        c.similar(expected[0].title, k=3)
    )
    keyed = run_cli("recommend", "42", "-k", "5", "--url", url, "--json", "--exclude-id", expected[0].id)
    assert json.loads(keyed.stdout) == json.loads(as_json.stdout)
    status = run_cli("status", "--model", "similar_movies", "--url", url)
    assert status.returncode == 0 and re.search(r"^\d+\s+AVAILABLE\s+OK$", status.stdout, re.M)
    meta = run_cli("metadata", "--url", url)
    assert meta.returncode == 0 and f"out movie_titles: DT_STRING [-1, {K}]" in meta.stdout


def test_the_other_transports_port_is_named_not_dumped(local_server):
    grpc_port = local_server.grpc_url.rsplit(":", 1)[1]
    rest_port = local_server.rest_url.rsplit(":", 1)[1]
    with (
        client.Client(f"http://127.0.0.1:{grpc_port}", timeout=10) as c,
        pytest.raises(client.InvalidArgumentError, match="this port speaks gRPC") as err,
    ):
        c.recommend("42")
    assert "BadStatusLine" not in err.value.message and f"grpc://127.0.0.1:{grpc_port}" in err.value.message
    with (
        client.Client(f"grpc://127.0.0.1:{rest_port}", timeout=10) as c,
        pytest.raises(client.InvalidArgumentError, match="this port speaks REST"),
    ):
        c.recommend("42")
    proc = run_cli("recommend", "42", "--url", f"127.0.0.1:{grpc_port}")  # host:port is http://
    assert proc.returncode == 1 and proc.stderr.startswith("error: INVALID_ARGUMENT: ") and "speaks gRPC" in proc.stderr


def test_cli_failures_exit_non_zero_with_one_line(local_server, transport_kind):
    url = local_server.url(transport_kind)
    for args, text in (
        (["status", "--model", "nope"], "error: NOT_FOUND: Could not find any versions of model nope"),
        (["recommend", "1", "-k", "99"], "error: INVALID_ARGUMENT: k=99 is above K=10"),
    ):
        proc = run_cli(*args, "--url", url)
        assert proc.returncode == 1 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(text)
