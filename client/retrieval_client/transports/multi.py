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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from retrieval_client.errors import DeadlineExceededError, UnavailableError
from retrieval_client.results import ModelMetadata, VersionStatus
from retrieval_client.settings import ModelRef
from retrieval_client.tensors import Tensor
from retrieval_client.transports.base import AsyncTransport, Transport

T = TypeVar("T")
Tr = TypeVar("Tr")


class RoundRobin(Generic[Tr]):
    """The ring, shared by the sync and the asyncio transport: whose turn it is, who is ejected, and when
    the call gives up. Each subclass makes the attempts::

        failures = []
        for index, left in self._turns(timeout):
            try:
                return attempt(self.transports[index], left)
            except UnavailableError as exc:
                self._failed(index, exc, failures)
        raise self._exhausted(failures)
    """

    def __init__(
        self,
        transports: Sequence[Tr],
        *,
        eject_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not transports:
            raise ValueError(f"{type(self).__name__} needs at least one transport")
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

    def _turns(self, timeout: float) -> Iterator[tuple[int, float]]:
        """(endpoint, seconds left) for each endpoint in turn, healthy ones first, while time is left."""
        deadline = self._clock() + timeout
        for index in self._order():
            left = deadline - self._clock()
            if left <= 0:
                break
            yield index, left

    def _failed(self, index: int, exc: UnavailableError, failures: list[UnavailableError]) -> None:
        """Endpoint ``index`` was UNAVAILABLE: skip it for ``eject_seconds``; the next turn is the failover."""
        failures.append(exc)
        with self._lock:
            self._ejected_until[index] = self._clock() + self.eject_seconds
            self.failovers += 1

    def _exhausted(self, failures: list[UnavailableError]) -> UnavailableError | DeadlineExceededError:
        """What the call raises once every endpoint failed (the last UNAVAILABLE) or no time was left."""
        if not failures:
            return DeadlineExceededError(f"no time left to try any of {len(self.transports)} endpoints")
        return failures[-1]


class RoundRobinTransport(RoundRobin[Transport]):
    def _call(self, attempt: Callable[[Transport, float], T], timeout: float) -> T:
        failures: list[UnavailableError] = []
        for index, left in self._turns(timeout):
            try:
                return attempt(self.transports[index], left)
            except UnavailableError as exc:
                self._failed(index, exc, failures)
        raise self._exhausted(failures)

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


class AsyncRoundRobinTransport(RoundRobin[AsyncTransport]):
    """:class:`RoundRobinTransport` for asyncio: the same ring, the attempts awaited."""

    async def _call(self, attempt: Callable[[AsyncTransport, float], Awaitable[T]], timeout: float) -> T:
        failures: list[UnavailableError] = []
        for index, left in self._turns(timeout):
            try:
                return await attempt(self.transports[index], left)
            except UnavailableError as exc:
                self._failed(index, exc, failures)
        raise self._exhausted(failures)

    async def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        return await self._call(lambda t, left: t.predict(model, inputs, output_filter, left), timeout)

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return await self._call(lambda t, left: t.status(model, left), timeout)

    async def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        return await self._call(lambda t, left: t.metadata(model, left), timeout)

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()
