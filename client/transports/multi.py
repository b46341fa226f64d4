"""Several servers as one transport: round robin, and failover on UNAVAILABLE.

Each call goes to the next endpoint in turn. An endpoint that fails with UNAVAILABLE (connection refused
or reset, a server stopping) is skipped for ``eject_seconds`` and the same call is tried at once on the
next endpoint, up to every endpoint once; only when all fail does the UNAVAILABLE reach the client, whose
``Retry`` then backs off and tries again (every endpoint is tried again then, ejected or not). Other errors
are the server's answer and are raised as they are. TF Serving's calls that this client makes are reads
(predict, status, metadata), so a call that failed on one replica is safe to send to another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from client.errors import DeadlineExceededError, UnavailableError
from client.results import ModelMetadata, VersionStatus
from client.settings import ModelRef
from client.tensors import Tensor
from client.transports.base import Transport

T = TypeVar("T")


class RoundRobinTransport:
    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        eject_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not transports:
            raise ValueError("RoundRobinTransport needs at least one transport")
        self.transports = list(transports)
        self.eject_seconds = eject_seconds
        self._clock = clock
        self._next = 0
        self._ejected_until = [0.0] * len(self.transports)
        self._lock = threading.Lock()
        self.failovers = 0  # calls moved to another endpoint after UNAVAILABLE (for tests and metrics)

    def _order(self) -> list[int]:
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.transports)
            now = self._clock()
            ring = [(start + i) % len(self.transports) for i in range(len(self.transports))]
            healthy = [i for i in ring if self._ejected_until[i] <= now]
            return healthy + [i for i in ring if i not in healthy]

    def _call(self, attempt: Callable[[Transport, float], T], timeout: float) -> T:
        deadline = self._clock() + timeout
        last: UnavailableError | None = None
        for index in self._order():
            left = deadline - self._clock()
            if left <= 0:
                break
            try:
                return attempt(self.transports[index], left)
            except UnavailableError as exc:
                last = exc
                with self._lock:
                    self._ejected_until[index] = self._clock() + self.eject_seconds
                    self.failovers += 1
        if last is None:
            raise DeadlineExceededError(f"no time left to try any of {len(self.transports)} endpoints")
        raise last

    # -- the Transport interface -------------------------------------------------------------------------
    def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        return self._call(lambda t, left: t.predict(model, inputs, output_filter, left), timeout)

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return self._call(lambda t, left: t.status(model, left), timeout)

    def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        return self._call(lambda t, left: t.metadata(model, left), timeout)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
