"""Loading, serving and unloading versions, as TF Serving's AspiredVersionsManager and its load threads.

As ``core/aspired_versions_manager.cc`` over ``core/basic_manager.cc``: one manager thread per server
polls every model's base path each ``file_system_poll_wait_seconds``
(:mod:`serving.file_system_storage_path_source` says which versions are aspired), then applies
:func:`serving.availability_preserving_policy.next_action` one step at a time: load (and warm) a new
version, unload an old one. A load is retried ``max_num_load_retries`` times,
``load_retry_interval_micros`` apart (a version picked up half-copied usually loads on retry); loads run one
at a time on the manager thread (TF Serving's default ``--num_load_threads=0`` does the same).

Requests take a reference on the version they resolve to (:meth:`AspiredVersionsManager.acquire`); an
unloaded version is closed only when its last request finishes. The manager thread lists directories and
loads or closes SavedModels with the lock released; under the lock it only reads and writes the in-memory
state that requests also read. :attr:`AspiredVersionsManager.poll_count` counts completed polls, so that a
caller can wait for "N more polls" (:meth:`AspiredVersionsManager.wait_for_polls`) instead of a fixed time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving import file_system_storage_path_source as source
from serving.availability_preserving_policy import AVAILABLE, END, LOADING, START, UNLOADING, VersionState, next_action
from serving.bundle import BundleError, SavedModelBundle
from serving.errors import StatusError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionStatus:
    """One version's state as GetModelStatus reports it."""

    version: int
    state: VersionState  # a str: "START" "LOADING" "AVAILABLE" "UNLOADING" "END"
    error_code: str = "OK"
    error_message: str = ""


@dataclass
class _Version:
    model: str
    version: int
    path: str
    state: VersionState = START
    error_code: str = "OK"
    error_message: str = ""
    bundle: SavedModelBundle | None = None
    refs: int = 0
    reloadable: bool = False  # a failed version that left the aspired set may load again if it returns

    def status(self) -> VersionStatus:
        return VersionStatus(self.version, self.state, self.error_code, self.error_message)

    @property
    def failed(self) -> bool:
        """Ended by a load error and not to be loaded again (an unloaded or reloadable version loads again)."""
        return self.state == END and self.error_code != "OK" and not self.reloadable


@dataclass
class _Model:
    config: Any  # model_server_config_pb2.ModelConfig (tensorflow_serving ships no type hints)
    versions: dict[int, _Version] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    dirs: dict[int, str] = field(default_factory=dict)  # version -> its directory's name, from the last poll
    polled: bool = False
    removed: bool = False
    last_warning: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class Servable:
    """One version held for the length of a request (see :meth:`ServerCore.servable`)."""

    version: int
    bundle: SavedModelBundle

    @property
    def signature_defs(self) -> dict:
        return self.bundle.signature_defs

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        *,
        output_filter: Sequence[str] = (),
        timeout_ms: float | None = None,
    ) -> dict[str, np.ndarray]:
        return self.bundle.run(signature_name, inputs, output_filter=list(output_filter), timeout_ms=timeout_ms)


@dataclass(frozen=True)
class LoadOptions:
    """How the manager loads a version (ServerCore's options, from tensorflow_model_server's flags)."""

    file_system_poll_wait_seconds: float = 1.0
    enable_model_warmup: bool = True
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    saved_model_tags: tuple[str, ...] = ("serve",)
    session_config: object = None  # tf.compat.v1.ConfigProto or None
    batch_scheduler: Any = None  # serving.batching.BatchScheduler (--enable_batching) or None


