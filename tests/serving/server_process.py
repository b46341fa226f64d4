"""Run ``python -m serving`` as a subprocess on free 127.0.0.1 ports and talk to it over gRPC."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Running gRPC ModelServer at"
REST_READY_LINE = "Exporting HTTP/REST API at:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["SERVING_HOST"] = "127.0.0.1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class ServerProcess:
    """A local model server subprocess; ``start()`` waits for the gRPC port's log line."""

    def __init__(self, *flags: str, rest: bool = False) -> None:
        self.port = free_port()
        self.rest_port = free_port() if rest else 0
        self.args = [sys.executable, "-m", "serving", f"--port={self.port}",
                     f"--rest_api_port={self.rest_port}", *flags]
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._channel = None

    # ------------------------------------------------------------------ process
    def start(self, timeout: float = 120.0, *, wait_ready: bool = True) -> "ServerProcess":
        self.proc = subprocess.Popen(self.args, cwd=str(ROOT), env=server_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._pump, daemon=True).start()
        if wait_ready:
            self.wait_for_line(READY_LINE, timeout)
            if self.rest_port:
                self.wait_for_line(REST_READY_LINE, timeout)
        return self

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the pump drain
                raise AssertionError(f"server exited ({self.proc.returncode}) before {text!r}:\n{self.log[-6000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.log[-6000:]}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)
        return code

    def stop(self) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"server did not stop on SIGTERM:\n{self.log[-4000:]}")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

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
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.port}",
                                                  options=[("grpc.use_local_subchannel_pool", 1),
                                                           ("grpc.max_receive_message_length", 64 << 20)])
        return self._channel

    def predict(self, model: str, inputs: dict, *, version: int | None = None, label: str | None = None,
                signature: str = "", output_filter=(), timeout: float = 30.0):
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
        return {s.version: (names.Name(s.state), s.status.error_code, s.status.error_message)
                for s in self.status(model).model_version_status}

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
