"""Every failure becomes one named exception with the canonical code, whichever transport raised it."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest
import requests

import retrieval_client as client
from client_fakes import FakeRpcError, RawHttp, grpc_test_server
from retrieval_client import Client, Retry, errors
from retrieval_client.protos import predict_pb2
from server_process import free_port

NON_OK = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
# What a REST client can know from TF Serving's HTTP status (ToHTTPStatusCode folds some codes together).
REST_SEES = {
    "CANCELLED": "INTERNAL",
    "UNKNOWN": "INTERNAL",
    "DATA_LOSS": "INTERNAL",
    "FAILED_PRECONDITION": "INVALID_ARGUMENT",
    "OUT_OF_RANGE": "INVALID_ARGUMENT",
    "ALREADY_EXISTS": "ABORTED",
}


def test_the_tree_has_one_class_per_canonical_code():
    assert set(errors.CODES) == {code.name for code in NON_OK}
    for name, cls in errors.CODES.items():
        assert issubclass(cls, client.ServingError) and cls.code == name and getattr(client, cls.__name__) is cls
    assert issubclass(client.InvalidArgumentError, ValueError)
    assert issubclass(client.DeadlineExceededError, TimeoutError)
    assert issubclass(client.UnavailableError, ConnectionError)
    assert issubclass(client.NotFoundError, LookupError)


def test_an_unknown_code_name_becomes_unknown_keeping_the_name():
    exc = errors.error_for("WEIRD", "boom")
    assert type(exc) is client.UnknownError and "WEIRD" in exc.message and str(exc) == f"UNKNOWN: {exc.message}"


@pytest.mark.parametrize("code", NON_OK, ids=lambda c: c.name)
def test_every_grpc_status_code_maps_to_its_named_error(code, fake_server, make_fake_client):
    rpc_error = FakeRpcError(code, f"server says {code.name.lower()}")
    fake_server.fail_next(rpc_error)
    c = make_fake_client("grpc", fake_server, retry=Retry(attempts=1))

    with pytest.raises(client.ServingError) as info:
        c.recommend("1")

    assert type(info.value) is errors.CODES[code.name]
    assert info.value.code == code.name
    assert f"server says {code.name.lower()}" in info.value.message
    assert info.value.__cause__ is rpc_error


def test_an_rpc_error_with_status_ok_is_unknown(fake_server, make_fake_client):
    fake_server.fail_next(FakeRpcError(grpc.StatusCode.OK, "odd"))
    with pytest.raises(client.UnknownError, match="odd"):
        make_fake_client("grpc", fake_server).status()


@pytest.mark.parametrize("code", [c.name for c in NON_OK])
def test_tf_serving_error_json_maps_by_http_status(code, fake_server, make_fake_client):
    fake_server.fail_next((code, f"the server's text for {code}"))
    c = make_fake_client("rest", fake_server, retry=Retry(attempts=1))

    with pytest.raises(client.ServingError) as info:
        c.similar("Movie 1")

    assert info.value.code == REST_SEES.get(code, code)
    assert info.value.message == f"the server's text for {code}"


@pytest.mark.parametrize(
    "code",
    [
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "UNIMPLEMENTED",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "INTERNAL",
    ],
)
def test_a_server_error_raises_the_same_class_on_both_transports(code, transport_kind, fake_server, make_fake_client):
    fake_server.fail_next((code, "why"))
    c = make_fake_client(transport_kind, fake_server, retry=Retry(attempts=1))
    with pytest.raises(errors.CODES[code], match="why"):
        c.metadata()


def test_server_errors_of_the_fake_models_match_over_both_transports(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server)
    with pytest.raises(client.NotFoundError, match=r"Servable not found for request: Latest\(nope\)"):
        c.status("nope")
    with pytest.raises(client.NotFoundError, match=r"Specific\(retrieval, 3\)"):
        c.recommend("1", version=3)
    with pytest.raises(client.InvalidArgumentError, match="Unrecognized servable version label: beta"):
        c.similar("Movie 1", label="beta")


@pytest.mark.parametrize(
    "raw, expected, text",
    [
        (RawHttp(502, b"<html><body>Bad Gateway</body></html>"), client.UnavailableError, "Bad Gateway"),
        (RawHttp(404, b""), client.NotFoundError, "(empty body)"),
        (RawHttp(418, b"short and stout", "text/plain"), client.UnknownError, "short and stout"),
        (RawHttp(500, b'{"message": "not TF Serving\'s shape"}', "application/json"), client.InternalError, "shape"),
    ],
)
def test_a_non_json_or_foreign_error_body_keeps_the_status_and_the_text(
    raw, expected, text, fake_server, make_fake_client
):
    fake_server.fail_next(raw)
    c = make_fake_client("rest", fake_server, retry=Retry(attempts=1))
    with pytest.raises(expected) as info:
        c.recommend("1")
    assert text in info.value.message and str(raw.status) in info.value.message


def test_a_success_with_a_body_that_is_not_json_is_unknown(fake_server, make_fake_client):
    fake_server.fail_next(RawHttp(200, b"<html>a captive portal</html>"))
    with pytest.raises(client.UnknownError, match="not JSON: <html>a captive portal"):
        make_fake_client("rest", fake_server).recommend("1")


@pytest.mark.parametrize(
    "exc, expected",
    [
        (requests.ConnectionError("[Errno 111] Connection refused"), client.UnavailableError),
        (requests.ReadTimeout("read timed out"), client.DeadlineExceededError),
        (requests.ConnectTimeout("connect timed out"), client.DeadlineExceededError),
        (requests.exceptions.InvalidHeader("bad header"), client.UnknownError),
    ],
)
def test_requests_exceptions_map_to_named_errors(exc, expected, fake_server, make_fake_client):
    fake_server.fail_next(exc)
    with pytest.raises(expected) as info:
        make_fake_client("rest", fake_server, retry=Retry(attempts=1)).recommend("1")
    assert info.value.__cause__ is exc


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_connection_refused_on_a_closed_port_is_unavailable(scheme):
    port = free_port()  # bound, then released: nothing listens there
    with (
        Client(f"{scheme}://127.0.0.1:{port}", timeout=5, retry=Retry(attempts=1)) as c,
        pytest.raises(client.UnavailableError) as info,
    ):
        c.recommend("1")
    assert "Connection refused" in info.value.message or "connection refused" in info.value.message.lower()
    assert info.value.__cause__ is not None


def test_a_rest_server_that_never_answers_exceeds_the_deadline():
    with socket.socket() as listener:  # the kernel accepts the connection; nobody ever reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        with (
            Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3) as c,
            pytest.raises(client.DeadlineExceededError, match=r"within 0\.3 s"),
        ):
            c.status()


class _SlowPredictions:
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def Predict(self, request, context):
        self.release.wait(5)
        return predict_pb2.PredictResponse()


def test_a_grpc_server_that_answers_late_exceeds_the_deadline():
    release = threading.Event()
    server, port = grpc_test_server(
        "PredictionService",
        "Predict",
        _SlowPredictions(release).Predict,
        predict_pb2.PredictRequest,
        predict_pb2.PredictResponse,
        workers=2,
    )
    try:
        with Client(f"grpc://127.0.0.1:{port}", timeout=0.3) as c:
            with pytest.raises(client.DeadlineExceededError) as info:
                c.recommend("1")
            assert isinstance(info.value.__cause__, grpc.RpcError)
    finally:
        release.set()
        server.stop(0)


def test_each_attempt_gets_what_is_left_of_the_call_deadline(transport_kind, fake_server, make_fake_client):
    c = make_fake_client(transport_kind, fake_server, timeout=9.0)
    c.recommend("1")
    c.recommend("1", timeout=2.5)
    assert 8.0 < fake_server.timeouts[0] <= 9.0 and 2.0 < fake_server.timeouts[1] <= 2.5


def test_unavailable_is_retried_with_backoff_then_succeeds(transport_kind, fake_server, make_fake_client):
    sleeps = []
    fake_server.fail_next(("UNAVAILABLE", "starting"), ("UNAVAILABLE", "still starting"))
    c = make_fake_client(
        transport_kind, fake_server, sleep=sleeps.append, retry=Retry(attempts=3, backoff=0.1, multiplier=2.0)
    )

    hits = c.recommend("1")

    assert hits and sleeps == [0.1, 0.2] and len(fake_server.timeouts) == 3


def test_unavailable_retries_are_bounded(transport_kind, fake_server, make_fake_client):
    sleeps = []
    fake_server.fail_next(*[("UNAVAILABLE", f"down {i}") for i in range(5)])
    c = make_fake_client(transport_kind, fake_server, sleep=sleeps.append, retry=Retry(attempts=3))
    with pytest.raises(client.UnavailableError, match="down 2"):
        c.recommend("1")
    assert len(fake_server.timeouts) == 3 and len(sleeps) == 2


@pytest.mark.parametrize(
    "code", ["NOT_FOUND", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED"]
)
def test_other_errors_are_never_retried(code, transport_kind, fake_server, make_fake_client):
    sleeps = []
    fake_server.fail_next((code, "no"))
    c = make_fake_client(transport_kind, fake_server, sleep=sleeps.append, retry=Retry(attempts=5))
    with pytest.raises(errors.CODES[code]):
        c.recommend("1")
    assert sleeps == [] and len(fake_server.timeouts) == 1


def test_retries_never_wait_past_the_deadline(transport_kind, fake_server, make_fake_client):
    sleeps = []
    fake_server.fail_next(*[("UNAVAILABLE", "down")] * 3)
    c = make_fake_client(
        transport_kind,
        fake_server,
        sleep=sleeps.append,
        timeout=0.5,
        retry=Retry(attempts=10, backoff=1.0, max_backoff=1.0),
    )
    with pytest.raises(client.UnavailableError):
        c.recommend("1")
    assert sleeps == [] and len(fake_server.timeouts) == 1


def test_wait_until_available_gives_up_at_its_timeout_naming_the_reason():
    with (
        Client(f"grpc://127.0.0.1:{free_port()}") as c,
        pytest.raises(client.DeadlineExceededError, match=r"not ready after 0\.5 s: .*UNAVAILABLE"),
    ):
        c.wait_until_available(timeout=0.5)


@pytest.mark.parametrize(
    "options, text",
    [
        (dict(url="ftp://host:1"), "unsupported URL scheme"),
        (dict(url="http://"), "no host in server URL"),
        (dict(url="grpcs://h:1/path"), "a grpcs:// URL has no path"),
        (dict(url="http://h:1", tls="ca.pem"), "tls must be a retrieval_client.Tls"),
        (dict(url="http://h:1", headers={"Bad Name": "x"}), "bad header name"),
        (dict(url="http://h:1", headers={"X-A": "line\nbreak"}), "printable ASCII only"),
        (dict(url="http://h:1", headers={"X-A-Bin": "x"}), "binary"),
        (dict(url="http://h:1", timeout=0), "timeout must be a positive"),
        (dict(url="http://h:1", retrieval_model=""), "retrieval_model"),
    ],
)
def test_bad_settings_are_invalid_arguments(options, text):
    with pytest.raises(client.InvalidArgumentError, match=text):
        Client(**options)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(attempts=0), "attempts"),
        (dict(backoff=3.0, max_backoff=2.0), "backoff"),
        (dict(multiplier=0.5), "multiplier"),
    ],
)
def test_bad_retry_policies_are_rejected(kwargs, text):
    with pytest.raises(client.InvalidArgumentError, match=text):
        Retry(**kwargs)


@pytest.mark.slow
def test_a_retry_whose_backoff_overran_the_deadline_is_deadline_exceeded_not_sent(
    transport_kind, fake_server, make_fake_client
):
    fake_server.fail_next(("UNAVAILABLE", "starting"))
    c = make_fake_client(
        transport_kind, fake_server, timeout=1.0, sleep=lambda s: time.sleep(1.05), retry=Retry(attempts=3, backoff=0.1)
    )
    with pytest.raises(client.DeadlineExceededError, match=r"while retrying.*starting") as info:
        c.recommend("1")
    assert isinstance(info.value.__cause__, client.UnavailableError)
    assert len(fake_server.timeouts) == 1  # no second attempt with a timeout <= 0 (requests: a bare ValueError)
