"""A small in-memory server core (``serving.service.ServingCore``) for testing the transports on their own.

Models:
- ``retrieval`` versions 1 and 2 (labels ``stable`` -> 1, ``canary`` -> 2), signatures ``serving_default``
  (``user_id`` DT_STRING [-1] -> ``movie_titles`` DT_STRING [-1, K], ``scores`` DT_FLOAT [-1, K]) and
  ``exclude_seen`` (adds ``exclude_titles`` DT_STRING [-1, -1]); version 3 failed to load.
- ``typed`` version 7: ``serving_default`` echoes inputs of several dtypes (``f`` float, ``d`` double, ``i``
  int32, ``l`` int64, ``b`` bool, ``s`` string) as outputs ``f_out`` ... and ``s_bytes``; ``single`` has one
  input ``x`` DT_FLOAT and one output ``y`` = 2x.
- ``slow`` version 1: like retrieval, but each predict takes ``slow_seconds``, or, while a test has set
  ``slow_gate`` (a ``threading.Event``), until the gate opens; ``slow_running`` counts the slow calls in
  flight (``slow_peak``: the most at once) and :meth:`FakeCore.wait_slow_running` waits for a count.
- ``broken`` version 1: predict raises RuntimeError (a bug, not a StatusError).
- ``flipping`` versions 1 and 2: the latest version alternates on every resolution, as if a swap happened
  between any two; version 1's ``serving_default`` input is ``user_id``, version 2's is ``user``, so a request
  parsed against one version and run on the other fails.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass

import numpy as np

from serving.bundle import DEFAULT_SIGNATURE
from serving.dtypes import DT_BOOL, DT_DOUBLE, DT_FLOAT, DT_INT32, DT_INT64, DT_STRING
from serving.errors import StatusError

K = 3


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def _signature(inputs: dict, outputs: dict):
    from tensorflow.core.protobuf import meta_graph_pb2

    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for group, spec in ((sig.inputs, inputs), (sig.outputs, outputs)):
        for alias, (dtype, dims) in spec.items():
            info = group[alias]
            info.name = f"{alias}:0"
            info.dtype = dtype
            for d in dims:
                info.tensor_shape.dim.add(size=d)
    return sig


def _retrieval_signatures():
    outputs = {"movie_titles": (DT_STRING, [-1, K]), "scores": (DT_FLOAT, [-1, K])}
    return {
        "serving_default": _signature({"user_id": (DT_STRING, [-1])}, outputs),
        "exclude_seen": _signature({"user_id": (DT_STRING, [-1]), "exclude_titles": (DT_STRING, [-1, -1])}, outputs),
    }


def _typed_signatures():
    inputs = {
        "f": (DT_FLOAT, [-1]),
        "d": (DT_DOUBLE, [-1]),
        "i": (DT_INT32, [-1]),
        "l": (DT_INT64, [-1]),
        "b": (DT_BOOL, [-1]),
        "s": (DT_STRING, [-1]),
    }
    outputs = {f"{k}_out": v for k, v in inputs.items() if k != "s"}
    outputs["s_bytes"] = inputs["s"]
    return {
        "serving_default": _signature(inputs, outputs),
        "single": _signature({"x": (DT_FLOAT, [-1])}, {"y": (DT_FLOAT, [-1])}),
    }


def recommend(user_ids: np.ndarray, bias: float = 0.0) -> dict[str, np.ndarray]:
    titles = np.array(
        [[f"{u.decode()}-movie-{i}".encode() for i in range(K)] for u in user_ids.tolist()], dtype=object
    ).reshape(len(user_ids), K)
    scores = np.array(
        [[len(u) + bias - 0.25 * i for i in range(K)] for u in user_ids.tolist()], dtype=np.float32
    ).reshape(len(user_ids), K)
    return {"movie_titles": titles, "scores": scores}


class FakeCore:
    def __init__(self, slow_seconds: float = 0.5) -> None:
        self.slow_seconds = slow_seconds
        self.slow_gate: threading.Event | None = None
        self.slow_running = self.slow_peak = 0
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self._slow_changed = threading.Condition(self._lock)
        retrieval = _retrieval_signatures()
        self._signatures = {
            "retrieval": {1: retrieval, 2: retrieval},
            "typed": {7: _typed_signatures()},
            "slow": {1: retrieval},
            "broken": {1: retrieval},
            "flipping": {
                1: retrieval,
                2: {
                    "serving_default": _signature(
                        {"user": (DT_STRING, [-1])},
                        {"movie_titles": (DT_STRING, [-1, K]), "scores": (DT_FLOAT, [-1, K])},
                    )
                },
            },
        }
        self._flips = itertools.cycle([1, 2])
        self._labels = {"retrieval": {"stable": 1, "canary": 2}}
        self._failed = {"retrieval": {3: ("NOT_FOUND", "Failed to load SavedModel: no saved_model.pb")}}

    # ------------------------------------------------------------------ serving.service.ServingCore
    def _resolve(self, model_name: str, version: int | None, label: str | None) -> int:
        if label is not None:
            try:
                version = self._labels[model_name][label]
            except KeyError:
                raise StatusError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}") from None
        versions = self._signatures.get(model_name)
        if versions is None or (version is not None and version not in versions):
            request = f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"
            raise StatusError("NOT_FOUND", f"Servable not found for request: {request}")
        if model_name == "flipping" and version is None:
            return next(self._flips)
        return max(versions) if version is None else version

    @contextlib.contextmanager
    def servable(self, model_name, *, version=None, label=None):
        yield _Servable(self, model_name, self._resolve(model_name, version, label))

    def wait_slow_running(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` slow calls are in flight at once (AssertionError after ``timeout`` seconds)."""
        with self._slow_changed:
            assert self._slow_changed.wait_for(lambda: self.slow_running == count, timeout), self.slow_running

    def _slow(self) -> None:
        with self._slow_changed:
            self.slow_running += 1
            self.slow_peak = max(self.slow_peak, self.slow_running)
            self._slow_changed.notify_all()
        try:
            gate = self.slow_gate
            if gate is not None:
                assert gate.wait(60), "the test never opened the slow gate"
            else:
                time.sleep(self.slow_seconds)
        finally:
            with self._slow_changed:
                self.slow_running -= 1
                self._slow_changed.notify_all()

    def _run(self, model_name, v, signature_name, inputs):
        name = signature_name or DEFAULT_SIGNATURE
        signature = self._signatures[model_name][v].get(name)
        if signature is None:
            raise StatusError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        if sorted(inputs) != sorted(signature.inputs):
            raise StatusError("INVALID_ARGUMENT", f"input size does not match signature: {sorted(inputs)}")
        with self._lock:
            self.calls.append({"model": model_name, "version": v, "signature": name, "inputs": dict(inputs)})
        if model_name == "broken":
            raise RuntimeError("the fake model is broken")
        if model_name == "slow":
            self._slow()
        if model_name == "typed":
            if name == "single":
                return v, {"y": np.asarray(inputs["x"], dtype=np.float32) * 2}
            out = {f"{k}_out": inputs[k] for k in ("f", "d", "i", "l", "b")}
            out["s_bytes"] = inputs["s"]
            return v, out
        return v, recommend(inputs["user" if model_name == "flipping" and v == 2 else "user_id"], bias=float(v))

    def model_status(self, model_name, *, version=None, label=None):
        if label is not None:
            version = self._resolve(model_name, None, label)
        known = {v: VersionStatus(v, "AVAILABLE") for v in self._signatures.get(model_name, {})}
        for v, (code, message) in self._failed.get(model_name, {}).items():
            known[v] = VersionStatus(v, "END", code, message)
        if version is not None:
            if version not in known:
                raise StatusError("NOT_FOUND", f"Could not find version {version} of model {model_name}")
            return [known[version]]
        if not known:
            raise StatusError("NOT_FOUND", f"Could not find any versions of model {model_name}")
        return [known[v] for v in sorted(known, reverse=True)]

    def reload_config(self, config) -> None:
        raise StatusError("UNIMPLEMENTED", "FakeCore has a fixed config")

    def model_names(self):
        return sorted(self._signatures)

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class _Servable:
    core: FakeCore
    model_name: str
    version: int

    @property
    def signature_defs(self):
        return self.core._signatures[self.model_name][self.version]

    def run(self, signature_name, inputs, *, output_filter=(), timeout_ms=None):
        return self.core._run(self.model_name, self.version, signature_name, inputs)[1]
