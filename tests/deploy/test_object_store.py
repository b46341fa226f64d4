"""export/object_store.py: a version copied through tf.io.gfile with saved_model.pb last is never loaded
half-copied by a server polling the store mid-copy (the bundle's server core, polling every 50 ms). The
control: the same copy with saved_model.pb first is picked up half-copied and its load fails."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from export import object_store

USERS = {"user_id": np.array([b"1", b"2"], dtype=object)}


@pytest.fixture
def core_on_store(model_store, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.core import CoreOptions, ServerCore

    base = tmp_path / "models" / "retrieval"
    source = (
        model_store
        / "retrieval"
        / str(max(int(p.name) for p in (model_store / "retrieval").iterdir() if p.name.isdigit()))
    )
    shutil.copytree(source, base / "1")

    def start(retries: int) -> ServerCore:
        core = ServerCore(
            CoreOptions(
                file_system_poll_wait_seconds=0.05, max_num_load_retries=retries, load_retry_interval_micros=50_000
            )
        )
        config = text_format.Parse(
            f'model_config_list {{ config {{ name: "retrieval" base_path: "{base}" model_platform: "tensorflow" }} }}',
            model_server_config_pb2.ModelServerConfig(),
        )
        core.reload_config(config)
        started.append(core)
        return core

    started: list = []
    yield source, base, start
    for core in started:
        core.stop()


def states(core, version: int) -> str | None:
    status = {s.version: s for s in core.model_status("retrieval")}
    return status[version].state if version in status else None


def test_copy_order_puts_saved_model_pb_last(model_store):
    version = next(p for p in (model_store / "retrieval").iterdir() if p.name.isdigit())
    order = object_store.copy_order(version)
    assert order[-1] == "saved_model.pb" and order.count("saved_model.pb") == 1
    assert any(f.startswith("variables/") for f in order) and len(order) > 3
    assert sorted(order) == sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file())


@pytest.mark.slow
def test_server_polling_mid_copy_never_loads_a_half_version(core_on_store):
    source, base, start = core_on_store
    core = start(retries=200)  # 200 x 50 ms: the retry budget outlasts the copy (as the gs:// overlay's)
    seen_during_copy = []
    v1, out1 = core.predict("retrieval", inputs=USERS)

    def after_file(relative: str) -> None:
        time.sleep(0.15)  # a slow upload: several polls per file
        state = states(core, 2)
        seen_during_copy.append((relative, state))
        if relative != "saved_model.pb":
            assert state != "AVAILABLE", f"version 2 AVAILABLE with only part of it copied (after {relative})"

    order = object_store.copy_version(source, str(base / "2"), after_file=after_file)
    assert [r for r, _ in seen_during_copy] == order
    # The server did see the version mid-copy (and its loads failed and were retried), so the check was live.
    assert any(state in ("LOADING", "START") for r, state in seen_during_copy[:-1])
    assert core.wait_for_state("retrieval", 2, ["AVAILABLE", "END"], timeout=60).state == "AVAILABLE"
    v2, out2 = core.predict("retrieval", inputs=USERS)
    assert (v1, v2) == (1, 2)
    assert np.array_equal(out1["movie_titles"], out2["movie_titles"])
    assert np.allclose(out1["scores"], out2["scores"])
    with pytest.raises(object_store.ObjectStoreError):  # never overwritten
        object_store.copy_version(source, str(base / "2"))


@pytest.mark.slow
def test_control_saved_model_pb_first_is_loaded_half_copied(core_on_store):
    import tensorflow as tf

    source, base, start = core_on_store
    core = start(retries=0)
    order = object_store.copy_order(source)
    for relative in [order[-1], *order[:-1]]:  # the wrong order
        target = base / "2" / relative
        tf.io.gfile.makedirs(str(target.parent))
        tf.io.gfile.copy(str(source / relative), str(target), overwrite=True)
        time.sleep(0.15)
    status = core.wait_for_state("retrieval", 2, ["AVAILABLE", "END"], timeout=60)
    assert status.state == "END" and status.error_code != "OK", status
    assert states(core, 1) == "AVAILABLE"


def test_publish_store_copies_newest_versions_once(model_store, tmp_path):
    destination = tmp_path / "bucket" / "models"
    copied = object_store.publish_store(model_store, str(destination))
    assert set(copied) == {"retrieval", "similar_movies"}
    for model, version in copied.items():
        assert object_store.remote_versions(str(destination / model)) == [version]
        local = model_store / model / str(version)
        remote = destination / model / str(version)
        files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(remote) for p in remote.rglob("*") if p.is_file())
        assert all((local / f).read_bytes() == (remote / f).read_bytes() for f in files)
    assert object_store.publish_store(model_store, str(destination)) == {}  # nothing newer: nothing copied
    assert object_store.main([f"--store={tmp_path / 'empty'}", f"--destination={destination}"]) == 1