class AspiredVersionsManager:
    """The versions of every model, loaded and unloaded by one manager thread; thread-safe.

    ``lock`` (reentrant) guards the manager's state; :class:`serving.core.ServerCore` holds it too while it
    changes the models and their labels together. ``changed`` is notified on every state change.
    """

    def __init__(self, options: LoadOptions) -> None:
        self.options = options
        self._models: dict[str, _Model] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._polls = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-core-manager", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ models
    def set_models(self, configs: Iterable[Any]) -> list[str]:
        """Serve exactly the models of ``configs`` (``ModelConfig`` protos): add new ones, remove the others,
        update changed ones. Returns the names added (or added back). Takes :attr:`lock` (re-entrant: a caller
        may hold it)."""
        with self.lock:
            new_names = []
            wanted = {c.name: c for c in configs}
            for name, model in self._models.items():
                if name not in wanted and not model.removed:
                    logger.info("Removing model: %s", name)
                    model.removed = True
                    model.aspired = set()
            for name, model_config in wanted.items():
                known = self._models.get(name)
                if known is None:
                    logger.info("Adding model: %s", name)
                    self._models[name] = _Model(model_config)
                    new_names.append(name)
                elif known.removed:  # keep the versions still live: one not yet unloaded must not leak
                    logger.info("Adding model: %s", name)
                    known.config, known.removed, known.polled = model_config, False, False
                    known.versions = {v: s for v, s in known.versions.items() if s.state != END}
                    new_names.append(name)
                elif known.config.SerializeToString(deterministic=True) != model_config.SerializeToString(
                    deterministic=True
                ):
                    logger.info("Updating model: %s", name)
                    known.config = model_config
                    known.polled = False
            return new_names

    def wake(self) -> None:
        """Poll and manage now rather than at the next interval."""
        self._wake.set()

    def is_available(self, model_name: str, version: int) -> bool:
        with self.lock:
            model = self._models.get(model_name)
            servable = model.versions.get(version) if model is not None and not model.removed else None
            return servable is not None and servable.state == AVAILABLE

    def model_names(self) -> list[str]:
        with self.lock:
            return sorted(name for name, model in self._models.items() if not model.removed)

    # ------------------------------------------------------------------ requests
    def model_status(self, model_name: str, version: int | None = None) -> list[VersionStatus]:
        with self.lock:
            model = self._models.get(model_name)
            known = model.versions if model is not None else {}
            if version is not None:
                if version not in known:
                    raise StatusError("NOT_FOUND", f"Could not find version {version} of model {model_name}")
                return [known[version].status()]
            if not known:
                raise StatusError("NOT_FOUND", f"Could not find any versions of model {model_name}")
            return [known[v].status() for v in sorted(known, reverse=True)]

    def acquire(self, model_name: str, version: int | None) -> _Version:
        """Take a reference on ``version`` (None: the newest AVAILABLE one); NOT_FOUND if it does not serve.
        Every acquire is paired with a :meth:`release`."""
        with self.lock:
            model = self._models.get(model_name)
            servable = None
            if model is not None and not model.removed:
                if version is None:
                    ready = [v for v in model.versions.values() if v.state == AVAILABLE]
                    servable = max(ready, key=lambda v: v.version, default=None)
                else:
                    candidate = model.versions.get(version)
                    if candidate is not None and candidate.state == AVAILABLE:
                        servable = candidate
            if servable is None:
                request = f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"
                raise StatusError("NOT_FOUND", f"Servable not found for request: {request}")
            servable.refs += 1
            return servable

    def release(self, servable: _Version) -> None:
        close = None
        with self.lock:
            servable.refs -= 1
            if servable.refs == 0 and servable.state == UNLOADING:
                close, servable.bundle = servable.bundle, None
        if close is not None:
            self._finish_unload(servable, close)

    def wait_until_available(self, names: Sequence[str], timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                pending, failed = [], []
                for name in names:
                    model = self._models.get(name)
                    if model is None or model.removed:
                        continue
                    states = [v.state for v in model.versions.values() if v.version in model.aspired]
                    if any(s == AVAILABLE for s in states):
                        continue
                    if (
                        model.polled
                        and model.aspired
                        and all(model.versions.get(v) is not None and model.versions[v].failed for v in model.aspired)
                    ):
                        failed.append(model)
                    else:
                        pending.append(model)
                if (pending or failed) and self._stopping.is_set():  # a load cut short by stop() is no failure
                    raise StatusError("CANCELLED", "server is stopping")
                if not pending:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise StatusError(
                        "DEADLINE_EXCEEDED",
                        "models did not become available in time: " + ", ".join(m.name for m in pending),
                    )
                self.changed.wait(timeout=min(remaining, 1.0) if remaining is not None else 1.0)
        if failed:
            parts = []
            for model in failed:
                for v in sorted(model.aspired, reverse=True):
                    s = model.versions[v]
                    parts.append(f"{{name: {model.name} version: {v} due to error: {s.error_code}: {s.error_message}}}")
            raise StatusError("UNKNOWN", f"{len(failed)} model(s) did not become available: {{{', '.join(parts)}}}")

    @property
    def poll_count(self) -> int:
        """The number of completed polls (each: every model's base path listed and acted on)."""
        with self.lock:
            return self._polls

    def wait_for_polls(self, count: int, timeout: float) -> int:
        """Block until :attr:`poll_count` reaches ``count``; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self._polls < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"poll {count} did not complete within {timeout} s (at {self._polls})")
                self.changed.wait(remaining)
            return self._polls

    # ------------------------------------------------------------------ manager thread
    def _run(self) -> None:
        interval = self.options.file_system_poll_wait_seconds
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._poll_and_manage(poll=interval >= 0)
            except Exception:  # never let the manager die; the next tick retries
                logger.exception("model manager tick failed")
            with self.lock:
                self._polls += 1
                count, models = self._polls, len(self._models)
                self.changed.notify_all()
            source.log_poll(models, count)
            if interval > 0:
                self._wake.wait(interval)
            else:  # 0: poll once per config change; negative: never poll
                self._wake.wait()

    def _poll_and_manage(self, *, poll: bool) -> None:
        with self.lock:
            models = list(self._models.values())
        for model in models:
            if self._stopping.is_set():
                return
            if poll and not model.removed:
                self._poll(model)
            while not self._stopping.is_set() and self._next_action(model):
                pass

    def _poll(self, model: _Model) -> None:
        base = model.config.base_path
        try:  # outside the lock: a slow or hung file system must not stall requests
            on_disk = source.version_dirs(base)
        except OSError as exc:
            self._warn(
                model,
                f"File system storage path source: Could not find base path {base} for servable "
                f"{model.name} with error {exc.strerror or exc}",
            )
            on_disk = None
        if on_disk is not None and not on_disk:
            self._warn(
                model,
                f"No versions of servable {model.name} found under base path {base}. Did you forget "
                "to name your leaf directory as a number (eg. '/1/')?",
            )
        with self.lock:
            if on_disk is None:
                return  # an unreadable base path changes nothing
            model.aspired = source.aspired_versions(model.config.model_version_policy, on_disk)
            model.dirs = on_disk
            model.polled = True
            for number, servable in model.versions.items():
                if servable.state == END and number not in model.aspired:
                    servable.reloadable = True
            self.changed.notify_all()

    def _warn(self, model: _Model, message: str) -> None:
        now = time.monotonic()
        if now - model.last_warning >= 30:
            model.last_warning = now
            logger.warning(message)

    def _next_action(self, model: _Model) -> bool:
        """One step of AvailabilityPreservingPolicy for ``model``; False when there is nothing to do."""
        with self.lock:
            aspired = model.aspired if not model.removed else set()
            action = next_action(
                aspired,
                {v: s.state for v, s in model.versions.items()},
                {v for v, s in model.versions.items() if s.failed},
            )
            if action is None:
                return False
            if action.kind == "unload":
                unloading = model.versions[action.version]
                closing = self._start_unload(unloading)
            else:
                # A version already tried is not retried while it stays aspired (a failed one stays END).
                # A version that left the aspired set is forgotten, so publishing it again loads it again.
                name = model.dirs.get(action.version, str(action.version))
                servable = _Version(model.name, action.version, os.path.join(model.config.base_path, name))
                model.versions[action.version] = servable
                self.changed.notify_all()
        if action.kind == "unload":
            if closing is not None:  # outside the lock: requests must not wait for a Session to close
                self._finish_unload(unloading, closing)
        else:
            self._load(servable)
        return True

    def _load(self, servable: _Version) -> None:
        logger.info("Loading servable version {name: %s version: %d}", servable.model, servable.version)
        with self.lock:
            servable.state = LOADING
            self.changed.notify_all()
        attempts = self.options.max_num_load_retries + 1
        error: StatusError | None = None
        for attempt in range(attempts):
            if attempt:
                logger.info(
                    "Retrying load of servable {name: %s version: %d} (retry %d of %d)",
                    servable.model,
                    servable.version,
                    attempt,
                    attempts - 1,
                )
                if self._stopping.wait(self.options.load_retry_interval_micros / 1e6):
                    break
            try:
                bundle = SavedModelBundle.load(
                    servable.path,
                    tags=self.options.saved_model_tags,
                    run_warmup=self.options.enable_model_warmup,
                    session_config=self.options.session_config,
                    batch_scheduler=self.options.batch_scheduler,
                )
            except StatusError as exc:
                error = exc
            except Exception as exc:  # anything else a broken SavedModel can raise
                error = BundleError("UNKNOWN", f"{type(exc).__name__}: {exc}")
            else:
                with self.lock:
                    servable.bundle, servable.state = bundle, AVAILABLE
                    servable.error_code, servable.error_message = "OK", ""
                    self.changed.notify_all()
                logger.info(
                    "Successfully loaded servable version {name: %s version: %d}", servable.model, servable.version
                )
                return
            logger.error(
                "Loading servable: {name: %s version: %d} failed: %s: %s",
                servable.model,
                servable.version,
                error.code,
                error.message,
            )
        if error is None:
            error = StatusError("CANCELLED", "server stopped during load")
        with self.lock:
            servable.state, servable.error_code, servable.error_message = END, error.code, error.message
            self.changed.notify_all()

    def _start_unload(self, servable: _Version) -> SavedModelBundle | None:
        """Under the lock: stop routing to ``servable``. Returns its bundle when no request holds it, for the
        caller to close with :meth:`_finish_unload` once the lock is released; else its last request does."""
        logger.info("Unloading servable version {name: %s version: %d}", servable.model, servable.version)
        servable.state = UNLOADING
        self.changed.notify_all()
        if servable.refs == 0:
            bundle, servable.bundle = servable.bundle, None
            return bundle
        return None

    def _finish_unload(self, servable: _Version, bundle: SavedModelBundle | None) -> None:
        if bundle is not None:
            bundle.close()
        with self.lock:
            servable.state = END
            self.changed.notify_all()
        logger.info("Done unloading servable version {name: %s version: %d}", servable.model, servable.version)

    def wait_for_state(self, model_name: str, version: int, states: Sequence[str], timeout: float) -> VersionStatus:
        """Block until ``version`` of ``model_name`` is in one of ``states`` (for tests and tools)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                model = self._models.get(model_name)
                servable = model.versions.get(version) if model else None
                if servable is not None and servable.state in states:
                    return servable.status()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{model_name} version {version} did not reach {list(states)}")
                self.changed.wait(remaining)

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop polling and unload every version (each after its in-flight requests finish)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)
        with self.lock:
            closing = [
                (servable, self._start_unload(servable))
                for model in self._models.values()
                for servable in model.versions.values()
                if servable.state == AVAILABLE
            ]
        for servable, bundle in closing:
            if bundle is not None:
                self._finish_unload(servable, bundle)
        with self.lock:
            deadline = time.monotonic() + 30
            while any(s.state == UNLOADING for m in self._models.values() for s in m.versions.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("requests still in flight at shutdown; closing anyway")
                    break
                self.changed.wait(remaining)
