"""serving.core (with its manager, source and policy modules) in process: version discovery, policies,
reference counting, labels, retries, config rules.

Uses tiny SavedModels built by the test (tests/serving/tiny_models.py) so each case loads in well under a
second; the same behaviours are exercised over sockets with real exports in test_lifecycle.py.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tensorflow_serving.config import model_server_config_pb2

import tiny_models as tiny
from serving.core import CoreOptions, ServerCore
from serving.errors import StatusError
from serving.file_system_storage_path_source import aspired_versions, list_versions

USER = {"user_id": np.array([b"1"], dtype=object)}
FAST = CoreOptions(file_system_poll_wait_seconds=0.1, max_num_load_retries=0)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return tiny.build(str(tmp_path_factory.mktemp("tiny") / "model"))


def _config(*models: dict):
    config = model_server_config_pb2.ModelServerConfig()
    for m in models:
        c = config.model_config_list.config.add()
        c.name, c.base_path, c.model_platform = m["name"], str(m["base_path"]), m.get("platform", "tensorflow")
        if "policy" in m:
            from google.protobuf import text_format

            text_format.Parse(m["policy"], c.model_version_policy)
        for label, version in m.get("labels", {}).items():
            c.version_labels[label] = version
    return config


@pytest.fixture
def core():
    cores = []

    def make(options=FAST):
        cores.append(ServerCore(options))
        return cores[-1]

    yield make
    for c in cores:
        c.stop()


def test_list_versions_keeps_only_int64_named_directories(tmp_path):
    for name in ("1", "00000123", "17000000000", "abc", "12a", ".5", "9" * 20, "-3"):
        (tmp_path / name).mkdir()
    (tmp_path / "77").write_text("a file, not a version")
    assert list_versions(str(tmp_path)) == [1, 123, 17000000000]


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("", {30}),
        ("latest { num_versions: 2 }", {20, 30}),
        ("all {}", {10, 20, 30}),
        ("specific { versions: 10 versions: 99 }", {10}),
    ],
)
def test_version_policies(policy, expected):
    from google.protobuf import text_format

    config = model_server_config_pb2.ModelConfig()
    text_format.Parse(policy, config.model_version_policy)
    assert aspired_versions(config.model_version_policy, [10, 30, 20]) == expected


def test_request_in_flight_keeps_its_version_until_done(core, source, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core()
    c.reload_config(_config({"name": "m", "base_path": base}))
    held = c._manager.acquire("m", None)  # a request that started on version 1
    assert held.version == 1
    tiny.publish(str(base), 2, source)
    c.wait_for_state("m", 2, ["AVAILABLE"], timeout=30)
    assert c.wait_for_state("m", 1, ["UNLOADING"], timeout=10).state == "UNLOADING"
    assert c.predict("m", inputs=USER)[0] == 2, "new requests go to version 2"
    assert held.bundle.run("", USER)["scores"].shape == (1, tiny.K), "the held version still answers"
    c._manager.release(held)
    assert c.wait_for_state("m", 1, ["END"], timeout=10).error_code == "OK"
    with pytest.raises(StatusError) as err:
        c.predict("m", version=1, inputs=USER)
    assert err.value.code == "NOT_FOUND"


def test_failed_load_is_retried_and_succeeds_once_the_folder_is_complete(core, source, tmp_path, caplog):
    caplog.set_level("INFO", logger="serving.aspired_versions_manager")
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core(CoreOptions(file_system_poll_wait_seconds=0.1, max_num_load_retries=3, load_retry_interval_micros=700_000))
    c.reload_config(_config({"name": "m", "base_path": base}))
    # A non-atomic copy, caught half-way: variables missing.
    shutil.copytree(source, base / "2", ignore=shutil.ignore_patterns("variables"))
    c.wait_for_state("m", 2, ["LOADING"], timeout=10)
    deadline = time.monotonic() + 30
    while "Loading servable: {name: m version: 2} failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)  # until the first attempt has failed on the half-copied folder
    shutil.rmtree(base / "2" / "variables", ignore_errors=True)
    shutil.copytree(Path(source) / "variables", base / "2" / "variables")
    assert c.wait_for_state("m", 2, ["AVAILABLE", "END"], timeout=30).state == "AVAILABLE"
    assert c.predict("m", inputs=USER)[0] == 2
    assert "Retrying load of servable {name: m version: 2}" in caplog.text


def test_failed_version_is_not_retried_and_old_keeps_serving(core, source, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core()
    c.reload_config(_config({"name": "m", "base_path": base}))
    bad = base / "_stage"
    shutil.copytree(source, bad)
    (bad / "saved_model.pb").write_bytes(b"junk")
    os.rename(bad, base / "2")
    status = c.wait_for_state("m", 2, ["END"], timeout=30)
    assert status.error_code != "OK" and status.error_message
    c.wait_for_polls(c.poll_count + 3, timeout=30)  # three more polls: v2 is not retried, v1 still serves
    assert [s.state for s in c.model_status("m")] == ["END", "AVAILABLE"]
    assert c.predict("m", inputs=USER)[0] == 1


def test_failing_warmup_fails_the_version(core, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    tiny.build(str(base / "3"), bad_warmup=True)
    c = core()
    with pytest.raises(StatusError) as err:
        c.reload_config(_config({"name": "m", "base_path": base}))
    assert err.value.code == "UNKNOWN"
    assert "1 model(s) did not become available" in err.value.message
    [status] = c.model_status("m")
    assert (status.state, status.error_code) == ("END", "INVALID_ARGUMENT")


def test_labels_need_available_versions_unless_allowed_for_new_labels(core, source, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    for v in (1, 2):
        tiny.publish(str(base), v, source)
    c = core()
    c.reload_config(_config({"name": "m", "base_path": base, "policy": "specific { versions: 1 }"}))
    with pytest.raises(StatusError) as err:
        c.reload_config(
            _config(
                {
                    "name": "m",
                    "base_path": base,
                    "policy": "specific { versions: 1 versions: 2 }",
                    "labels": {"canary": 2},
                }
            )
        )
    assert err.value.code == "FAILED_PRECONDITION"
    assert c.labels("m") == {}
    assert [s.version for s in c.model_status("m")] == [1], "the rejected config changed nothing"
    c.reload_config(
        _config(
            {"name": "m", "base_path": base, "labels": {"stable": 1}, "policy": "specific { versions: 1 versions: 2 }"}
        )
    )
    c.wait_for_state("m", 2, ["AVAILABLE"], timeout=30)
    c.reload_config(
        _config(
            {
                "name": "m",
                "base_path": base,
                "labels": {"stable": 1, "canary": 2},
                "policy": "specific { versions: 1 versions: 2 }",
            }
        )
    )
    assert c.predict("m", label="canary", inputs=USER)[0] == 2
    assert c.predict("m", label="stable", inputs=USER)[0] == 1


def test_allow_flag_permits_new_label_but_not_moving_one_to_unavailable(core, source, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core(
        CoreOptions(
            file_system_poll_wait_seconds=0.1, max_num_load_retries=0, allow_version_labels_for_unavailable_models=True
        )
    )
    c.reload_config(_config({"name": "m", "base_path": base, "labels": {"stable": 1, "next": 5}}))
    assert c.labels("m") == {"stable": 1, "next": 5}
    with pytest.raises(StatusError) as err:
        c.predict("m", label="next", inputs=USER)
    assert (err.value.code, err.value.message) == ("NOT_FOUND", "Servable not found for request: Specific(m, 5)")
    with pytest.raises(StatusError) as err:
        c.reload_config(_config({"name": "m", "base_path": base, "labels": {"stable": 7}}))
    assert err.value.code == "FAILED_PRECONDITION"


@pytest.mark.parametrize(
    "models, message",
    [
        (
            [{"name": "a", "base_path": "/x"}, {"name": "a", "base_path": "/y"}],
            "Illegal to list model a multiple times",
        ),
        ([{"name": "a", "base_path": "rel/path"}], "Expected model a to have an absolute path or URI"),
        ([{"name": "a", "base_path": "/x", "platform": "onnx"}], "Model a requests unsupported platform onnx"),
    ],
)
def test_invalid_configs_are_rejected(core, models, message):
    c = core()
    with pytest.raises(StatusError) as err:
        c.reload_config(_config(*models), wait=False)
    assert err.value.code == "INVALID_ARGUMENT"
    assert message in err.value.message
    assert c.model_names() == []


def test_model_name_never_reaches_the_filesystem(core, source, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core()
    c.reload_config(_config({"name": "m", "base_path": base}))
    for name in ("../m", str(base), "m/1", ""):
        with pytest.raises(StatusError) as err:
            c.predict(name, inputs=USER)
        assert err.value.code in ("NOT_FOUND", "INVALID_ARGUMENT")


def test_model_removed_and_added_back_before_unloading_keeps_no_orphaned_session(core, source, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core()
    c.reload_config(_config({"name": "m", "base_path": base}))
    c.predict("m", inputs=USER)
    first = c._manager._models["m"].versions[1].bundle
    with c._lock:  # the manager cannot act between the two reloads (as when it is busy loading another model)
        empty = _config()
        empty.model_config_list.SetInParent()
        c.reload_config(empty)
        c.reload_config(_config({"name": "m", "base_path": base}), wait=False)
    c.wait_for_state("m", 1, ["AVAILABLE"], timeout=30)
    assert c.predict("m", inputs=USER)[0] == 1
    serving = c._manager._models["m"].versions[1].bundle
    assert serving is first or first._closed, "the first load's Session is neither serving nor closed"


def test_model_removed_then_added_back_loads_again(core, source, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core()
    c.reload_config(_config({"name": "m", "base_path": base}))
    empty = _config()
    empty.model_config_list.SetInParent()
    c.reload_config(empty)
    assert c.wait_for_state("m", 1, ["END"], timeout=30).error_code == "OK"
    c.reload_config(_config({"name": "m", "base_path": base}))  # waits for the model, as a new one
    assert c.predict("m", inputs=USER)[0] == 1


def test_unloading_closes_the_session_without_holding_the_core_lock(core, source, tmp_path, monkeypatch):
    """Requests resolve their version under the core's lock: a Session closing under it would stall them."""
    from serving.bundle import SavedModelBundle

    held = []
    close = SavedModelBundle.close

    def recording_close(bundle):
        held.append(c._lock._is_owned())
        close(bundle)

    monkeypatch.setattr(SavedModelBundle, "close", recording_close)
    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, source)
    c = core()
    c.reload_config(_config({"name": "m", "base_path": base}))
    tiny.publish(str(base), 2, source)
    c.wait_for_state("m", 1, ["END"], timeout=30)  # unloaded by the manager once v2 serves
    held_request = c._manager.acquire("m", None)  # a request in flight on v2 when the core stops
    stopper = threading.Thread(target=c.stop)
    stopper.start()
    c.wait_for_state("m", 2, ["UNLOADING"], timeout=30)
    c._manager.release(held_request)  # the last request closes v2
    stopper.join(30)
    assert held == [False, False]


