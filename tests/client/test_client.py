"""The client's behaviour over both transports, against the fakes (no sockets)."""

from __future__ import annotations

import dataclasses
import struct
import threading

import pytest

import retrieval_client as client
from client_fakes import CATALOG, K
from retrieval_client import Client, Hit, Tensor
from retrieval_client.protos import tensor_pb2
from retrieval_client.transports.grpc import GrpcTransport, from_proto, to_proto
from retrieval_client.transports.rest import RestTransport


def test_one_user_gets_a_list_of_hits_best_first(transport_kind, fake_server, make_fake_client):
    hits = make_fake_client(transport_kind, fake_server).recommend("3")

    assert [h.title for h in hits] == CATALOG[3 : 3 + K]
    assert all(isinstance(h, Hit) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # The fake answers as a model exported before movie_ids did: hits come without an id, not an error.
    assert {h.id for h in hits} == {""}


def test_a_batch_gets_one_list_per_user_in_order(transport_kind, fake_server, make_fake_client):
    batch = make_fake_client(transport_kind, fake_server).recommend(["1", 2, "0"])

    assert [[h.title for h in row] for row in batch] == [CATALOG[1:6], CATALOG[2:7], CATALOG[0:5]]
    assert fake_server.calls[-1][-1] == {"user_id": ["1", "2", "0"]}  # ints go out as DT_STRING ids


def test_k_keeps_the_best_k(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    assert c.recommend("1", k=2) == c.recommend("1")[:2]
    assert [len(row) for row in c.similar(["Movie 1", "Movie 2"], k=K)] == [K, K]


def test_k_above_the_exported_k_is_a_clear_invalid_argument(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    with pytest.raises(client.InvalidArgumentError, match=f"k={K + 1} is above K={K}.*ask for k <= {K}"):
        c.recommend("1", k=K + 1)
    with pytest.raises(ValueError, match="k=100"):  # InvalidArgumentError is a ValueError too
        c.similar("Movie 1", k=100)


@pytest.mark.parametrize("k", [0, -1, True, "3", 2.0])
def test_a_bad_k_is_rejected_before_any_call(k, transport_kind, fake_server, make_fake_client):
    with pytest.raises(client.InvalidArgumentError, match="k must be a positive int"):
        make_fake_client(transport_kind, fake_server).recommend("1", k=k)
    assert fake_server.calls == []


def test_exclude_uses_exclude_seen_with_rows_padded_with_empty_strings(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)

    rows = c.recommend(["1", "2"], exclude=[["Movie 2", "Movie 3"], []])

    _, name, _, _, signature, inputs = fake_server.calls[-1]
    assert (name, signature) == ("retrieval", "exclude_seen")
    # a leading "" column: TF Serving's batching pads with the first element, which must mean no title
    assert inputs["exclude_titles"] == [["", "Movie 2", "Movie 3"], ["", "", ""]]
    assert [h.title for h in rows[0]] == ["Movie 1", "Movie 4", "Movie 5", "Movie 6", "Movie 7"]
    assert [h.title for h in rows[1]] == CATALOG[2:7]


def test_exclude_for_one_user_is_a_list_of_titles(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    assert "Movie 1" not in [h.title for h in c.recommend("1", exclude=["Movie 1"])]
    assert fake_server.calls[-1][-1]["exclude_titles"] == [["", "Movie 1"]]
    c.recommend("1", exclude=[])
    assert fake_server.calls[-1][-1]["exclude_titles"] == [[""]]


@pytest.mark.parametrize(
    "user_ids, exclude, text",
    [
        ("1", "Movie 1", "exclude must be a list"),
        ("1", ["Movie 1", 7], "must hold strings"),
        (["1", "2"], [["Movie 1"]], "one list of titles per user id"),
        (["1"], ["Movie 1"], r"exclude\[0\] must be a list"),
    ],
)
def test_misshapen_exclude_is_rejected_before_any_call(user_ids, exclude, text, fake_server, make_fake_client):
    with pytest.raises(client.InvalidArgumentError, match=text):
        make_fake_client("rest", fake_server).recommend(user_ids, exclude=exclude)
    assert fake_server.calls == []


@pytest.mark.parametrize("user_ids", [None, 1.5, True, [1.0], {"1": 1}, {"1", "2"}, [b"\xff"]])
def test_user_ids_must_be_str_or_int(user_ids, fake_server, make_fake_client):
    with pytest.raises(client.InvalidArgumentError):
        make_fake_client("grpc", fake_server).recommend(user_ids)


def test_an_empty_batch_returns_nothing_without_a_call(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    assert c.recommend([]) == [] and c.similar([]) == []
    assert fake_server.calls == []


def test_similar_never_returns_the_title_asked_about(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    single, batch = c.similar("Movie 4"), c.similar(["Movie 4", "Movie 11"])
    assert single == batch[0] and [h.title for h in single] == CATALOG[5:10]
    assert "Movie 11" not in [h.title for h in batch[1]]
    assert fake_server.calls[-1][1:5] == ("similar_movies", None, None, "serving_default")


def test_version_and_label_reach_the_server(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    c.recommend("1", version=7)
    c.similar("Movie 1", label="stable")
    assert fake_server.calls[0][2:4] == (7, None) and fake_server.calls[1][2:4] == (None, "stable")
    # the version that answered shows in the scores of the fake (version / 1000)
    assert c.recommend("1", version=7)[0].score == pytest.approx(0.907)
    assert c.recommend("1", label="canary")[0].score == pytest.approx(0.909)


@pytest.mark.parametrize(
    "kwargs, text",
    [(dict(version=3, label="stable"), "not both"), (dict(version=-1), "non-negative"), (dict(label=""), "label")],
)
def test_a_bad_servable_choice_is_rejected_before_any_call(kwargs, text, transport_kind, fake_server, make_fake_client):
    with pytest.raises(client.InvalidArgumentError, match=text):
        make_fake_client(transport_kind, fake_server).recommend("1", **kwargs)
    assert fake_server.calls == []


def test_status_lists_versions_newest_first(transport_kind, fake_server, make_fake_client):
    versions = make_fake_client(transport_kind, fake_server).status("similar_movies")
    assert [(v.version, v.state, v.error_code) for v in versions] == [(9, "AVAILABLE", "OK"), (7, "END", "OK")]
    assert fake_server.calls[-1][1] == "similar_movies"


def test_metadata_describes_the_signatures(transport_kind, fake_server, make_fake_client):
    meta = make_fake_client(transport_kind, fake_server).metadata()
    assert (meta.name, meta.version) == ("retrieval", 9)
    sig = meta.signatures["exclude_seen"]
    assert sig.inputs["exclude_titles"] == client.TensorSpec("in_ex:0", "DT_STRING", (-1, -1))
    assert sig.outputs["scores"] == client.TensorSpec("out_scores:0", "DT_FLOAT", (-1, K))
    assert sig.method_name == "tensorflow/serving/predict"


def test_predict_takes_any_model_and_signature_and_returns_nested_lists(transport_kind, fake_server, make_fake_client):
    out = make_fake_client(transport_kind, fake_server).predict(
        "retrieval",
        {"user_id": ["1"], "exclude_titles": [["Movie 2"]]},
        signature_name="exclude_seen",
        output_filter=["movie_titles"],
    )
    assert out == {"movie_titles": [["Movie 1", "Movie 3", "Movie 4", "Movie 5", "Movie 6"]]}


def test_both_transports_return_equal_results(fake_server, make_fake_client):
    rest, rpc = make_fake_client("rest", fake_server), make_fake_client("grpc", fake_server)
    for call in (
        lambda c: c.recommend(["1", "5"], k=3),
        lambda c: c.similar("Movie 2"),
        lambda c: c.status(),
        lambda c: c.metadata("similar_movies"),
    ):
        assert call(rest) == call(rpc)


def test_results_are_frozen(fake_server, make_fake_client):
    hit = make_fake_client("rest", fake_server).recommend("1")[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.score = 1.0


def test_one_client_is_safe_to_share_across_threads(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    failures, results = [], {}

    def work(user: int) -> None:
        try:
            for _ in range(20):
                results.setdefault(user, set()).add(tuple(h.title for h in c.recommend(str(user))))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert results == {u: {tuple(CATALOG[(u + i) % len(CATALOG)] for i in range(K))} for u in range(8)}


def test_a_closed_client_refuses_calls_and_closes_its_transport(fake_server, make_fake_client):
    c = make_fake_client("grpc", fake_server)
    with c:
        c.recommend("1")
    assert c._transport._channel.closed
    with pytest.raises(client.FailedPreconditionError, match="closed"):
        c.recommend("1")
    c.close()  # idempotent


def test_the_url_chooses_the_transport_without_connecting():
    with Client("grpc://127.0.0.1:1") as rpc, client.connect("http://127.0.0.1:1") as rest:
        assert isinstance(rpc._transport, GrpcTransport) and isinstance(rest._transport, RestTransport)
        assert isinstance(rpc._transport, client.transports.Transport)


def test_the_default_url_is_read_from_the_environment_at_call_time(monkeypatch):
    monkeypatch.delenv(client.URL_ENV, raising=False)
    assert Client().url == "http://localhost:8501"
    monkeypatch.setenv(client.URL_ENV, "grpc://models.internal:9000")
    with Client() as c:
        assert c.url == "grpc://models.internal:9000" and c.settings.endpoint.port == 9000


# -- tensors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, shape, dtype",
    [
        ("a", (), "DT_STRING"),
        ([b"a", "b"], (2,), "DT_STRING"),
        ([[1, 2], [3, 4]], (2, 2), "DT_INT64"),
        ([1, 2.5], (2,), "DT_FLOAT"),
        ([[True], [False]], (2, 1), "DT_BOOL"),
        ([[], []], (2, 0), None),
    ],
)
def test_tensors_are_inferred_from_nested_lists(value, shape, dtype):
    if dtype is None:
        with pytest.raises(client.InvalidArgumentError, match="is empty"):
            Tensor.of(value)
        assert Tensor.of(value, "DT_STRING").shape == shape
        return
    tensor = Tensor.of(value)
    assert (tensor.shape, tensor.dtype) == (shape, dtype) and tensor.nested() == value


@pytest.mark.parametrize("value, text", [([[1, 2], [3]], "ragged"), (["a", 1], "mixes"), ([None], "NoneType")])
def test_bad_tensors_are_invalid_arguments(value, text):
    with pytest.raises(client.InvalidArgumentError, match=text):
        Tensor.of(value, name="x")


@pytest.mark.parametrize(
    "dtype, values",
    [
        ("DT_FLOAT", [0.5, -2.0, 3.25, 1.0]),
        ("DT_DOUBLE", [0.1, 0.2, 1e300, -3.0]),
        ("DT_INT32", [1, -2, 3, 4]),
        ("DT_INT64", [2**40, -1, 0, 7]),
        ("DT_INT8", [-128, 127, 0, 1]),
        ("DT_UINT8", [0, 255, 1, 2]),
        ("DT_BOOL", [True, False, True, True]),
        ("DT_STRING", ["é", "b", "", "d"]),
        ("DT_UINT64", [2**63, 1, 2, 3]),
    ],
)
def test_tensors_round_trip_through_tensor_protos(dtype, values):
    tensor = Tensor(tuple(values), (2, 2), dtype)
    proto = to_proto(tensor, tensor_pb2.TensorProto())
    assert from_proto(tensor_pb2.TensorProto.FromString(proto.SerializeToString())) == [values[:2], values[2:]]


def test_tensor_content_and_a_single_replicated_value_decode_like_tensorflow():
    packed = tensor_pb2.TensorProto(dtype=1, tensor_content=struct.pack("<3f", 1.5, 2.5, -1.0))
    packed.tensor_shape.dim.add(size=3)
    assert from_proto(packed) == [1.5, 2.5, -1.0]
    filled = tensor_pb2.TensorProto(dtype=9, int64_val=[7])
    filled.tensor_shape.dim.add(size=3)
    assert from_proto(filled) == [7, 7, 7]
    raw = tensor_pb2.TensorProto(dtype=7, string_val=[b"\xff\x00"])
    assert from_proto(raw, "blob_bytes") == b"\xff\x00" and from_proto(raw, "blob") == b"\xff\x00"


def test_scores_are_the_shortest_decimal_of_their_float32():
    from retrieval_client.calls import _f32

    for value in (0.1, 1 / 3, -2.5e-8, 123456.789, 0.30000001192092896):
        exact = struct.unpack("<f", struct.pack("<f", value))[0]
        short = _f32(exact)
        assert struct.unpack("<f", struct.pack("<f", short))[0] == exact and len(repr(short)) <= 11
    assert _f32(0.30000001192092896) == 0.3


def test_a_closed_client_refuses_to_wait_too(fake_server, make_fake_client):
    c = make_fake_client("grpc", fake_server)
    c.close()
    with pytest.raises(client.FailedPreconditionError, match="closed"):
        c.wait_until_available(timeout=1.0)
    assert fake_server.calls == []


def test_values_that_do_not_fit_the_dtype_are_invalid_arguments_on_grpc():
    for tensor in (Tensor(("a",), (1,), "DT_FLOAT"), Tensor((1,), (1,), "DT_STRING")):
        with pytest.raises(client.InvalidArgumentError, match=f"do not fit {tensor.dtype}"):
            to_proto(tensor, tensor_pb2.TensorProto())


def test_an_unnamed_rest_output_is_named_by_the_signature_not_by_output_filter(fake_server, make_fake_client):
    from client_fakes import RawHttp

    inputs, outputs = fake_server.signatures()["serving_default"]
    fake_server.signatures = lambda: {"serving_default": (inputs, {"scores": outputs["scores"]})}
    c = make_fake_client("rest", fake_server)
    single = RawHttp(200, b'{"outputs": [[0.5]]}', "application/json")  # TF Serving's answer for one output

    fake_server.fail_next(single)
    assert c.predict("retrieval", {"user_id": ["1"]}, output_filter=["scores"]) == {"scores": [[0.5]]}
    fake_server.fail_next(single)
    with pytest.raises(client.InvalidArgumentError, match=r"alias not found.*movie_titles"):
        c.predict("retrieval", {"user_id": ["1"]}, output_filter=["movie_titles"])
