"""recommend_for_history and recommend_for_history_ids against the fakes: the signature and inputs they send
(padded as exclusion rows are), what they return, the inputs apps have, and the same errors, deadlines and
retries as every other call."""

from __future__ import annotations

import pytest

import retrieval_client as client
from client_fakes import CATALOG, K
from retrieval_client import Recommendations


def sent(fake_server):
    """(model, signature, inputs) of the last predict the fake received."""
    _, name, _, _, signature, inputs = fake_server.calls[-1]
    return name, signature, inputs


def titles(hits):
    return [h.title for h in hits]


def test_one_history_calls_by_history_with_a_leading_empty_column(transport_kind, fake_server, make_fake_client):
    hits = make_fake_client(transport_kind, fake_server).recommend_for_history(["Movie 2", "Movie 5"])

    # a leading "" column: TF Serving's batching pads with the first element, which must be no title
    assert sent(fake_server) == ("retrieval", "by_history", {"history_titles": [["", "Movie 2", "Movie 5"]]})
    assert isinstance(hits, Recommendations) and (hits.fallback, hits.unmatched) == (False, 0)
    assert titles(hits) == CATALOG[6 : 6 + K]  # the fake: after the last known title, never the history's own


def test_several_histories_are_padded_rows_with_one_answer_each(transport_kind, fake_server, make_fake_client):
    rows = make_fake_client(transport_kind, fake_server).recommend_for_history(
        [["Movie 1", "Movie 3", "no such movie"], [], ["Movie 0"]]
    )

    assert sent(fake_server)[1:] == (
        "by_history",
        {"history_titles": [["", "Movie 1", "Movie 3", "no such movie"], ["", "", "", ""], ["", "Movie 0", "", ""]]},
    )
    assert isinstance(rows, list) and all(isinstance(r, Recommendations) for r in rows)
    assert [(r.fallback, r.unmatched) for r in rows] == [(False, 1), (True, 0), (False, 0)]
    assert "Movie 1" not in titles(rows[0]) and "Movie 3" not in titles(rows[0])
    assert titles(rows[1]) == CATALOG[:K]  # an empty history: the most popular


