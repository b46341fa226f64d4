"""serving.bundle: load by tag, call by tensor names, warmup replay, TF Serving's input checks."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import tiny_models
from serving.bundle import BundleError, SavedModelBundle


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_models.build(str(tmp_path_factory.mktemp("bundle") / "1"), marker=0.5)


@pytest.fixture(scope="module")
def bundle(model_dir):
    b = SavedModelBundle.load(model_dir)
    yield b
    b.close()


def test_signatures_come_from_the_meta_graph(bundle):
    assert set(bundle.signature_defs) >= {"serving_default", "exclude_seen"}
    sig = bundle.signature_defs["serving_default"]
    assert set(sig.inputs) == {"user_id"}
    assert set(sig.outputs) == {"movie_titles", "scores"}


def test_run_returns_outputs_by_alias(bundle):
    out = bundle.run("serving_default", {"user_id": np.array([b"42", b"7"], dtype=object)})
    assert out["movie_titles"].shape == (2, tiny_models.K)
    assert out["scores"].dtype == np.float32
    assert isinstance(out["movie_titles"][0, 0], bytes)
    # deterministic and batch-independent
    single = bundle.run("", {"user_id": np.array([b"7"], dtype=object)})
    np.testing.assert_array_equal(single["scores"][0], out["scores"][1])


def test_output_filter_limits_outputs(bundle):
    out = bundle.run("serving_default", {"user_id": np.array([b"1"], dtype=object)}, output_filter=["scores"])
    assert list(out) == ["scores"]


def test_unknown_output_in_filter_is_invalid_argument(bundle):
    with pytest.raises(BundleError) as err:
        bundle.run("serving_default", {"user_id": np.array([b"1"], dtype=object)}, output_filter=["nope"])
    assert err.value.code == "INVALID_ARGUMENT"
    assert "output tensor alias not found in signature: nope" in err.value.message


def test_unknown_signature_is_failed_precondition(bundle):
    with pytest.raises(BundleError) as err:
        bundle.run("nope", {"user_id": np.array([b"1"], dtype=object)})
    assert err.value.code == "FAILED_PRECONDITION"
    assert err.value.message == 'Serving signature key "nope" not found.'


def test_extra_input_is_invalid_argument(bundle):
    with pytest.raises(BundleError) as err:
        bundle.run("serving_default", {"user_id": np.array([b"1"], dtype=object), "x": np.array([1])})
    assert err.value.code == "INVALID_ARGUMENT"
    assert "input size does not match signature: 2!=1" in err.value.message
    assert "Sent extra: {x}" in err.value.message


def test_wrong_input_name_is_invalid_argument(bundle):
    with pytest.raises(BundleError) as err:
        bundle.run("serving_default", {"uid": np.array([b"1"], dtype=object)})
    assert err.value.code == "INVALID_ARGUMENT"
    assert "Signature input alias: user_id" in err.value.message


def test_missing_input_is_invalid_argument(bundle):
    with pytest.raises(BundleError) as err:
        bundle.run("exclude_seen", {"user_id": np.array([b"1"], dtype=object)})
    assert err.value.code == "INVALID_ARGUMENT"
    assert "Missing but required: {exclude_titles}" in err.value.message


def test_wrong_dtype_is_invalid_argument(bundle):
    with pytest.raises(BundleError) as err:
        bundle.run("serving_default", {"user_id": np.array([1.5], dtype=np.float32)})
    assert err.value.code == "INVALID_ARGUMENT"
    assert err.value.message == "Expects arg[0] to be string but float is provided"


def test_wrong_rank_is_invalid_argument(bundle):
    with pytest.raises(BundleError) as err:
        bundle.run("serving_default", {"user_id": np.array([[b"1"]], dtype=object)})
    assert err.value.code == "INVALID_ARGUMENT"


def test_two_input_signature_runs(bundle):
    out = bundle.run(
        "exclude_seen",
        {"user_id": np.array([b"1"], dtype=object), "exclude_titles": np.array([[b"Heat (1995)", b""]], dtype=object)},
    )
    assert out["scores"].shape == (1, tiny_models.K)


def test_call_within_its_deadline_answers_as_without_one(bundle):
    users = {"user_id": np.array([b"42", b"7"], dtype=object)}
    timed = bundle.run("serving_default", users, timeout_ms=30000.0)
    plain = bundle.run("serving_default", users)
    np.testing.assert_array_equal(timed["scores"], plain["scores"])
    np.testing.assert_array_equal(timed["movie_titles"], plain["movie_titles"])


@pytest.mark.parametrize("timeout_ms", [0, -5.0])
def test_call_whose_deadline_has_passed_is_deadline_exceeded_before_running(model_dir, monkeypatch, timeout_ms):
    b = SavedModelBundle.load(model_dir, run_warmup=False)
    ran = []
    monkeypatch.setattr(b, "_callable", lambda *args: lambda *feeds: ran.append(feeds))
    try:
        with pytest.raises(BundleError) as err:
            b.run("", {"user_id": np.array([b"1"], dtype=object)}, timeout_ms=timeout_ms)
    finally:
        b.close()
    assert err.value.code == "DEADLINE_EXCEEDED"
    assert not ran


def test_call_that_overruns_its_deadline_is_deadline_exceeded(model_dir, monkeypatch):
    import time

    b = SavedModelBundle.load(model_dir, run_warmup=False)
    fast = b._callable

    def slow_callable(*args):
        run = fast(*args)

        def slow(*feeds):
            time.sleep(0.05)
            return run(*feeds)

        return slow

    monkeypatch.setattr(b, "_callable", slow_callable)
    try:
        with pytest.raises(BundleError) as err:
            b.run("", {"user_id": np.array([b"1"], dtype=object)}, timeout_ms=10)
        assert err.value.code == "DEADLINE_EXCEEDED"
        answer = b.run("", {"user_id": np.array([b"1"], dtype=object)}, timeout_ms=5000)
        assert answer["scores"].shape == (1, tiny_models.K)
    finally:
        b.close()


def test_closed_bundle_is_unavailable(model_dir):
    b = SavedModelBundle.load(model_dir, run_warmup=False)
    b.close()
    with pytest.raises(BundleError) as err:
        b.run("", {"user_id": np.array([b"1"], dtype=object)})
    assert err.value.code == "UNAVAILABLE"


def test_failing_warmup_fails_the_load(tmp_path):
    path = tiny_models.build(str(tmp_path / "2"), bad_warmup=True)
    with pytest.raises(BundleError) as err:
        SavedModelBundle.load(path)
    assert err.value.code == "INVALID_ARGUMENT"
    # the same model loads when warmup is off
    SavedModelBundle.load(path, run_warmup=False).close()


def test_too_many_warmup_records_fail_the_load(tmp_path, model_dir):
    import tensorflow as tf

    path = str(tmp_path / "3")
    shutil.copytree(model_dir, path)
    warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    record = next(iter(tf.compat.v1.io.tf_record_iterator(warmup)))
    with tf.io.TFRecordWriter(warmup) as w:
        for _ in range(1001):
            w.write(record)
    with pytest.raises(BundleError) as err:
        SavedModelBundle.load(path)
    assert "Number of warmup records exceeds the maximum (1000)" in err.value.message


def test_corrupt_warmup_file_is_data_loss(tmp_path, model_dir):
    path = str(tmp_path / "4")
    shutil.copytree(model_dir, path)
    with open(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"), "wb") as f:
        f.write(b"\x00garbage, not a tfrecord at all\x01\x02\x03\x04\x05\x06\x07")
    with pytest.raises(BundleError) as err:
        SavedModelBundle.load(path)
    assert err.value.code == "DATA_LOSS"


def test_missing_saved_model_fails_the_load(tmp_path):
    (tmp_path / "5").mkdir()
    with pytest.raises(BundleError) as err:
        SavedModelBundle.load(str(tmp_path / "5"))
    assert "SavedModel" in err.value.message


def test_half_written_model_fails_the_load(tmp_path, model_dir):
    path = str(tmp_path / "6")
    shutil.copytree(model_dir, path)
    shutil.rmtree(os.path.join(path, "variables"))
    with pytest.raises(BundleError):
        SavedModelBundle.load(path)
