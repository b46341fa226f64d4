"""REST end to end: ``python -m serving`` on the shared exported store, over a real socket.

Answers are checked against the contract (signatures, K, best-first) and against the same server's gRPC
answers, which carry the exact float32 scores: REST's decimal scores must read back to the same values.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

import server_process as sp

K = 10  # the shared store's export default


@pytest.fixture(scope="module")
def version(model_store):
    return sp.versions(model_store / "retrieval")[-1]


@pytest.fixture(scope="module")
def server(model_store, version, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rest_e2e")
    config = sp.write_config(
        folder / "models.config",
        [
            {"name": "retrieval", "base_path": model_store / "retrieval", "labels": {"stable": version}},
            {"name": "similar_movies", "base_path": model_store / "similar_movies"},
        ],
    )
    monitoring = folder / "monitoring.config"
    monitoring.write_text("prometheus_config {\n  enable: true\n}\n")
    # As in TF Serving, a label may name a version that is not yet loaded only with this flag.
    with sp.ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={monitoring}",
        "--allow_version_labels_for_unavailable_models",
        rest=True,
    ) as s:
        wait_for_rest(s)
        yield s


def wait_for_rest(s) -> None:
    s.wait_for_line("Exporting HTTP/REST API at", timeout=60)


@pytest.fixture(scope="module")
def url(server):
    return f"http://127.0.0.1:{server.rest_port}"


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def predict(session, url, path, body) -> requests.Response:
    return session.post(url + path, data=json.dumps(body), timeout=30)


def error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


def test_status_shows_the_published_version_available(session, url, version):
    body = session.get(url + "/v1/models/retrieval").json()
    assert body == {
        "model_version_status": [
            {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    labelled = session.get(url + "/v1/models/retrieval/labels/stable").json()
    assert labelled["model_version_status"][0]["version"] == str(version)


def test_metadata_has_the_contract_signatures(session, url, version):
    body = session.get(url + f"/v1/models/retrieval/versions/{version}/metadata").json()
    assert body["model_spec"] == {"name": "retrieval", "signature_name": "", "version": str(version)}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default, exclude = signatures["serving_default"], signatures["exclude_seen"]

    def shape(info):
        return [int(d["size"]) for d in info["tensor_shape"]["dim"]]

    assert {k: (v["dtype"], shape(v)) for k, v in default["inputs"].items()} == {"user_id": ("DT_STRING", [-1])}
    assert {k: (v["dtype"], shape(v)) for k, v in default["outputs"].items()} == {
        "movie_titles": ("DT_STRING", [-1, K]),
        "scores": ("DT_FLOAT", [-1, K]),
        "movie_ids": ("DT_STRING", [-1, K]),
        "fallback": ("DT_BOOL", [-1]),
    }
    assert exclude["outputs"]["unmatched"]["dtype"] == "DT_INT32"
    assert exclude["inputs"]["exclude_titles"]["dtype"] == "DT_STRING"
    assert shape(exclude["inputs"]["exclude_titles"]) == [-1, -1]
    assert default["method_name"] == "tensorflow/serving/predict"


def test_row_predict_matches_grpc_exactly(server, session, url, version):
    response = predict(session, url, "/v1/models/retrieval:predict", {"instances": ["1", "2"]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    import tensorflow as tf

    grpc_answer = server.predict("retrieval", {"user_id": [b"1", b"2"]})
    titles = tf.make_ndarray(grpc_answer.outputs["movie_titles"])
    scores = tf.make_ndarray(grpc_answer.outputs["scores"])
    assert titles.shape == scores.shape == (2, K) and scores.dtype == np.float32
    for row, prediction in enumerate(predictions):
        assert set(prediction) == {"movie_titles", "scores", "movie_ids", "fallback"}
        assert prediction["fallback"] is bool(tf.make_ndarray(grpc_answer.outputs["fallback"])[row]) is False
        assert [t.encode() for t in prediction["movie_titles"]] == titles[row].tolist()
        rest_scores = np.array(prediction["scores"], dtype=np.float32)
        np.testing.assert_array_equal(rest_scores, scores[row])  # decimal text reads back to the same float32
        assert list(rest_scores) == sorted(rest_scores, reverse=True)


def test_columnar_and_label_and_version_forms_agree(session, url, version):
    paths = [
        "/v1/models/retrieval:predict",
        f"/v1/models/retrieval/versions/{version}:predict",
        "/v1/models/retrieval/labels/stable:predict",
    ]
    answers = [predict(session, url, p, {"inputs": {"user_id": ["3"]}}).json()["outputs"] for p in paths]
    assert answers[0] == answers[1] == answers[2]
    assert len(answers[0]["movie_titles"][0]) == K
    row = predict(session, url, paths[0], {"instances": [{"user_id": "3"}]}).json()["predictions"][0]
    assert row["movie_titles"] == answers[0]["movie_titles"][0]


def test_b64_user_id_is_the_same_as_the_plain_string(session, url):
    plain = predict(session, url, "/v1/models/retrieval:predict", {"instances": ["4"]}).json()
    encoded = {"b64": base64.b64encode(b"4").decode()}
    b64 = predict(session, url, "/v1/models/retrieval:predict", {"instances": [encoded]}).json()
    assert plain == b64


def test_exclude_seen_never_returns_an_excluded_title(session, url):
    top = predict(session, url, "/v1/models/retrieval:predict", {"instances": ["5"]}).json()["predictions"][0]
    seen = top["movie_titles"][:3]
    body = {"signature_name": "exclude_seen", "instances": [{"user_id": "5", "exclude_titles": seen}]}
    response = predict(session, url, "/v1/models/retrieval:predict", body)
    assert response.status_code == 200, response.text
    titles = response.json()["predictions"][0]["movie_titles"]
    assert len(titles) == K and not set(seen) & set(titles)


def test_similar_movies_never_lists_the_movie_itself(session, url):
    some_title = predict(session, url, "/v1/models/retrieval:predict", {"instances": ["6"]}).json()["predictions"][0][
        "movie_titles"
    ][0]
    response = predict(session, url, "/v1/models/similar_movies:predict", {"instances": [some_title]})
    assert response.status_code == 200, response.text
    assert some_title not in response.json()["predictions"][0]["movie_titles"]


def test_errors_in_tf_serving_shape(session, url, version):
    assert (
        error(predict(session, url, "/v1/models/nope:predict", {"instances": ["1"]}), 404)
        == "Servable not found for request: Latest(nope)"
    )
    assert (
        error(predict(session, url, "/v1/models/retrieval/versions/1:predict", {"instances": ["1"]}), 404)
        == "Servable not found for request: Specific(retrieval, 1)"
    )
    assert (
        error(predict(session, url, "/v1/models/retrieval/labels/canary:predict", {"instances": ["1"]}), 400)
        == "Unrecognized servable version label: canary"
    )
    assert (
        error(predict(session, url, "/v1/models/retrieval:predict", {"signature_name": "x", "instances": ["1"]}), 400)
        == 'Serving signature name: "x" not found in signature def'
    )
    assert error(predict(session, url, "/v1/models/retrieval:predict", {"instances": [1]}), 400).endswith(
        "JSON Value: 1 Type: Number is not of expected type: string"
    )
    assert "No values in 'instances' array" in error(
        predict(session, url, "/v1/models/retrieval:predict", {"instances": []}), 400
    )
    assert error(session.post(url + "/v1/models/retrieval:predict", data=b"{"), 400).startswith("JSON Parse error")
    assert error(session.put(url + "/v1/models/retrieval"), 400) == "Malformed request: PUT /v1/models/retrieval"
    # TF Serving's classifier checks the number of outputs before the input names: the contract has four.
    assert error(predict(session, url, "/v1/models/retrieval:classify", {"examples": [{"user_id": "1"}]}), 400) == (
        "Expected one or two output Tensors, found 4"
    )
    assert session.get(url + "/v2/models").status_code == 404
    # still serving
    assert predict(session, url, "/v1/models/retrieval:predict", {"instances": ["1"]}).status_code == 200


def test_prometheus_page_counts_rest_and_grpc(server, session, url, version):
    predict(session, url, "/v1/models/similar_movies:predict", {"instances": ["no such title"]})
    server.predict("similar_movies", {"movie_title": [b"x"]})
    text = session.get(url + "/monitoring/prometheus/metrics").text
    lines = [
        line
        for line in text.splitlines()
        if line.startswith(":tensorflow:serving:request_count{")
        and 'model_name="similar_movies"' in line
        and 'status="OK"' in line
    ]
    entrypoints = {line.split('entrypoint="')[1].split('"')[0] for line in lines}
    assert {"REST", "GRPC"} <= entrypoints