# -- the pure decisions: AvailabilityPreservingPolicy's next step and the state names -------------------
from serving.availability_preserving_policy import Action, VersionState, next_action  # noqa: E402
from serving.file_system_storage_path_source import version_dirs  # noqa: E402

A, E, L, U = VersionState.AVAILABLE, VersionState.END, VersionState.LOADING, VersionState.UNLOADING


@pytest.mark.parametrize(
    "aspired, states, failed, expected",
    [
        ({1}, {}, set(), Action("load", 1)),  # first version
        ({1, 2, 3}, {}, set(), Action("load", 3)),  # highest new first
        ({2}, {1: A}, set(), Action("load", 2)),  # new before old goes
        ({2}, {1: A, 2: L}, set(), None),  # old serves while new loads
        ({2}, {1: A, 2: A}, set(), Action("unload", 1)),  # new serves: old goes
        ({2}, {1: A, 2: E}, {2}, None),  # new failed: old keeps serving
        ({2}, {1: E, 2: E}, set(), Action("load", 2)),  # unloaded and aspired again
        (set(), {1: A}, set(), Action("unload", 1)),  # nothing aspired
        ({3}, {1: A, 2: A, 3: L}, set(), Action("unload", 1)),  # several un-aspired serve
        ({3}, {1: A, 2: U, 3: L}, set(), None),  # one serving, one closing
        ({1}, {1: A}, set(), None),  # steady state
    ],
)
def test_next_action_is_availability_preserving(aspired, states, failed, expected):
    assert next_action(aspired, states, failed) == expected


