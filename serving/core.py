"""Model lifecycle as TF Serving's ServerCore runs it: sources, version policy, availability-preserving swaps.

One manager thread per core does what TF Serving's ``FileSystemStoragePathSource`` and
``AspiredVersionsManager`` do together:

- every ``file_system_poll_wait_seconds`` it lists each model's base path; children whose names parse as
  64-bit integers are versions, anything else (a staging folder) is ignored;
- the model's version policy (``latest { num_versions }``, ``all``, ``specific { versions }``) picks the
  *aspired* versions;
- ``AvailabilityPreservingPolicy`` decides one action at a time: unload the lowest un-aspired AVAILABLE
  version only when an aspired version is AVAILABLE (or nothing is aspired, or several un-aspired versions
  serve), otherwise load the highest new aspired version. So a new version is loaded and warmed before
  the old one goes, and a version that fails to load (state END with its error) leaves the old one serving;
- a load is retried ``max_num_load_retries`` times, ``load_retry_interval_micros`` apart, as TF Serving does
  (a version picked up half-copied usually loads on retry).

Requests take a reference on the version they resolve to; an unloaded version is closed only when its
last request finishes. Version labels follow ``ServerCore::UpdateModelVersionLabelMap``.

The decisions are pure functions, unit-tested without a thread or a file system: :func:`aspired_versions`
(the version policy applied to what is on disk) and :func:`next_action` (AvailabilityPreservingPolicy's one
step). The manager thread lists directories (:func:`version_dirs`) and loads or closes SavedModels with the
lock released; under the lock it only reads and writes the in-memory state that requests also read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.bundle import BundleError, SavedModelBundle
from serving.errors import StatusError

if TYPE_CHECKING:
    from serving.batching import BatchingOptions

logger = logging.getLogger(__name__)

_VERSION_NAME = re.compile(r"^[0-9]+$")
_INT64_MAX = 2**63 - 1


class VersionState(str, Enum):
    """A version's state; the values are TF Serving's names (``ModelVersionStatus.State``, REST's JSON)."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"

    def __str__(self) -> str:
        return self.value


START, LOADING, AVAILABLE, UNLOADING, END = VersionState


@dataclass(frozen=True)
class VersionStatus:
    """One version's state as GetModelStatus reports it."""

    version: int
    state: VersionState  # a str: "START" "LOADING" "AVAILABLE" "UNLOADING" "END"
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class CoreOptions:
    """ServerCore settings; names follow tensorflow_model_server's flags."""

    file_system_poll_wait_seconds: float = 1.0
    enable_model_warmup: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    saved_model_tags: tuple[str, ...] = ("serve",)
    session_config: object = None  # tf.compat.v1.ConfigProto or None
    batching: BatchingOptions | None = None  # --enable_batching

    def __post_init__(self) -> None:
        if self.max_num_load_retries < 0:
            raise ValueError(f"max_num_load_retries must be >= 0 (got {self.max_num_load_retries})")
        if not self.saved_model_tags:
            raise ValueError("saved_model_tags must name at least one tag (e.g. 'serve')")


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


def version_dirs(base_path: str) -> dict[int, str]:
    """{version: directory name} under ``base_path``: children named by a 64-bit integer; others ignored.

    The name keeps its own spelling (``00000123`` is version 123); of two spellings of one number the
    first listed wins."""
    found: dict[int, str] = {}
    for entry in os.scandir(base_path):
        if _VERSION_NAME.match(entry.name) and entry.is_dir():
            number = int(entry.name)
            if number <= _INT64_MAX:
                found.setdefault(number, entry.name)
    return found


def list_versions(base_path: str) -> list[int]:
    """Version numbers under ``base_path`` (see :func:`version_dirs`), ascending."""
    return sorted(version_dirs(base_path))


def aspired_versions(policy, on_disk: Iterable[int]) -> set[int]:
    """Apply a ``FileSystemStoragePathSourceConfig.ServableVersionPolicy`` to the versions found."""
    choice = policy.WhichOneof("policy_choice")
    on_disk = sorted(on_disk)
    if choice == "all":
        return set(on_disk)
    if choice == "specific":
        return set(on_disk) & set(policy.specific.versions)
    num = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return set(on_disk[-num:])


@dataclass(frozen=True)
class Action:
    """What the manager does next for one model: ``load`` or ``unload`` one ``version``."""

    kind: str  # "load" | "unload"
    version: int


def next_action(
    aspired: set[int], states: Mapping[int, VersionState], failed: frozenset[int] | set[int] = frozenset()
) -> Action | None:
    """One step of TF Serving's ``AvailabilityPreservingPolicy``, as a pure function.

    ``states`` holds the state of every version the manager knows; ``failed`` the END versions whose load
    failed and that are not to be tried again. Unload the lowest un-aspired AVAILABLE version when an aspired
    version serves, or nothing is aspired, or more than one un-aspired version serves; otherwise load the
    highest aspired version not yet tried (or unloaded before, and aspired again); else nothing.
    """
    live = {v: s for v, s in states.items() if s != END}
    aspired_serving = any(s == AVAILABLE for v, s in live.items() if v in aspired)
    unaspired_serving = sorted(v for v, s in live.items() if v not in aspired and s == AVAILABLE)
    if unaspired_serving and (not aspired or aspired_serving or len(unaspired_serving) > 1):
        return Action("unload", unaspired_serving[0])
    new = [v for v in aspired if v not in states or (states[v] == END and v not in failed)]
    if new:
        return Action("load", max(new))
    return None


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


class ServerCore:
    """The models a server serves, their versions and labels; thread-safe."""

    def __init__(self, options: CoreOptions = CoreOptions(), *, metrics=None) -> None:
        self.options = options
        self.metrics = metrics
        self._batch_scheduler = None  # TF Serving's SharedBatchScheduler: one for every model of the server
        if options.batching is not None:
            from serving.batching import BatchScheduler

            self._batch_scheduler = BatchScheduler(options.batching)
        self._models: dict[str, _Model] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._config = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._config_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-core-manager", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ requests
    @contextlib.contextmanager
    def servable(self, model_name: str, *, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """The resolved version, held (not unloaded) until the block ends: a request that reads the signature
        and then runs it sees one version even if a swap happens in between."""
        held = self._acquire(model_name, version, label)
        try:
            assert held.bundle is not None  # _acquire returns AVAILABLE versions only: loaded
            yield Servable(held.version, held.bundle)
        finally:
            self._release(held)

    def predict(
        self,
        model_name: str,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_ms: float | None = None,
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Run a signature on the resolved version; ``timeout_ms`` is the time left (see SavedModelBundle.run)."""
        with self.servable(model_name, version=version, label=label) as held:
            return held.version, held.run(signature_name, inputs, output_filter=output_filter, timeout_ms=timeout_ms)

    def signature_defs(
        self, model_name: str, *, version: int | None = None, label: str | None = None
    ) -> tuple[int, dict]:
        with self.servable(model_name, version=version, label=label) as held:
            return held.version, dict(held.signature_defs)

    def model_status(
        self, model_name: str, *, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        with self._lock:
            if label is not None:
                version = self._label_version(model_name, label)
            model = self._models.get(model_name)
            known = model.versions if model is not None else {}
            if version is not None:
                if version not in known:
                    raise StatusError("NOT_FOUND", f"Could not find version {version} of model {model_name}")
                return [known[version].status()]
            if not known:
                raise StatusError("NOT_FOUND", f"Could not find any versions of model {model_name}")
            return [known[v].status() for v in sorted(known, reverse=True)]

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(name for name, model in self._models.items() if not model.removed)

    def labels(self, model_name: str) -> dict[str, int]:
        with self._lock:
            return dict(self._labels.get(model_name, {}))

    @property
    def config(self):
        with self._lock:
            return self._config

    def _label_version(self, model_name: str, label: str) -> int:
        try:
            return self._labels[model_name][label]
        except KeyError:
            raise StatusError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}") from None

    def _acquire(self, model_name: str, version: int | None, label: str | None) -> _Version:
        if not model_name:
            raise StatusError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        if version is not None and label is not None:
            raise StatusError("INVALID_ARGUMENT", "Specify at most one of version and version label")
        with self._lock:
            if label is not None:
                version = self._label_version(model_name, label)
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

    def _release(self, servable: _Version) -> None:
        close = None
        with self._lock:
            servable.refs -= 1
            if servable.refs == 0 and servable.state == UNLOADING:
                close, servable.bundle = servable.bundle, None
        if close is not None:
            self._finish_unload(servable, close)

    # ------------------------------------------------------------------ config
    def reload_config(self, config, *, wait: bool = True) -> None:
        """Adopt a ``ModelServerConfig``, as ``ServerCore::ReloadConfig``; waits for newly added models.

        Invalid configs raise StatusError and leave the current config in place. A newly added model that
        fails to become available raises UNKNOWN ("... model(s) did not become available: ...").
        """
        with self._config_lock:
            case = config.WhichOneof("config")
            if case is None:
                logger.info("Taking no action for empty config.")
                return
            if case != "model_config_list":
                raise StatusError(
                    "FAILED_PRECONDITION",
                    "Cannot transition to requested config. It is only legal "
                    "to transition from one ModelConfigList to another.",
                )
            configs = list(config.model_config_list.config)
            self._validate(configs)
            with self._lock:
                labels = self._new_label_map(configs)
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
                self._labels = labels
                self._config = config
            self._wake.set()
            if wait and new_names:
                self._wait_until_available(new_names)
            logger.info("Finished reloading config")

    def _validate(self, configs) -> None:
        names: set[str] = set()
        for c in configs:
            if c.name in names:
                raise StatusError("INVALID_ARGUMENT", f"Illegal to list model {c.name} multiple times in config list")
            names.add(c.name)
            if not c.name:
                raise StatusError("INVALID_ARGUMENT", "A model config has an empty name")
        for c in configs:
            if not os.path.isabs(c.base_path) and "://" not in c.base_path:
                raise StatusError(
                    "INVALID_ARGUMENT",
                    f"Expected model {c.name} to have an absolute path or URI; got base_path()={c.base_path}",
                )
            if "://" in c.base_path:
                raise StatusError(
                    "UNIMPLEMENTED",
                    f"Model {c.name}: only local file system base paths are "
                    f"supported by this server (got {c.base_path})",
                )
            platform = c.model_platform
            if c.model_type:  # deprecated ModelType enum: 1 = TENSORFLOW
                if platform:
                    raise StatusError(
                        "INVALID_ARGUMENT",
                        "Illegal setting both ModelServerConfig::model_type "
                        "(deprecated) and ModelServerConfig::model_platform.",
                    )
                platform = "tensorflow" if c.model_type == 1 else ""
            if not platform:
                raise StatusError(
                    "INVALID_ARGUMENT",
                    "Illegal setting neither ModelServerConfig::model_type "
                    "(deprecated) nor ModelServerConfig::model_platform.",
                )
            if platform != "tensorflow":
                raise StatusError("INVALID_ARGUMENT", f"Model {c.name} requests unsupported platform {platform}")

    def _new_label_map(self, configs) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        for c in configs:
            model = self._models.get(c.name)
            for label, version in c.version_labels.items():
                allow = False
                if self.options.allow_version_labels_for_unavailable_models:
                    existing = self._labels.get(c.name, {}).get(label)
                    allow = existing is None or existing == version
                servable = model.versions.get(version) if model is not None and not model.removed else None
                if not allow and (servable is None or servable.state != AVAILABLE):
                    raise StatusError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model "
                        f"{c.name}, which is not currently available for inference",
                    )
                labels.setdefault(c.name, {})[label] = version
        return labels

    def _wait_until_available(self, names: Sequence[str], timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
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
                self._changed.wait(timeout=min(remaining, 1.0) if remaining is not None else 1.0)
        if failed:
            parts = []
            for model in failed:
                for v in sorted(model.aspired, reverse=True):
                    s = model.versions[v]
                    parts.append(f"{{name: {model.name} version: {v} due to error: {s.error_code}: {s.error_message}}}")
            raise StatusError("UNKNOWN", f"{len(failed)} model(s) did not become available: {{{', '.join(parts)}}}")

    # ------------------------------------------------------------------ manager thread
    def _run(self) -> None:
        interval = self.options.file_system_poll_wait_seconds
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._poll_and_manage(poll=interval >= 0)
            except Exception:  # never let the manager die; the next tick retries
                logger.exception("model manager tick failed")
            if interval > 0:
                self._wake.wait(interval)
            else:  # 0: poll once per config change; negative: never poll
                self._wake.wait()

    def _poll_and_manage(self, *, poll: bool) -> None:
        with self._lock:
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
            on_disk = version_dirs(base)
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
        with self._lock:
            if on_disk is None:
                return  # an unreadable base path changes nothing
            model.aspired = aspired_versions(model.config.model_version_policy, on_disk)
            model.dirs = on_disk
            model.polled = True
            for number, servable in model.versions.items():
                if servable.state == END and number not in model.aspired:
                    servable.reloadable = True
            self._changed.notify_all()

    def _warn(self, model: _Model, message: str) -> None:
        now = time.monotonic()
        if now - model.last_warning >= 30:
            model.last_warning = now
            logger.warning(message)

    def _next_action(self, model: _Model) -> bool:
        """One step of AvailabilityPreservingPolicy for ``model``; False when there is nothing to do."""
        with self._lock:
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
                self._changed.notify_all()
        if action.kind == "unload":
            if closing is not None:  # outside the lock: requests must not wait for a Session to close
                self._finish_unload(unloading, closing)
        else:
            self._load(servable)
        return True

    def _load(self, servable: _Version) -> None:
        logger.info("Loading servable version {name: %s version: %d}", servable.model, servable.version)
        with self._lock:
            servable.state = LOADING
            self._changed.notify_all()
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
                    batch_scheduler=self._batch_scheduler,
                )
            except StatusError as exc:
                error = exc
            except Exception as exc:  # anything else a broken SavedModel can raise
                error = BundleError("UNKNOWN", f"{type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    servable.bundle, servable.state = bundle, AVAILABLE
                    servable.error_code, servable.error_message = "OK", ""
                    self._changed.notify_all()
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
        with self._lock:
            servable.state, servable.error_code, servable.error_message = END, error.code, error.message
            self._changed.notify_all()

    def _start_unload(self, servable: _Version) -> SavedModelBundle | None:
        """Under the lock: stop routing to ``servable``. Returns its bundle when no request holds it, for the
        caller to close with :meth:`_finish_unload` once the lock is released; else its last request does."""
        logger.info("Unloading servable version {name: %s version: %d}", servable.model, servable.version)
        servable.state = UNLOADING
        self._changed.notify_all()
        if servable.refs == 0:
            bundle, servable.bundle = servable.bundle, None
            return bundle
        return None

    def _finish_unload(self, servable: _Version, bundle: SavedModelBundle | None) -> None:
        if bundle is not None:
            bundle.close()
        with self._lock:
            servable.state = END
            self._changed.notify_all()
        logger.info("Done unloading servable version {name: %s version: %d}", servable.model, servable.version)

    def wait_for_state(self, model_name: str, version: int, states: Sequence[str], timeout: float) -> VersionStatus:
        """Block until ``version`` of ``model_name`` is in one of ``states`` (for tests and tools)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                model = self._models.get(model_name)
                servable = model.versions.get(version) if model else None
                if servable is not None and servable.state in states:
                    return servable.status()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{model_name} version {version} did not reach {list(states)}")
                self._changed.wait(remaining)

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop polling and unload every version (each after its in-flight requests finish)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)
        with self._lock:
            closing = [
                (servable, self._start_unload(servable))
                for model in self._models.values()
                for servable in model.versions.values()
                if servable.state == AVAILABLE
            ]
        for servable, bundle in closing:
            if bundle is not None:
                self._finish_unload(servable, bundle)
        with self._lock:
            deadline = time.monotonic() + 30
            while any(s.state == UNLOADING for m in self._models.values() for s in m.versions.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("requests still in flight at shutdown; closing anyway")
                    break
                self._changed.wait(remaining)
        if self._batch_scheduler is not None:  # after the versions: their queued calls have been answered
            self._batch_scheduler.stop()
