"""The interface both transports implement (same arguments, same return types)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from retrieval_client.results import ModelMetadata, VersionStatus
from retrieval_client.settings import ModelRef
from retrieval_client.tensors import Tensor


@runtime_checkable
class Transport(Protocol):
    """One protocol's way to reach TF Serving; every failure raises a :class:`retrieval_client.errors.ServingError`.

    ``timeout`` is the seconds left for this attempt; retries and deadlines belong to the client.
    """

    def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        """Output name -> nested lists (strings as str, ``*_bytes`` outputs as bytes)."""

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        """Versions newest first."""

    def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        """The signature defs of the version that answers."""

    def close(self) -> None:
        """Release connections; idempotent."""


@runtime_checkable
class AsyncTransport(Protocol):
    """:class:`Transport` for asyncio: the same arguments and results, awaited
    (:class:`retrieval_client.AsyncClient`)."""

    async def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        """Output name -> nested lists (strings as str, ``*_bytes`` outputs as bytes)."""

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        """Versions newest first."""

    async def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        """The signature defs of the version that answers."""

    async def close(self) -> None:
        """Release connections; idempotent."""
