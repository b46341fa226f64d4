"""Model lifecycle over real sockets: swaps under load, bad versions, staging folders, policies, labels,
config reloads, start-up gating and shutdown. Models come from the shared export fixtures (copied before
anything is written) or, for deliberately broken versions, are made here.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest

import server_process as sp

pytestmark = pytest.mark.slow

USER = {"user_id": [b"1", b"2"]}


@pytest.fixture
def store(model_store, tmp_path) -> Path:
    """A private, writable copy of the shared store."""
    root = tmp_path / "models"
    shutil.copytree(model_store, root)
    return root


class LoadGenerator:
    """Bounded gRPC predict loop in a thread; records the answering version or the error of each call."""

    def __init__(self, server, model: str = "retrieval", max_requests: int = 20000) -> None:
        self.server, self.model, self.max_requests = server, model, max_requests
        self.versions: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.versions) + len(self.errors) < self.max_requests:
            try:
                self.versions.append(self.server.predict(self.model, USER, timeout=30).model_spec.version.value)
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code()}: {exc.details()}")

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


class RestLoadGenerator(LoadGenerator):
    """The same over REST; a REST predict answer names no version, so each call counts as one success
    (HTTP 200 with one prediction per instance) or one error."""

    def _run(self) -> None:
        import requests

        url = f"http://127.0.0.1:{self.server.rest_port}/v1/models/{self.model}"
        with requests.Session() as http:
            while not self._stop.is_set() and len(self.versions) + len(self.errors) < self.max_requests:
                try:
                    answer = http.post(url + ":predict", json={"instances": ["1", "2"]}, timeout=30)
                    if answer.status_code != 200 or len(answer.json()["predictions"]) != 2:
                        self.errors.append(f"{answer.status_code}: {answer.text[:200]}")
                    else:
                        self.versions.append(len(self.versions))
                except requests.RequestException as exc:
                    self.errors.append(repr(exc))


def test_publishing_v2_under_load_moves_answers_with_zero_failures(store):
    base = store / "retrieval"
    v1 = sp.versions(base)[-1]
    with sp.ServerProcess("--model_name=retrieval", f"--model_base_path={base}", rest=True) as server:
        with LoadGenerator(server) as load, RestLoadGenerator(server) as rest_load:
            server.wait_until(
                lambda: len(load.versions) > 20 and len(rest_load.versions) > 20, what="load running on v1"
            )
            v2 = v1 + 1000
            sp.publish_copy(base, v1, v2)
            server.wait_until(lambda: load.versions and load.versions[-1] == v2, timeout=60, what="answers on v2")
            rest_before = len(rest_load.versions)
            server.wait_until(lambda: len(rest_load.versions) > rest_before + 20, what="REST load after swap")
        assert load.errors == []
        assert rest_load.errors == []
        assert load.versions[0] == v1 and load.versions[-1] == v2
        first_v2 = load.versions.index(v2)
        assert set(load.versions[first_v2:]) == {v2}, "once v2 answers, v1 never answers again"
        states = server.wait_until(lambda: (s := server.states("retrieval"))[v1][0] == "END" and s, what="v1 unloaded")
        assert states[v2][0] == "AVAILABLE"
        assert states[v1] == ("END", 0, "")


def test_corrupt_version_leaves_previous_serving_and_status_shows_its_error(store):
    base = store / "retrieval"
    v2 = sp.versions(base)[-1]
    with sp.ServerProcess("--model_name=retrieval", f"--model_base_path={base}", "--max_num_load_retries=0") as server:
        with LoadGenerator(server) as load:
            v3 = v2 + 1
            staging = base / "_staging"
            shutil.copytree(base / str(v2), staging)
            (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
            os.rename(staging, base / str(v3))
            states = server.wait_until(
                lambda: (s := server.states("retrieval")).get(v3, ("",))[0] == "END" and s, what="v3 failed"
            )
            server.wait_for_more_polls(3)  # three more polls: v3 is not retried, v2 is not unloaded
        assert load.errors == []
        assert set(load.versions) == {v2}
        _state, code, message = states[v3]
        assert code != 0 and message, "v3's status carries its load error"
        assert server.states("retrieval")[v2][0] == "AVAILABLE"
        assert server.predict("retrieval", USER).model_spec.version.value == v2


def test_half_written_non_numeric_folder_is_ignored(store):
    base = store / "retrieval"
    v1 = sp.versions(base)[-1]
    partial = base / f"{v1 + 5}.partial"
    partial.mkdir()
    (partial / "saved_model.pb").write_bytes(b"\x00half")
    (base / "tmp-upload").mkdir()
    with sp.ServerProcess("--model_name=retrieval", f"--model_base_path={base}") as server:
        server.wait_for_more_polls(3)  # three more polls
        assert list(server.states("retrieval")) == [v1]
        assert server.predict("retrieval", USER).model_spec.version.value == v1
        assert "partial" not in server.log


def test_latest_two_policy_serves_both_versions(store, tmp_path):
    base = store / "retrieval"
    v1 = sp.versions(base)[-1]
    v2 = v1 + 1
    sp.publish_copy(base, v1, v2)
    config = sp.write_config(
        tmp_path / "models.config", [{"name": "retrieval", "base_path": base, "policy": "latest { num_versions: 2 }"}]
    )
    with sp.ServerProcess(f"--model_config_file={config}") as server:
        # Ports open once the latest is AVAILABLE (as TF Serving); the older one follows.
        states = server.wait_until(
            lambda: (
                (s := server.states("retrieval"))
                and {v: x[0] for v, x in s.items()} == {v1: "AVAILABLE", v2: "AVAILABLE"}
                and s
            ),
            what="both versions available",
        )
        assert list(states) == [v2, v1], "newest first"
        assert server.predict("retrieval", USER).model_spec.version.value == v2
        assert server.predict("retrieval", USER, version=v1).model_spec.version.value == v1


def test_specific_policy_serves_only_listed_version(store, tmp_path):
    base = store / "retrieval"
    v1 = sp.versions(base)[-1]
    sp.publish_copy(base, v1, v1 + 1)
    config = sp.write_config(
        tmp_path / "models.config",
        [{"name": "retrieval", "base_path": base, "policy": f"specific {{ versions: {v1} }}"}],
    )
    with sp.ServerProcess(f"--model_config_file={config}") as server:
        assert list(server.states("retrieval")) == [v1]
        assert server.predict("retrieval", USER).model_spec.version.value == v1


def test_labels_route_to_their_versions(store, tmp_path):
    base = store / "retrieval"
    v1 = sp.versions(base)[-1]
    v2 = v1 + 1
    sp.publish_copy(base, v1, v2)
    config = sp.write_config(
        tmp_path / "models.config",
        [{"name": "retrieval", "base_path": base, "policy": "all {}", "labels": {"stable": v1, "canary": v2}}],
    )
    with sp.ServerProcess(
        f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models=true"
    ) as server:
        server.wait_until(
            lambda: (
                {x[0] for x in server.states("retrieval").values()} == {"AVAILABLE"}
                and len(server.states("retrieval")) == 2
            ),
            what="both versions available",
        )
        assert server.predict("retrieval", USER, label="stable").model_spec.version.value == v1
        assert server.predict("retrieval", USER, label="canary").model_spec.version.value == v2
        [entry] = server.status("retrieval", label="stable").model_version_status
        assert entry.version == v1
        with pytest.raises(grpc.RpcError) as err:
            server.predict("retrieval", USER, label="beta")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_label_at_start_needs_allow_flag_as_in_tf_serving(store, tmp_path):
    base = store / "retrieval"
    v1 = sp.versions(base)[-1]
    config = sp.write_config(
        tmp_path / "models.config", [{"name": "retrieval", "base_path": base, "labels": {"stable": v1}}]
    )
    server = sp.ServerProcess(f"--model_config_file={config}").start(wait_ready=False)
    try:
        assert server.wait_exit(120) != 0
        assert (
            f"Request to assign label to version {v1} of model retrieval, which is not currently available for "
            "inference"
        ) in server.log
    finally:
        server.stop()


def test_config_reload_adds_a_model_within_the_poll_interval_and_bad_file_keeps_old(store, tmp_path):
    config = tmp_path / "models.config"
    retrieval = {"name": "retrieval", "base_path": store / "retrieval"}
    sp.write_config(config, [retrieval])
    with sp.ServerProcess(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1") as server:
        with pytest.raises(grpc.RpcError):
            server.status("similar_movies")
        # A file that does not parse: logged, the old config stays.
        config.write_text("model_config_list { config { name: ")
        server.wait_for_line("Failed to read ModelServerConfig file", timeout=10)
        assert server.predict("retrieval", USER).outputs
        # A good file adding a model: picked up on the next poll.
        sp.write_config(config, [retrieval, {"name": "similar_movies", "base_path": store / "similar_movies"}])
        server.wait_until(
            lambda: "AVAILABLE" in {s[0] for s in server.states("similar_movies").values()},
            timeout=20,
            interval=0.05,
            what="similar_movies available",
        )
        assert server.predict("similar_movies", {"movie_title": [b"x"]}).outputs
        assert server.predict("retrieval", USER).outputs


def test_handle_reload_config_request_adds_and_rejects(store):
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    with sp.ServerProcess("--model_name=retrieval", f"--model_base_path={store / 'retrieval'}") as server:
        stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
        request = model_management_pb2.ReloadConfigRequest()
        for name in ("retrieval", "similar_movies"):
            model = request.config.model_config_list.config.add()
            model.name, model.base_path, model.model_platform = name, str(store / name), "tensorflow"
        response = stub.HandleReloadConfigRequest(request, timeout=120)
        assert response.status.error_code == 0
        # ReloadConfig returns once new models are available.
        assert "AVAILABLE" in {s[0] for s in server.states("similar_movies").values()}
        duplicate = model_management_pb2.ReloadConfigRequest()
        duplicate.config.CopyFrom(request.config)
        duplicate.config.model_config_list.config.add().CopyFrom(request.config.model_config_list.config[0])
        with pytest.raises(grpc.RpcError) as err:
            stub.HandleReloadConfigRequest(duplicate, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Illegal to list model retrieval multiple times in config list" in err.value.details()
        # Removing a model from the config unloads it.
        only = model_management_pb2.ReloadConfigRequest()
        only.config.model_config_list.config.add().CopyFrom(request.config.model_config_list.config[0])
        stub.HandleReloadConfigRequest(only, timeout=60)
        server.wait_until(
            lambda: {s[0] for s in server.states("similar_movies").values()} == {"END"}, what="similar_movies unloaded"
        )
        with pytest.raises(grpc.RpcError) as err:
            server.predict("similar_movies", {"movie_title": [b"x"]})
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_ports_open_only_once_the_model_is_available(store, tmp_path):
    empty = tmp_path / "empty" / "retrieval"
    empty.mkdir(parents=True)
    server = sp.ServerProcess("--model_name=retrieval", f"--model_base_path={empty}").start(wait_ready=False)
    try:
        server.wait_for_line("No versions of servable retrieval found", timeout=60)
        assert sp.READY_LINE not in server.log
        with pytest.raises(grpc.RpcError) as err:
            server.status("retrieval", timeout=2)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        version = sp.versions(store / "retrieval")[-1]
        shutil.copytree(store / "retrieval" / str(version), empty / "_incoming")
        os.rename(empty / "_incoming", empty / str(version))
        line = server.wait_for_line(sp.READY_LINE, timeout=60)
        assert f"127.0.0.1:{server.port}" in line
        server.reconnect()
        assert server.predict("retrieval", USER).model_spec.version.value == version
    finally:
        server.stop()


def test_start_aborts_when_the_only_version_fails_to_load(tmp_path):
    base = tmp_path / "retrieval"
    (base / "5").mkdir(parents=True)
    (base / "5" / "saved_model.pb").write_bytes(b"garbage")
    server = sp.ServerProcess("--model_name=retrieval", f"--model_base_path={base}", "--max_num_load_retries=0").start(
        wait_ready=False
    )
    try:
        assert server.wait_exit(120) != 0
        assert "1 model(s) did not become available" in server.log
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_and_exits_zero(store):
    server = sp.ServerProcess("--model_name=retrieval", f"--model_base_path={store / 'retrieval'}").start()
    try:
        big = {"user_id": [str(i % 80).encode() for i in range(200_000)]}  # takes > 1 s to answer
        result: dict = {}

        def slow_call():
            try:
                result["response"] = server.predict("retrieval", big, output_filter=["scores"], timeout=120)
            except grpc.RpcError as exc:
                result["error"] = f"{exc.code()}: {exc.details()}"

        with LoadGenerator(server) as load:
            server.wait_until(lambda: len(load.versions) > 50, what="load running")
            caller = threading.Thread(target=slow_call)
            caller.start()
            time.sleep(0.5)  # the slow call is on the server now
            server.proc.send_signal(15)
            code = server.wait_exit(120)
            caller.join(60)
        assert code == 0
        assert "Server stopped" in server.log
        assert "error" not in result, result.get("error")
        assert result["response"].outputs["scores"].tensor_shape.dim[0].size == 200_000
        # Calls that arrived after shutdown began were refused (UNAVAILABLE, or CANCELLED by the stopping
        # gRPC server); none failed any other way.
        refused = {e.split(":")[0] for e in load.errors}
        assert refused <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}, load.errors[:5]
    finally:
        server.stop()


def test_stop_during_start_up_leaves_no_port_open(tmp_path, monkeypatch):
    """SIGTERM while the models load: start() ends with CANCELLED and opens no port, rather than serving on
    after stop() has run (the process would then exit with its ports still draining)."""
    import socket

    import tiny_models as tiny
    from serving.core import ServerCore
    from serving.errors import StatusError
    from serving.flags import ServerOptions
    from serving.server import ModelServer

    base = tmp_path / "m"
    base.mkdir()
    tiny.publish(str(base), 1, tiny.build(str(tmp_path / "source")))
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    monkeypatch.setenv("SERVING_HOST", "127.0.0.1")
    server = ModelServer(
        ServerOptions(model_name="m", model_base_path=str(base), port=ports[0], rest_api_port=ports[1])
    )
    reload_config = ServerCore.reload_config

    def reload_then_signal(core, config, **kwargs):
        reload_config(core, config, **kwargs)
        stopper = threading.Thread(target=server.stop)  # as the SIGTERM handler does
        stopper.start()
        stopper.join(60)

    monkeypatch.setattr(ServerCore, "reload_config", reload_then_signal)
    try:
        with pytest.raises(StatusError) as err:
            server.start()
        assert err.value.code == "CANCELLED"
        assert server.grpc is None and server.rest is None
        for port in ports:
            with pytest.raises(OSError):  # noqa: PT011  refused or reset: any socket error means the port is closed
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if server.grpc is not None:
            server.grpc.stop(grace=0)
        if server.rest is not None:
            server.rest.stop()


def test_sigterm_during_start_up_exits_zero_without_opening_ports(store):
    server = sp.ServerProcess("--model_name=retrieval", f"--model_base_path={store / 'retrieval'}")
    server.start(wait_ready=False)
    try:
        server.wait_for_line("Building single TensorFlow model file config")  # start() began, handler installed
        server.proc.send_signal(15)
        assert server.wait_exit(120) == 0
        assert sp.READY_LINE not in server.log
        assert "Failed to start server" not in server.log
    finally:
        server.stop()
