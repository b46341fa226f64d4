"""Issue 18's outputs, against the fakes: each answer says whether it is the popularity fallback
(``fallback``) and how many exclusions matched nothing (``unmatched``), over both transports' codecs, and
answers of versions exported before those outputs still decode (fallback None)."""

from __future__ import annotations

import copy
import json
import pickle
import struct

import pytest

import retrieval_client as client
from client_fakes import CATALOG, K, RawHttp
from retrieval_client import Hit, Recommendations
from retrieval_client.protos import tensor_pb2
from retrieval_client.transports.grpc import from_proto


def test_each_answer_says_whether_it_is_the_popularity_fallback(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)

    known, unknown = c.recommend(["3", "nosuchuser"])
    similar = c.similar(["Movie 4", "no such movie"])

    assert isinstance(known, Recommendations) and isinstance(unknown, Recommendations)
    assert (known.fallback, unknown.fallback) == (False, True)
    assert [h.title for h in unknown] == CATALOG[:K]  # the fake's "most popular"
    assert [row.fallback for row in similar] == [False, True]
    assert c.recommend("nosuchuser").fallback is True and c.similar("Movie 1").fallback is False
    # no exclusions: nothing to count
    assert (known.unmatched, unknown.unmatched, similar[0].unmatched) == (0, 0, 0)


def test_unmatched_counts_the_exclusions_that_match_no_movie(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)

    rows = c.recommend(["1", "2"], exclude=[["Movie 2", "no such movie", "nor this"], ["Movie 9"]])

    assert [row.unmatched for row in rows] == [2, 0]
    assert [row.fallback for row in rows] == [False, False]
    # the padding ("" entries the client adds) is never counted
    assert fake_server.calls[-1][-1]["exclude_titles"][1] == ["", "Movie 9", "", ""]


def test_a_version_exported_before_the_flags_answers_with_fallback_none(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)

    for old in (c.recommend("nosuchuser", version=7), c.recommend("1", exclude=["nope"], label="stable")):
        assert isinstance(old, Recommendations)
        assert (old.fallback, old.unmatched) == (None, 0)  # the model does not say: None, not False
    assert c.similar(["Movie 1"], version=7)[0].fallback is None
    assert [h.title for h in c.recommend("1", version=7)] == [h.title for h in c.recommend("1")]
    assert "fallback" not in c.predict("retrieval", {"user_id": ["1"]}, version=7)


def test_both_transports_give_the_same_flags(fake_server, make_fake_client):
    rest, rpc = make_fake_client("rest", fake_server), make_fake_client("grpc", fake_server)
    for call in (
        lambda c: c.recommend(["1", "x"], exclude=[["nope"], ["Movie 1", "a", "b"]]),
        lambda c: c.recommend_for_history([["Movie 1", "nope"], ["nope"], []]),
        lambda c: c.similar(["Movie 1", "x"], version=7),
    ):
        a, b = call(rest), call(rpc)
        assert a == b and [(r.fallback, r.unmatched) for r in a] == [(r.fallback, r.unmatched) for r in b]


def test_the_flags_come_from_predict_as_typed_values(transport_kind, fake_server, make_fake_client):
    out = make_fake_client(transport_kind, fake_server).predict(
        "retrieval", {"user_id": ["1", "x"], "exclude_titles": [["", "nope"], ["", ""]]}, signature_name="exclude_seen"
    )
    assert out["fallback"] == [False, True] and all(type(v) is bool for v in out["fallback"])
    assert out["unmatched"] == [1, 0] and all(type(v) is int for v in out["unmatched"])


@pytest.mark.parametrize(
    "flags",
    [{"fallback": [True, False]}, {"fallback": "yes"}, {"unmatched": [[1]]}, {"unmatched": ["1"]}],
    ids=["too-many-rows", "not-a-list", "not-one-per-row", "not-ints"],
)
def test_misshapen_flags_are_an_internal_error_not_a_guess(flags, fake_server, make_fake_client):
    outputs = {"movie_titles": [CATALOG[:K]], "scores": [[0.5] * K], **flags}
    fake_server.fail_next(RawHttp(200, json.dumps({"outputs": outputs}).encode(), "application/json"))
    with pytest.raises(client.InternalError, match=f"must answer '{next(iter(flags))}' of shape \\[1\\]"):
        make_fake_client("rest", fake_server).recommend("1")


# -- the Recommendations type ----------------------------------------------------------------------------
def test_recommendations_is_a_list_of_hits_with_the_flags_alongside():
    hits = [Hit("A", 0.5, "1"), Hit("B", 0.25, "2")]
    recs = Recommendations(hits, fallback=True, unmatched=2)

    assert isinstance(recs, list) and recs == hits and hits == recs and list(recs) == hits
    assert recs[0] == hits[0] and recs[:1] == hits[:1] and len(recs) == 2
    # equality is the list's: the flags do not take part (an unknown exclusion does not change the hits)
    assert recs == Recommendations(hits) and Recommendations().fallback is None and Recommendations().unmatched == 0
    assert repr(recs) == f"Recommendations({hits!r}, fallback=True, unmatched=2)"
    for clone in (pickle.loads(pickle.dumps(recs)), copy.copy(recs), copy.deepcopy(recs)):
        assert type(clone) is Recommendations and clone == hits and (clone.fallback, clone.unmatched) == (True, 2)
    assert client.Recommendations is Recommendations and "Recommendations" in client.__all__


# -- the gRPC codec: DT_BOOL and DT_INT32 of shape [-1], as fields and as tensor_content --------------------
@pytest.mark.parametrize(
    "dtype, field, fmt, values",
    [(10, "bool_val", "?", [True, False, True]), (3, "int_val", "i", [0, 2, 2**31 - 1])],
    ids=["DT_BOOL", "DT_INT32"],
)
def test_flag_outputs_decode_from_fields_and_from_tensor_content(dtype, field, fmt, values):
    as_field = tensor_pb2.TensorProto(dtype=dtype, **{field: values})
    packed = tensor_pb2.TensorProto(dtype=dtype, tensor_content=struct.pack(f"<{len(values)}{fmt}", *values))
    for proto in (as_field, packed):
        proto.tensor_shape.dim.add(size=len(values))
        decoded = from_proto(tensor_pb2.TensorProto.FromString(proto.SerializeToString()), "flags")
        assert decoded == values and [type(v) for v in decoded] == [type(v) for v in values]
    one = tensor_pb2.TensorProto(dtype=dtype, **{field: values[:1]})  # TF's one-value fill
    one.tensor_shape.dim.add(size=3)
    assert from_proto(one) == values[:1] * 3