def test_an_empty_history_is_one_history_the_model_knows_nothing_of(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    for empty in ([], ()):
        hits = c.recommend_for_history(empty)
        assert sent(fake_server)[2] == {"history_titles": [[""]]}
        assert isinstance(hits, Recommendations) and hits.fallback is True and len(hits) == K
    unknown = c.recommend_for_history(["no such movie", "nor this"])
    assert (unknown.fallback, unknown.unmatched) == (True, 2) and titles(unknown) == CATALOG[:K]


def test_history_ids_call_by_history_ids_with_ids_as_strings(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)

    one = c.recommend_for_history_ids([2, "5"])
    assert sent(fake_server) == ("retrieval", "by_history_ids", {"history_ids": [["", "2", "5"]]})
    assert titles(one) == titles(c.recommend_for_history(["Movie 2", "Movie 5"]))

    rows = c.recommend_for_history_ids([["2", 999], [], (5,)])
    assert sent(fake_server)[2] == {"history_ids": [["", "2", "999"], ["", "", ""], ["", "5", ""]]}
    assert [(r.fallback, r.unmatched) for r in rows] == [(False, 1), (True, 0), (False, 0)]


class SeriesLike:
    """What pandas' Series and Index share with numpy arrays here: not a Sequence, but tolist()."""

    def __init__(self, values) -> None:
        self._values = list(values)

    def tolist(self):
        return list(self._values)

    def __iter__(self):
        return iter(self._values)


def test_histories_come_as_tuples_arrays_and_series(transport_kind, fake_server, make_fake_client):
    np = pytest.importorskip("numpy")
    c = make_fake_client(transport_kind, fake_server)
    one = {"history_titles": [["", "Movie 2", "Movie 5"]]}
    two = {"history_titles": [["", "Movie 2", "Movie 5"], ["", "Movie 7", ""]]}
    for history, inputs, single in (
        (("Movie 2", "Movie 5"), one, True),
        (np.array(["Movie 2", "Movie 5"]), one, True),
        (SeriesLike(["Movie 2", "Movie 5"]), one, True),
        ((("Movie 2", "Movie 5"), ["Movie 7"]), two, False),
        ([np.array(["Movie 2", "Movie 5"]), SeriesLike(["Movie 7"])], two, False),
        (np.array([["Movie 2", "Movie 5"], ["Movie 7", ""]]), two, False),  # a 2-D array: rows already padded
    ):
        answer = c.recommend_for_history(history)
        assert sent(fake_server)[2] == inputs and isinstance(answer, Recommendations) is single
        assert type(sent(fake_server)[2]["history_titles"][0][1]) is str  # numpy's str_ went out as str
    c.recommend_for_history_ids(np.array([2, 5], dtype=np.int64))
    assert sent(fake_server)[2] == {"history_ids": [["", "2", "5"]]}
    c.recommend_for_history_ids([np.int32(2), 5])  # e.g. list(series): numpy ints
    assert sent(fake_server)[2] == {"history_ids": [["", "2", "5"]]}
    c.recommend_for_history_ids(np.array([[2], [5]]))
    assert sent(fake_server)[2] == {"history_ids": [["", "2"], ["", "5"]]}
    assert c.recommend_for_history(np.empty((0, 3), dtype=str)) == []  # no histories: no call
    assert len(fake_server.calls) == 6 + 3


@pytest.mark.parametrize(
    "call, history, text",
    [
        ("recommend_for_history", "Movie 1", "history must be a list"),
        ("recommend_for_history", None, "history must be a list"),
        ("recommend_for_history", {frozenset({"Movie 1"})}, "history must be a list, not a set"),
        ("recommend_for_history", {"Movie 1": 1}, "history must be a list, not a dict"),
        ("recommend_for_history", ["Movie 1", 7], "history must hold strings"),
        ("recommend_for_history", ["Movie 1", ["Movie 2"]], r"history\[0\] must be a list"),
        ("recommend_for_history", [["Movie 1"], [b"\xff"]], r"history\[1\]'s titles must be UTF-8 text"),
        ("recommend_for_history", [["Movie 1"], [2]], r"history\[1\] must hold strings"),
        ("recommend_for_history_ids", "12", "history_ids must be a list"),
        ("recommend_for_history_ids", [1.5], "a movie id is a str or an int"),
        ("recommend_for_history_ids", [True], "a movie id is a str or an int"),
        ("recommend_for_history_ids", [[1], 2], r"history_ids\[1\] must be a list"),
    ],
)
def test_misshapen_histories_are_rejected_before_any_call(call, history, text, fake_server, make_fake_client):
    with pytest.raises(client.InvalidArgumentError, match=text):
        getattr(make_fake_client("grpc", fake_server), call)(history)
    assert fake_server.calls == []


def test_k_version_label_and_deadlines_work_as_for_recommend(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server, timeout=4.0)

    assert titles(c.recommend_for_history(["Movie 2"], k=2)) == ["Movie 3", "Movie 4"]
    c.recommend_for_history_ids(["2"], version=9)
    c.recommend_for_history(["Movie 2"], label="canary", timeout=1.5)
    assert [call[2:4] for call in fake_server.calls] == [(None, None), (9, None), (None, "canary")]
    assert 3.0 < fake_server.timeouts[0] <= 4.0 and fake_server.timeouts[-1] <= 1.5
    with pytest.raises(client.InvalidArgumentError, match=f"k={K + 1} is above K={K}"):
        c.recommend_for_history(["Movie 2"], k=K + 1)
    with pytest.raises(client.InvalidArgumentError, match="k must be a positive int"):
        c.recommend_for_history_ids(["2"], k=0)
    with pytest.raises(client.InvalidArgumentError, match="not both"):
        c.recommend_for_history(["Movie 2"], version=9, label="canary")


def test_unavailable_is_retried_like_every_call(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    fake_server.fail_next(("UNAVAILABLE", "restarting"))
    assert titles(c.recommend_for_history(["Movie 2"])) == CATALOG[3 : 3 + K]
    fake_server.fail_next(*[("UNAVAILABLE", "down")] * 3)
    with pytest.raises(client.UnavailableError, match="down"):
        c.recommend_for_history_ids(["2"])
    fake_server.fail_next(("NOT_FOUND", "Servable not found"))  # not retried
    with pytest.raises(client.NotFoundError):
        c.recommend_for_history(["Movie 2"])
    assert len(fake_server.timeouts) == 2 + 3 + 1


def test_a_version_without_the_history_signatures_answers_the_servers_error(
    transport_kind, fake_server, make_fake_client
):
    c = make_fake_client(transport_kind, fake_server)
    # REST folds FAILED_PRECONDITION into HTTP 400 (INVALID_ARGUMENT): client.errors
    with pytest.raises((client.FailedPreconditionError, client.InvalidArgumentError), match="by_history"):
        c.recommend_for_history(["Movie 2"], version=7)
    with pytest.raises((client.FailedPreconditionError, client.InvalidArgumentError), match="by_history_ids"):
        c.recommend_for_history_ids(["2"], label="stable")


def test_a_closed_client_refuses_history_calls(fake_server, make_fake_client):
    c = make_fake_client("rest", fake_server)
    c.close()
    with pytest.raises(client.FailedPreconditionError, match="closed"):
        c.recommend_for_history(["Movie 2"])
    assert fake_server.calls == []