def test_states_are_an_enum_with_tf_serving_wire_names():
    from tensorflow_serving.apis import get_model_status_pb2

    names = [s.value for s in VersionState]
    assert names == ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
    enum = get_model_status_pb2.ModelVersionStatus.State
    assert [enum.Value(s) for s in VersionState] == [enum.Value(n) for n in names] == [10, 20, 30, 40, 50]
    assert VersionState.AVAILABLE == "AVAILABLE" and f"{VersionState.END}" == "END"


def test_version_dirs_keep_the_directory_spelling(tmp_path):
    for name in ("00000123", "7", "_staging-8", "9.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "10").write_text("a file, not a version")
    assert version_dirs(str(tmp_path)) == {123: "00000123", 7: "7"}


def test_a_slow_listing_does_not_hold_the_lock_requests_take(core, source, tmp_path, monkeypatch):
    """While the manager lists the base path, a request still resolves (the lock is free)."""
    import serving.file_system_storage_path_source as source_module

    base = tmp_path / "m"
    shutil.copytree(source, base / "1")
    c = core(CoreOptions(file_system_poll_wait_seconds=0.05, max_num_load_retries=0))
    c.reload_config(_config({"name": "m", "base_path": base}))
    listing, release, listed = threading.Event(), threading.Event(), threading.Event()
    real = source_module.version_dirs

    def slow(path):
        listing.set()
        release.wait(10)
        listed.set()
        return real(path)

    monkeypatch.setattr(source_module, "version_dirs", slow)
    try:
        assert listing.wait(10), "the manager polls"
        version, outputs = c.predict("m", inputs=USER)
        assert version == 1 and outputs and not listed.is_set(), "answered while the listing is held up"
        assert [s.state for s in c.model_status("m")] == ["AVAILABLE"]
    finally:
        release.set()
