"""Run ``python -m serving`` as a subprocess on free 127.0.0.1 ports (serving.testing) and talk to it over gRPC."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import grpc
import numpy as np

from serving import testing
from serving.testing import READY_LINE, REST_READY_LINE, ROOT, free_port, server_env  # noqa: F401 (re-exported)

POLL_LINE = re.compile(r"Polled \d+ model\(s\) \(poll (\d+)\)")


class ServerProcess(testing.ServerProcess):
    """serving.testing's harness plus a gRPC channel and the calls the tests make on it. The server logs each
    completed poll of the model store (``TF_CPP_VMODULE=file_system_storage_path_source=1``), so that a test
    can wait for polls (:meth:`wait_for_more_polls`) instead of sleeping."""

    def __init__(self, *flags: str, rest: bool = False) -> None:
        super().__init__(*flags, rest=rest, env={"TF_CPP_VMODULE": "file_system_storage_path_source=1"})
        self._channel = None

    def poll_count(self) -> int:
        """The number of polls the server has logged as completed so far."""
        counts = [int(m.group(1)) for line in list(self.lines) if (m := POLL_LINE.search(line))]
        return max(counts, default=0)

    def wait_for_more_polls(self, more: int, timeout: float = 60.0) -> None:
        """Return once ``more`` polls beyond those logged so far have completed (each lists every base path and
        acts on what it found), so that "nothing changed" is asserted after them, not after a fixed time."""
        self.wait_for_line(f"(poll {self.poll_count() + more})", timeout)

    def stop(self) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        return super().stop()

    # ------------------------------------------------------------------ gRPC
    def reconnect(self) -> None:
        """Drop the channel (a channel that saw a refused connection backs off before retrying)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def channel(self):
        if self._channel is None:
            # A local subchannel pool: a new channel really reconnects (the global pool would hand back a
            # subchannel still backing off from an earlier refused connection).
            self._channel = grpc.insecure_channel(
                f"127.0.0.1:{self.port}",
                options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)],
            )
        return self._channel

    def predict(
        self,
        model: str,
        inputs: dict,
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "",
        output_filter=(),
        timeout: float = 30.0,
    ):
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.model_spec.signature_name = signature
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(make_tensor(value))
        request.output_filter.extend(output_filter)
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict(request, timeout=timeout)

    def status(self, model: str, *, version: int | None = None, label: str | None = None, timeout: float = 30.0):
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        return model_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus(request, timeout=timeout)

    def states(self, model: str) -> dict[int, tuple[str, int, str]]:
        """{version: (state name, error_code, error_message)} from GetModelStatus."""
        from tensorflow_serving.apis import get_model_status_pb2

        names = get_model_status_pb2.ModelVersionStatus.State
        return {
            s.version: (names.Name(s.state), s.status.error_code, s.status.error_message)
            for s in self.status(model).model_version_status
        }

    def wait_until(self, predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except grpc.RpcError as exc:
                last = exc
            time.sleep(interval)
        raise AssertionError(f"{what} not reached in {timeout}s (last: {last}):\n{self.log[-4000:]}")


def make_tensor(value):
    import tensorflow as tf

    if isinstance(value, np.ndarray) and value.dtype.kind != "O":
        return tf.make_tensor_proto(value)
    return tf.make_tensor_proto(np.asarray(value, dtype=object), dtype=tf.string)


def versions(base: Path) -> list[int]:
    return sorted(int(p.name) for p in Path(base).iterdir() if p.name.isdigit())


def publish_copy(base: Path, source_version: int, new_version: int) -> Path:
    """Publish ``new_version`` as a copy of ``source_version``: copy to a non-numeric sibling, then rename."""
    staging = Path(base) / f"_staging-{new_version}"
    shutil.copytree(Path(base) / str(source_version), staging)
    final = Path(base) / str(new_version)
    os.rename(staging, final)
    return final


def write_config(path: Path, models: list[dict]) -> Path:
    """Write a text ModelServerConfig atomically: [{name, base_path, policy?, labels?}]."""
    parts = []
    for m in models:
        entry = [f'name: "{m["name"]}"', f'base_path: "{m["base_path"]}"', 'model_platform: "tensorflow"']
        if "policy" in m:
            entry.append(f"model_version_policy {{ {m['policy']} }}")
        for label, version in m.get("labels", {}).items():
            entry.append(f'version_labels {{ key: "{label}" value: {version} }}')
        parts.append("  config {\n    " + "\n    ".join(entry) + "\n  }")
    text = "model_config_list {\n" + "\n".join(parts) + "\n}\n"
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
