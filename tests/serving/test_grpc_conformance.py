"""gRPC conformance of the local server against TF Serving's behaviour, over a real socket.

The store is the shared ``model_store`` (real ScaNN exports of retrieval and similar_movies on tiny
synthetic data); versions are whatever export published.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

import server_process as sp


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory):
    config = sp.write_config(
        tmp_path_factory.mktemp("grpc") / "models.config",
        [
            {"name": "retrieval", "base_path": model_store / "retrieval"},
            {"name": "similar_movies", "base_path": model_store / "similar_movies"},
        ],
    )
    with sp.ServerProcess(f"--model_config_file={config}") as s:
        yield s


@pytest.fixture(scope="module")
def version(model_store):
    return sp.versions(model_store / "retrieval")[-1]


def _code(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def _stub(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(server.channel)


def test_predict_answers_with_echoed_spec_and_version(server, version):
    import tensorflow as tf

    response = server.predict("retrieval", {"user_id": [b"1", b"2"]})
    assert response.model_spec.name == "retrieval"
    assert response.model_spec.version.value == version
    assert response.model_spec.signature_name == "serving_default"
    titles = tf.make_ndarray(response.outputs["movie_titles"])
    scores = tf.make_ndarray(response.outputs["scores"])
    assert titles.shape == scores.shape and titles.shape[0] == 2
    assert scores.dtype == np.float32
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores are best first"


def test_predict_by_explicit_version(server, version):
    assert server.predict("retrieval", {"user_id": [b"1"]}, version=version).model_spec.version.value == version


def test_second_signature_and_second_model(server):
    import tensorflow as tf

    seen = tf.make_ndarray(server.predict("retrieval", {"user_id": [b"3"]}).outputs["movie_titles"])[0]
    response = server.predict(
        "retrieval", {"user_id": [b"3"], "exclude_titles": [[seen[0], b""]]}, signature="exclude_seen"
    )
    assert response.model_spec.signature_name == "exclude_seen"
    assert seen[0] not in tf.make_ndarray(response.outputs["movie_titles"])[0]
    similar = server.predict("similar_movies", {"movie_title": [seen[0]]})
    assert seen[0] not in tf.make_ndarray(similar.outputs["movie_titles"])[0]


def test_output_filter_returns_only_named_outputs(server):
    response = server.predict("retrieval", {"user_id": [b"1"]}, output_filter=["scores"])
    assert list(response.outputs) == ["scores"]


def test_output_filter_with_unknown_output_is_invalid_argument(server):
    err = _code(lambda: server.predict("retrieval", {"user_id": [b"1"]}, output_filter=["nope"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in err.details()


def test_unknown_model_is_not_found(server):
    err = _code(lambda: server.predict("nope", {"user_id": [b"1"]}))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Latest(nope)"


def test_unknown_version_is_not_found(server):
    err = _code(lambda: server.predict("retrieval", {"user_id": [b"1"]}, version=99))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Specific(retrieval, 99)"


def test_unknown_label_is_invalid_argument(server):
    err = _code(lambda: server.predict("retrieval", {"user_id": [b"1"]}, label="canary"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Unrecognized servable version label: canary"


def test_unknown_signature_is_failed_precondition(server):
    err = _code(lambda: server.predict("retrieval", {"user_id": [b"1"]}, signature="nope"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == 'Serving signature key "nope" not found.'


def test_wrong_input_name_is_invalid_argument(server):
    err = _code(lambda: server.predict("retrieval", {"movie_title": [b"1"]}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in err.details()


def test_wrong_dtype_is_invalid_argument(server):
    err = _code(lambda: server.predict("retrieval", {"user_id": np.array([1.0, 2.0], dtype=np.float32)}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Expects arg[0] to be string but float is provided"


def test_malformed_tensor_is_invalid_argument_and_server_stays_up(server):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "retrieval"
    bad = request.inputs["user_id"]
    bad.dtype = 1  # DT_FLOAT with 3 declared elements but 2 bytes of content
    bad.tensor_shape.dim.add().size = 3
    bad.tensor_content = b"\x00\x01"
    err = _code(lambda: _stub(server).Predict(request, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "tensor parsing error: user_id"
    assert server.predict("retrieval", {"user_id": [b"1"]}).outputs


def test_missing_model_spec_is_invalid_argument(server):
    from tensorflow_serving.apis import predict_pb2

    err = _code(lambda: _stub(server).Predict(predict_pb2.PredictRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status_lists_the_available_version(server, version):
    from tensorflow_serving.apis import get_model_status_pb2

    response = server.status("retrieval")
    [entry] = response.model_version_status
    assert entry.version == version
    assert entry.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert entry.status.error_code == 0 and entry.status.error_message == ""


def test_status_of_unknown_model_and_version_is_not_found(server):
    err = _code(lambda: server.status("nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Could not find any versions of model nope"
    err = _code(lambda: server.status("retrieval", version=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Could not find version 7 of model retrieval"


def _metadata_request(model: str, fields=("signature_def",)):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.extend(fields)
    return request


def test_metadata_returns_signature_defs_and_version(server, version):
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = _stub(server).GetModelMetadata(_metadata_request("retrieval"), timeout=10)
    assert response.model_spec.name == "retrieval"
    assert response.model_spec.version.value == version
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving_default = signatures.signature_def["serving_default"]
    assert serving_default.method_name == "tensorflow/serving/predict"
    assert set(serving_default.inputs) == {"user_id"}
    assert serving_default.inputs["user_id"].dtype == 7  # DT_STRING
    assert set(serving_default.outputs) == {"movie_titles", "scores", "movie_ids", "fallback"}
    assert set(signatures.signature_def["exclude_seen"].inputs) == {"user_id", "exclude_titles"}


@pytest.mark.parametrize("fields", [(), ("signature_def", "nope")])
def test_metadata_field_must_be_signature_def(server, fields):
    err = _code(lambda: _stub(server).GetModelMetadata(_metadata_request("retrieval", fields), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metadata_of_unknown_model_is_not_found(server):
    err = _code(lambda: _stub(server).GetModelMetadata(_metadata_request("nope"), timeout=10))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_classify_on_a_predict_signature_is_invalid_argument(server):
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "retrieval"
    err = _code(lambda: _stub(server).Classify(request, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensorflow/serving/classify" in err.details()


def test_multi_inference_is_unimplemented(server):
    from tensorflow_serving.apis import inference_pb2

    err = _code(lambda: _stub(server).MultiInference(inference_pb2.MultiInferenceRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_stopping_the_grpc_server_ends_its_worker_threads():
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    import rest_fake_core
    from serving.grpc_service import GrpcServer

    server = GrpcServer(rest_fake_core.FakeCore(), host="127.0.0.1", port=0, max_workers=2)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "retrieval"
        answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    assert [s.version for s in answer.model_version_status] == [3, 2, 1]
    workers = list(server._executor._threads)
    assert workers
    server.stop(grace=5)
    assert not any(t.is_alive() for t in workers)
