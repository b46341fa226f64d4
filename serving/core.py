"""The models a local server serves, their versions and labels, as TF Serving's ``model_servers/server_core.cc``.

:class:`ServerCore` takes a ``ModelServerConfig`` (``reload_config``: validated as ServerCore validates it,
labels as ``ServerCore::UpdateModelVersionLabelMap``), hands its models to the
:class:`~serving.aspired_versions_manager.AspiredVersionsManager` (polling, the availability-preserving
policy, loads and unloads) and answers what the transports ask of a core
(:class:`serving.service.ServingCore`): a version held for a request, version states.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.aspired_versions_manager import AspiredVersionsManager, LoadOptions, Servable, VersionStatus
from serving.availability_preserving_policy import VersionState
from serving.errors import StatusError

if TYPE_CHECKING:
    from serving.batching import BatchingOptions

logger = logging.getLogger(__name__)

__all__ = ["CoreOptions", "Servable", "ServerCore", "VersionState", "VersionStatus"]


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


class ServerCore:
    """The models a server serves, their versions and labels; thread-safe (interface: serving.service.ServingCore)."""

    def __init__(self, options: CoreOptions = CoreOptions(), *, metrics=None) -> None:
        self.options = options
        self.metrics = metrics
        batch_scheduler = None  # TF Serving's SharedBatchScheduler: one for every model of the server
        if options.batching is not None:
            from serving.batching import BatchScheduler

            batch_scheduler = BatchScheduler(options.batching)
        self._batch_scheduler = batch_scheduler
        self._manager = AspiredVersionsManager(
            LoadOptions(
                file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
                enable_model_warmup=options.enable_model_warmup,
                max_num_load_retries=options.max_num_load_retries,
                load_retry_interval_micros=options.load_retry_interval_micros,
                saved_model_tags=options.saved_model_tags,
                session_config=options.session_config,
                batch_scheduler=batch_scheduler,
            )
        )
        self._lock = self._manager.lock  # one lock: labels change together with the manager's models
        self._labels: dict[str, dict[str, int]] = {}
        self._config = None
        self._config_lock = threading.Lock()

    # ------------------------------------------------------------------ requests
    @contextlib.contextmanager
    def servable(self, model_name: str, *, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """The resolved version, held (not unloaded) until the block ends: a request that reads the signature
        and then runs it sees one version even if a swap happens in between."""
        if not model_name:
            raise StatusError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        if version is not None and label is not None:
            raise StatusError("INVALID_ARGUMENT", "Specify at most one of version and version label")
        with self._lock:
            if label is not None:
                version = self._label_version(model_name, label)
            held = self._manager.acquire(model_name, version)
        try:
            assert held.bundle is not None  # acquire returns AVAILABLE versions only: loaded
            yield Servable(held.version, held.bundle)
        finally:
            self._manager.release(held)

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

    def model_status(
        self, model_name: str, *, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        with self._lock:
            if label is not None:
                version = self._label_version(model_name, label)
            return self._manager.model_status(model_name, version)

    def model_names(self) -> list[str]:
        return self._manager.model_names()

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
                new_names = self._manager.set_models(configs)
                self._labels = labels
                self._config = config
            self._manager.wake()
            if wait and new_names:
                self._manager.wait_until_available(new_names)
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
            for label, version in c.version_labels.items():
                allow = False
                if self.options.allow_version_labels_for_unavailable_models:
                    existing = self._labels.get(c.name, {}).get(label)
                    allow = existing is None or existing == version
                if not allow and not self._manager.is_available(c.name, version):
                    raise StatusError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model "
                        f"{c.name}, which is not currently available for inference",
                    )
                labels.setdefault(c.name, {})[label] = version
        return labels

    # ------------------------------------------------------------------ polls, states, shutdown
    @property
    def poll_count(self) -> int:
        """Completed polls of every model's base path (see :meth:`wait_for_polls`)."""
        return self._manager.poll_count

    def wait_for_polls(self, count: int, timeout: float) -> int:
        """Block until poll ``count`` has completed: "after N more polls nothing changed" is
        ``wait_for_polls(core.poll_count + N, ...)``, with no fixed sleep."""
        return self._manager.wait_for_polls(count, timeout)

    def wait_for_state(self, model_name: str, version: int, states: Sequence[str], timeout: float) -> VersionStatus:
        """Block until ``version`` of ``model_name`` is in one of ``states`` (for tests and tools)."""
        return self._manager.wait_for_state(model_name, version, states, timeout)

    def stop(self) -> None:
        """Stop polling and unload every version (each after its in-flight requests finish)."""
        self._manager.stop()
        if self._batch_scheduler is not None:  # after the versions: their queued calls have been answered
            self._batch_scheduler.stop()
