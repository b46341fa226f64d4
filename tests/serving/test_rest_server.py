"""REST conformance over real sockets, with the transport on its own in front of an in-memory core.

The core here is tests/serving/rest_fake_core.py (a serving.service.ServingCore, docs/serving-core.md);
test_rest_e2e.py runs the same kinds of requests against ``python -m serving`` on exported models.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from http.client import HTTPConnection

import pytest
import requests
from google.protobuf import text_format

import rest_fake_core
from serving.http_server import RestServer
from serving.monitoring import MonitoringConfig

MAX_BODY = 4096
TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def core():
    return rest_fake_core.FakeCore(slow_seconds=1.0)


@pytest.fixture(scope="module")
def server(core):
    config = text_format.Parse("prometheus_config { enable: true }", MonitoringConfig())
    rest = RestServer(
        core, host="127.0.0.1", port=0, timeout_ms=TIMEOUT_MS, monitoring_config=config, max_body_bytes=MAX_BODY
    )
    rest.start()
    yield rest
    rest.stop()


@pytest.fixture(scope="module")
def url(server):
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def session(url):
    with requests.Session() as session:
        yield session


def post(session, url, path, body) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return session.post(url + path, data=data, timeout=10)


def assert_error(
    response: requests.Response, status: int, message: str | None = None, *, contains: str | None = None
) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    if message is not None:
        assert body["error"] == message
    if contains is not None:
        assert contains in body["error"]
    return body["error"]


# --------------------------------------------------------------------------- URL forms
@pytest.mark.parametrize(
    "path, version",
    [
        ("/v1/models/retrieval:predict", 2),
        ("/v1/models/retrieval/versions/1:predict", 1),
        ("/v1/models/retrieval/labels/stable:predict", 1),
        ("/v1/models/retrieval/labels/canary:predict", 2),
    ],
)
def test_predict_url_forms_route_to_the_version(session, url, core, path, version):
    response = post(session, url, path, {"instances": ["42"]})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert core.calls[-1]["version"] == version
    # the fake's scores are len(user_id) + version - 0.25 * rank
    assert response.json() == {
        "predictions": [
            {
                "movie_titles": ["42-movie-0", "42-movie-1", "42-movie-2"],
                "scores": [2.0 + version, 1.75 + version, 1.5 + version],
            }
        ]
    }


def test_a_request_is_parsed_and_run_on_one_version_across_a_swap(session, url, core):
    # "flipping" changes its latest version on every resolution, as a swap between reading the signature
    # (to parse the JSON) and running it would: each request must still see a single version.
    for _ in range(4):
        response = post(session, url, "/v1/models/flipping:predict", {"instances": ["42"]})
        assert response.status_code == 200, response.text
        version = core.calls[-1]["version"]
        assert response.json()["predictions"][0]["scores"][0] == 2.0 + version


def test_paths_are_matched_case_insensitively(session, url):
    assert post(session, url, "/V1/Models/retrieval/VERSIONS/1:predict", {"instances": ["1"]}).status_code == 200
    assert session.get(url + "/v1/MODELS/retrieval/METADATA").status_code == 200


@pytest.mark.parametrize(
    "path, versions",
    [
        ("/v1/models/retrieval", ["3", "2", "1"]),
        ("/v1/models/retrieval/versions/2", ["2"]),
        ("/v1/models/retrieval/labels/stable", ["1"]),
    ],
)
def test_status_url_forms(session, url, path, versions):
    response = session.get(url + path)
    assert response.status_code == 200
    statuses = response.json()["model_version_status"]
    assert [s["version"] for s in statuses] == versions


def test_status_json_shape(session, url):
    statuses = session.get(url + "/v1/models/retrieval").json()["model_version_status"]
    assert statuses[1] == {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert statuses[0] == {
        "version": "3",
        "state": "END",
        "status": {"error_code": "NOT_FOUND", "error_message": "Failed to load SavedModel: no saved_model.pb"},
    }


@pytest.mark.parametrize(
    "path, version",
    [
        ("/v1/models/retrieval/metadata", "2"),
        ("/v1/models/retrieval/versions/1/metadata", "1"),
        ("/v1/models/retrieval/labels/stable/metadata", "1"),
    ],
)
def test_metadata_url_forms_and_shape(session, url, path, version):
    response = session.get(url + path)
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": "retrieval", "signature_name": "", "version": version}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "exclude_seen"}
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["user_id"] == {
        "dtype": "DT_STRING",
        "name": "user_id:0",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
    }
    assert default["outputs"]["scores"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in default["outputs"]["movie_titles"]["tensor_shape"]["dim"]] == ["-1", "3"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/models/retrieval:predict"),
        ("POST", "/v1/models/retrieval"),
        ("POST", "/v1/models/retrieval/metadata"),
        ("PUT", "/v1/models/retrieval:predict"),
        ("DELETE", "/v1/models/retrieval"),
        ("GET", "/v1/foo"),
        ("POST", "/v1/models/retrieval:PREDICT"),  # the regex is case-insensitive, the method check is not
        ("POST", "/v1/models/retrieval/versions/x:predict"),
    ],
)
def test_other_v1_shapes_are_malformed_requests(session, url, method, path):
    response = session.request(method, url + path, data=b"{}")
    assert_error(response, 400, f"Malformed request: {method} {path}")


@pytest.mark.parametrize("path", ["/", "/v2/models/retrieval", "/v1", "/models/retrieval:predict"])
def test_paths_outside_v1_are_not_found(session, url, path):
    response = session.post(url + path, data=b"{}")
    assert response.status_code == 404
    assert "<TITLE>404 Not Found</TITLE>" in response.text


def test_status_without_model_name(session, url):
    assert_error(session.get(url + "/v1/models"), 400, "Missing model name in request.")


# ---------------------------------------------------------------------- unknown model / version / label / signature
def test_unknown_model_is_not_found(session, url):
    assert_error(
        post(session, url, "/v1/models/nope:predict", {"instances": ["1"]}),
        404,
        "Servable not found for request: Latest(nope)",
    )
    assert_error(session.get(url + "/v1/models/nope/metadata"), 404, "Servable not found for request: Latest(nope)")
    assert_error(session.get(url + "/v1/models/nope"), 404)


def test_unknown_version_is_not_found(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval/versions/99:predict", {"instances": ["1"]}),
        404,
        "Servable not found for request: Specific(retrieval, 99)",
    )
    assert_error(
        session.get(url + "/v1/models/retrieval/versions/99"), 404, "Could not find version 99 of model retrieval"
    )


def test_unknown_label_is_invalid_argument(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval/labels/nightly:predict", {"instances": ["1"]}),
        400,
        "Unrecognized servable version label: nightly",
    )
    assert_error(
        session.get(url + "/v1/models/retrieval/labels/nightly/metadata"),
        400,
        "Unrecognized servable version label: nightly",
    )


def test_unknown_signature_is_rejected(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", {"signature_name": "nope", "instances": ["1"]}),
        400,
        'Serving signature name: "nope" not found in signature def',
    )


def test_model_names_are_percent_decoded_and_only_looked_up(session, url, core):
    assert_error(
        post(session, url, "/v1/models/..%2F..%2Fetc:predict", {"instances": ["1"]}),
        404,
        "Servable not found for request: Latest(../../etc)",
    )
    assert_error(
        session.get(url + "/v1/models/%2Fetc%2Fpasswd/metadata"),
        404,
        "Servable not found for request: Latest(/etc/passwd)",
    )


# --------------------------------------------------------------------------- request bodies
def test_malformed_json(session, url):
    message = assert_error(post(session, url, "/v1/models/retrieval:predict", b'{"instances": ['), 400)
    assert message.startswith("JSON Parse error: ")
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", b""), 400, "JSON Parse error: The document is empty"
    )
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", b"\xff\xfe"),
        400,
        contains="JSON Parse error: Invalid encoding",
    )


def test_neither_or_both_of_instances_and_inputs(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", {"signature_name": "serving_default"}),
        400,
        "Missing 'inputs' or 'instances' key",
    )
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", {"instances": ["1"], "inputs": ["1"]}),
        400,
        contains="Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
    )


def test_wrong_input_name(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", {"instances": [{"userid": "1"}]}),
        400,
        "Failed to process element: 0 key: userid of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: userid",
    )
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", {"inputs": {"userid": ["1"]}}),
        400,
        "Missing named input: user_id in 'inputs' object.",
    )


def test_wrong_dtype(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", {"instances": [42]}),
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: 42 Type: Number is not of expected type: string",
    )
    assert_error(
        post(session, url, "/v1/models/typed:predict", {"signature_name": "single", "inputs": ["x"]}),
        400,
        'JSON Value: "x" Type: String is not of expected type: float',
    )


def test_empty_instances(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", {"instances": []}),
        400,
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
    )


def test_ragged_rows(session, url):
    body = {
        "signature_name": "exclude_seen",
        "instances": [{"user_id": "1", "exclude_titles": ["a", "b"]}, {"user_id": "2", "exclude_titles": ["c"]}],
    }
    assert_error(
        post(session, url, "/v1/models/retrieval:predict", body),
        400,
        "Failed to process element: 1 key: exclude_titles of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 2 but got: 1",
    )


def test_b64_round_trip(session, url, core):
    raw = bytes(range(256))
    body = {
        "instances": [{"f": 1.5, "d": 0.1, "i": 3, "l": 2**40, "b": True, "s": {"b64": base64.b64encode(raw).decode()}}]
    }
    response = post(session, url, "/v1/models/typed:predict", body)
    assert response.status_code == 200, response.text
    assert core.calls[-1]["inputs"]["s"].tolist() == [raw]
    prediction = response.json()["predictions"][0]
    assert base64.b64decode(prediction["s_bytes"]["b64"]) == raw
    assert prediction == {
        "f_out": 1.5,
        "d_out": 0.1,
        "i_out": 3,
        "l_out": 2**40,
        "b_out": True,
        "s_bytes": prediction["s_bytes"],
    }


def test_row_and_columnar_formats(session, url, core):
    row = post(
        session,
        url,
        "/v1/models/retrieval:predict",
        {
            "signature_name": "exclude_seen",
            "instances": [
                {"user_id": "7", "exclude_titles": ["a", ""]},
                {"user_id": "88", "exclude_titles": ["b", "c"]},
            ],
        },
    )
    assert row.status_code == 200
    assert core.calls[-1]["inputs"]["exclude_titles"].tolist() == [[b"a", b""], [b"b", b"c"]]
    predictions = row.json()["predictions"]
    assert [p["movie_titles"][0] for p in predictions] == ["7-movie-0", "88-movie-0"]

    columnar = post(session, url, "/v1/models/retrieval:predict", {"inputs": {"user_id": ["7", "88"]}})
    assert columnar.status_code == 200
    outputs = columnar.json()["outputs"]
    assert outputs["movie_titles"] == [
        ["7-movie-0", "7-movie-1", "7-movie-2"],
        ["88-movie-0", "88-movie-1", "88-movie-2"],
    ]
    assert outputs["scores"] == [[3.0, 2.75, 2.5], [4.0, 3.75, 3.5]]


def test_single_output_signature_answers_plain_values(session, url):
    row = post(session, url, "/v1/models/typed:predict", {"signature_name": "single", "instances": [1.5, 2]})
    assert row.json() == {"predictions": [3.0, 4.0]}
    columnar = post(session, url, "/v1/models/typed:predict", {"signature_name": "single", "inputs": [0.1]})
    assert columnar.json() == {"outputs": [0.2]}


def test_classify_and_regress_on_a_predict_only_model(session, url):
    assert_error(
        post(session, url, "/v1/models/retrieval:classify", {"examples": [{"user_id": "1"}]}),
        400,
        contains="No classification inputs found in SignatureDef: ",
    )
    assert_error(
        post(session, url, "/v1/models/retrieval:regress", {"examples": [{"user_id": "1"}]}),
        400,
        "Expected one output Tensor.",
    )
    assert_error(
        post(session, url, "/v1/models/retrieval/versions/1:classify", {"instances": ["1"]}),
        400,
        contains="When method is classify, key 'examples' is expected and was not found",
    )
    assert_error(
        post(session, url, "/v1/models/nope:classify", {"examples": [{}]}),
        404,
        "Servable not found for request: Latest(nope)",
    )


# --------------------------------------------------------------------------- limits, failures, transport
def test_body_size_limit_then_server_keeps_serving(session, url):
    big = json.dumps({"instances": ["x" * (MAX_BODY + 10)]})
    message = assert_error(post(session, url, "/v1/models/retrieval:predict", big), 413)
    assert str(MAX_BODY) in message
    assert post(session, url, "/v1/models/retrieval:predict", {"instances": ["1"]}).status_code == 200


def test_chunked_body_is_accepted_and_limited(url):
    def chunks(total):
        sent = 0
        piece = b'{"instances": ["1"]' + b" " * 100
        yield piece
        sent += len(piece)
        while sent < total:
            yield b" " * 100
            sent += 100
        yield b"}"

    ok = requests.post(url + "/v1/models/retrieval:predict", data=chunks(500), timeout=10)
    assert ok.status_code == 200 and "predictions" in ok.json()
    too_big = requests.post(url + "/v1/models/retrieval:predict", data=chunks(MAX_BODY * 2), timeout=10)
    assert too_big.status_code == 413


def test_gzip_bodies_are_uncompressed_and_capped(session, url):
    import gzip

    body = gzip.compress(json.dumps({"instances": ["12"]}).encode())
    ok = session.post(url + "/v1/models/retrieval:predict", data=body, headers={"Content-Encoding": "gzip"})
    assert ok.status_code == 200 and ok.json()["predictions"][0]["movie_titles"][0] == "12-movie-0"
    bomb = gzip.compress(json.dumps({"instances": ["x" * (MAX_BODY * 4)]}).encode())
    assert len(bomb) < MAX_BODY
    assert_error(
        session.post(url + "/v1/models/retrieval:predict", data=bomb, headers={"Content-Encoding": "gzip"}), 413
    )
    assert_error(
        session.post(url + "/v1/models/retrieval:predict", data=b"not gzip", headers={"Content-Encoding": "gzip"}),
        400,
        "JSON Parse error: The document is empty",
    )


def test_deadline_exceeded_answers_at_the_deadline_and_keeps_the_connection(server, core, session, url):
    core.slow_gate = gate = threading.Event()  # the slow call runs until the test opens the gate
    try:
        response = post(session, url, "/v1/models/slow:predict", {"instances": ["1"]})
        assert_error(response, 504, "Timed out waiting for notification")
        core.wait_slow_running(1)  # answered at the deadline: the call cannot finish before the gate opens
    finally:
        gate.set()
        core.slow_gate = None
    # the same keep-alive connection answers the next request once the late call is done (and dropped)
    assert post(session, url, "/v1/models/retrieval:predict", {"instances": ["1"]}).status_code == 200
    assert server.metrics.request_count("slow", status="DEADLINE_EXCEEDED") == 1


@pytest.mark.slow
def test_num_threads_caps_requests_processed_at_once():
    def two_at_once(num_threads: int, core: rest_fake_core.FakeCore, wait_both: bool) -> int:
        with RestServer(core, host="127.0.0.1", port=0, timeout_ms=0, num_threads=num_threads) as rest:
            target = f"http://127.0.0.1:{rest.port}/v1/models/slow:predict"
            threads = [
                threading.Thread(target=requests.post, args=(target,), kwargs={"data": '{"instances": ["1"]}'})
                for _ in range(2)
            ]
            for t in threads:
                t.start()
            if wait_both:  # both calls must be in flight at once before either may finish
                core.wait_slow_running(2)
                assert core.slow_gate is not None
                core.slow_gate.set()
            for t in threads:
                t.join()
        return core.slow_peak

    assert two_at_once(1, rest_fake_core.FakeCore(slow_seconds=0.2), wait_both=False) == 1
    both = rest_fake_core.FakeCore()
    both.slow_gate = threading.Event()
    assert two_at_once(2, both, wait_both=True) == 2


def test_internal_error_is_500_and_server_stays_up(session, url):
    assert_error(
        post(session, url, "/v1/models/broken:predict", {"instances": ["1"]}), 500, contains="the fake model is broken"
    )
    assert post(session, url, "/v1/models/retrieval:predict", {"instances": ["1"]}).status_code == 200


def test_garbage_on_the_socket_does_not_kill_the_server(server, session, url):
    for garbage in (
        b"\x00\x01\x02 nonsense\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /v1/models/x:predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/models/x:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            data = sock.recv(65536)
            assert data == b"" or data.startswith(b"HTTP/1.")
    assert post(session, url, "/v1/models/retrieval:predict", {"instances": ["1"]}).status_code == 200


def test_expect_continue_and_http10_are_honoured(server):
    body = json.dumps({"instances": ["9"]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while b"9-movie-2" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models/retrieval HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # HTTP/1.0 without keep-alive: the server closes after answering
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in answer


def test_oversized_header_is_rejected(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models/retrieval HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 431 ")


def _exchange(server, data: bytes) -> bytes:
    """Send ``data`` on a new connection, half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "request_bytes, status, body",
    [
        # both framings at once (request smuggling): rejected, not read as chunked
        (
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
            400,
            b'"Malformed request body framing"',
        ),
        (
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            b'"Malformed request body framing"',
        ),
        (
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            400,
            b'"Malformed request body framing"',
        ),
        (b"GET /v1/models/retrieval HTTP/2.0\r\n\r\n", 400, b"<H1>Bad Request</H1>"),
        (b"GET /v1/models/retrieval HTTP/1.1\r\nno colon here\r\n\r\n", 400, b"<H1>Bad Request</H1>"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, b"<H1>Request-URI Too Long</H1>"),
        (b"GET /v1/models/retrieval HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, b"Header Fields Too Large"),
        (
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 10**7),
            413,
            b"Request body too large: %d bytes" % (MAX_BODY + 10**7),
        ),
    ],
)
def test_malformed_framing_and_limits_are_answered_and_the_connection_closed(
    server, session, url, request_bytes, status, body
):
    answer = _exchange(server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"Connection: close\r\n" in answer and body in answer
    assert post(session, url, "/v1/models/retrieval:predict", {"instances": ["1"]}).status_code == 200


def test_pipelined_requests_are_answered_in_order(server):
    one = json.dumps({"instances": ["7"]}).encode()
    requests_bytes = (
        b"POST /v1/models/retrieval:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(one), one)
        + b"GET /v1/models/nope HTTP/1.1\r\n\r\n"
        + b"GET /v1/models/retrieval HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    answer = _exchange(server, requests_bytes)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"404", b"200"]
    assert answer.index(b"7-movie-0") < answer.index(b"nope")


def test_keep_alive_reuses_one_connection(server):
    conn = HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.connect()
        local = conn.sock.getsockname()
        for i in range(5):
            conn.request(
                "POST",
                "/v1/models/retrieval:predict",
                body=json.dumps({"instances": [str(i)]}),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            assert response.status == 200
            json.loads(response.read())
            assert conn.sock.getsockname() == local
        conn.request("GET", "/v1/models/nope")  # an error answer keeps the connection too
        response = conn.getresponse()
        assert response.status == 404
        response.read()
        assert conn.sock.getsockname() == local
    finally:
        conn.close()


def test_concurrent_clients(url):
    errors = []

    def client(n):
        with requests.Session() as session:
            for i in range(20):
                r = session.post(url + "/v1/models/retrieval:predict", data=json.dumps({"instances": [f"{n}-{i}"]}))
                if r.status_code != 200 or r.json()["predictions"][0]["movie_titles"][0] != f"{n}-{i}-movie-0":
                    errors.append((n, i, r.status_code, r.text))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------- metrics endpoint
def test_metrics_endpoint_counts_requests_and_errors(session, url):
    before = session.get(url + "/monitoring/prometheus/metrics")
    assert before.status_code == 200 and before.headers["Content-Type"] == "text/plain"
    post(session, url, "/v1/models/retrieval/versions/1:predict", {"signature_name": "exclude_seen", "instances": []})
    post(
        session,
        url,
        "/v1/models/retrieval/versions/1:predict",
        {"signature_name": "exclude_seen", "instances": [{"user_id": "1", "exclude_titles": [""]}]},
    )
    text = session.get(url + "/monitoring/prometheus/metrics").text
    common = 'model_name="retrieval",version="1",signature_name="exclude_seen",API="Predict",entrypoint="REST"'
    assert f':tensorflow:serving:request_count{{{common},status="OK"}} 1' in text.splitlines()
    failed = 'model_name="retrieval",version="1",signature_name="exclude_seen",API="Predict",entrypoint="REST"'
    assert f':tensorflow:serving:request_count{{{failed},status="INVALID_ARGUMENT"}} 1' in text.splitlines()
    assert f":tensorflow:serving:request_latency_count{{{common}}} 2" in text.splitlines()
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text


def test_metrics_path_with_query_is_unexpected(session, url):
    response = session.get(url + "/monitoring/prometheus/metrics?x=1")
    assert response.status_code == 400
    assert response.text == (
        "Unexpected path: /monitoring/prometheus/metrics?x=1. Should be /monitoring/prometheus/metrics"
    )


def test_metrics_disabled_is_not_found_and_custom_path_works(core):
    with RestServer(core, host="127.0.0.1", port=0) as plain:
        assert requests.get(f"http://127.0.0.1:{plain.port}/monitoring/prometheus/metrics").status_code == 404
    config = text_format.Parse('prometheus_config { enable: true path: "/metrics" }', MonitoringConfig())
    with RestServer(core, host="127.0.0.1", port=0, monitoring_config=config) as custom:
        base = f"http://127.0.0.1:{custom.port}"
        assert requests.get(base + "/metrics").status_code == 200
        assert requests.get(base + "/monitoring/prometheus/metrics").status_code == 404


# --------------------------------------------------------------------------- lifecycle
def test_stop_finishes_in_flight_requests_and_closes_idle_connections():
    core = rest_fake_core.FakeCore(slow_seconds=0.5)
    rest = RestServer(core, host="127.0.0.1", port=0, timeout_ms=0).start()
    base = f"http://127.0.0.1:{rest.port}"
    idle = HTTPConnection("127.0.0.1", rest.port, timeout=10)
    idle.request("GET", "/v1/models/retrieval")
    idle.getresponse().read()  # now an idle keep-alive connection
    result = {}

    def slow_request():
        result["response"] = requests.post(base + "/v1/models/slow:predict", data='{"instances": ["1"]}', timeout=10)

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 10
    while not any(c["model"] == "slow" for c in list(core.calls)) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the slow request is in flight on the server
    assert any(c["model"] == "slow" for c in list(core.calls))
    rest.stop()
    assert core.slow_running == 0, "stop() returned only once the request in flight had finished"
    thread.join()
    assert result["response"].status_code == 200
    assert result["response"].headers.get("Connection") == "close"
    with pytest.raises(OSError):  # noqa: PT011  requests' ConnectionError or a reset: the listener is closed
        requests.get(base + "/v1/models/retrieval", timeout=2)
    idle.close()


def test_constructor_validates_settings(core):
    with pytest.raises(ValueError, match="max_body_bytes"):
        RestServer(core, max_body_bytes=0)
    with pytest.raises(ValueError, match="port"):
        RestServer(core, port=70000)
