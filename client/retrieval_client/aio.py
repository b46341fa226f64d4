"""The asyncio client: :class:`retrieval_client.Client`'s methods, results, errors, deadlines, retries and failover,
awaited, over ``grpc.aio`` (``grpc://``, ``grpcs://``) and aiohttp (``http://``, ``https://``).

    import asyncio, retrieval_client

    async def main():
        async with retrieval_client.connect_async("grpc://localhost:8500") as c:
            hits, similar = await asyncio.gather(c.recommend("42", k=5), c.similar("Star Wars (1977)", k=5))

Everything but the waiting is :mod:`retrieval_client.calls`, the sync client's own code: the same arguments are
refused with the same errors, the same requests go out, the same answers come back. The transports share
their requests, answers and error mapping with the sync ones (:class:`~retrieval_client.transports.grpc.GrpcCodec`,
:class:`~retrieval_client.transports.rest.RestCodec`). A client opens its channel or session on its first call, in
that call's event loop, and belongs to that loop from then on. Cancelling a call (``task.cancel()``,
``asyncio.wait_for``, a web framework dropping a request) cancels its RPC or request and raises
``asyncio.CancelledError`` as asyncio code expects; the client keeps working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

from retrieval_client import calls
from retrieval_client.calls import ArrayLike
from retrieval_client.credentials import Tls
from retrieval_client.errors import FailedPreconditionError, UnavailableError
from retrieval_client.results import ModelMetadata, Recommendations, VersionStatus
from retrieval_client.settings import ModelRef, Retry
from retrieval_client.transports import AsyncTransport, for_endpoint_async

T = TypeVar("T")

__all__ = ["AsyncClient", "connect_async"]


class AsyncClient:
    """:class:`retrieval_client.Client` for asyncio: the same constructor (``url`` or several, ``timeout``, ``retry``,
    model names, ``tls``, ``headers``, ``transport``: an :class:`~retrieval_client.transports.AsyncTransport`), the same
    methods as coroutines, the same results and errors. Share one per event loop: calls from many tasks go
    out at once over its one channel (gRPC) or connection pool (REST). Close it with ``await c.close()`` or
    ``async with``.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        retrieval_model: str = "retrieval",
        similar_model: str = "similar_movies",
        tls: Tls | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        transport: AsyncTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = calls.settings(url, timeout, retry, retrieval_model, similar_model, tls, headers)
        if transport is None:
            transport = calls.transport_for(self.settings, for_endpoint_async, _round_robin)
        self._transport = transport
        self._sleep = sleep
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return self.settings.url

    def __repr__(self) -> str:
        return f"AsyncClient({self.settings.url!r})"

    # -- the domain calls ----------------------------------------------------------------------------------
    # A str is also a Sequence[str]: overloads match in order, so one id gets the first (what the
    # implementation does too); mypy's overlap check cannot see the order.
    @overload
    async def recommend(  # type: ignore[overload-overlap]
        self,
        user_ids: str | int | bytes,
        k: int | None = ...,
        exclude: Iterable[str | bytes] | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        exclude_ids: Iterable[str | int | bytes] | None = ...,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    async def recommend(
        self,
        user_ids: Iterable[str | int | bytes],
        k: int | None = ...,
        exclude: Iterable[Iterable[str | bytes]] | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        exclude_ids: Iterable[Iterable[str | int | bytes]] | None = ...,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    async def recommend(
        self,
        user_ids: str | int | bytes | Iterable[str | int | bytes],
        k: int | None = None,
        exclude: Iterable[str | bytes] | Iterable[Iterable[str | bytes]] | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        exclude_ids: Iterable[str | int | bytes] | Iterable[Iterable[str | int | bytes]] | None = None,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies for a user (a str or int id: one :class:`Recommendations`) or for several (a list: one per user).

        Several ids, titles or histories may come as any iterable: a list, tuple, generator, numpy array (str,
        bytes or int; 2-D for rows), pandas Series; bytes are UTF-8 text. A set is refused for queries (its order
        is undefined, answers come back in query order) and taken, sorted, for one user's exclusions.

        ``exclude``: titles never to return (a list for one user, a list of lists for several), answered by
        the ``exclude_seen`` signature; ``exclude_ids``: the same by catalogue id (``exclude_seen_by_id``).
        ``k``: how many hits (default: all K the model was exported with). An unknown user gets the most popular
        movies with ``fallback`` True; exclusions that match no movie are counted in ``unmatched``.
        """
        return await self._hits(
            calls.recommend(self.settings, user_ids, k, exclude, version, label, exclude_ids), timeout
        )

    @overload
    async def similar(  # type: ignore[overload-overlap]  # the first match wins for a str, as for recommend
        self,
        titles: str | bytes,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    async def similar(
        self,
        titles: Iterable[str | bytes],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    async def similar(
        self,
        titles: str | bytes | Iterable[str | bytes],
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies like a title (a str: one :class:`Recommendations`) or like each of several (a list: one each);
        an unknown title gets the most popular movies with ``fallback`` True."""
        return await self._hits(calls.similar(self.settings, titles, k, version, label), timeout)

    @overload
    async def similar_by_id(  # type: ignore[overload-overlap]  # as for similar
        self,
        movie_ids: str | int | bytes,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    async def similar_by_id(
        self,
        movie_ids: Iterable[str | int | bytes],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    async def similar_by_id(
        self,
        movie_ids: str | int | bytes | Iterable[str | int | bytes],
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies like the movie with a catalogue id (a str or int: one :class:`Recommendations`) or like each of
        several, answered by ``similar_movies``' ``by_id`` signature (every id of a title several ids share finds
        it); an unknown id gets the most popular movies with ``fallback`` True."""
        return await self._hits(calls.similar_by_id(self.settings, movie_ids, k, version, label), timeout)

    @overload
    async def recommend_for_history(  # type: ignore[overload-overlap]  # a str is a Sequence too, as for recommend
        self,
        history: Iterable[str | bytes],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    async def recommend_for_history(
        self,
        history: Iterable[Iterable[str | bytes]],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    @overload
    async def recommend_for_history(
        self,
        history: ArrayLike,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations | list[Recommendations]: ...

    async def recommend_for_history(
        self,
        history: Iterable[str | bytes] | Iterable[Iterable[str | bytes]] | ArrayLike,
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies for someone known only by the titles they watched: one history (a list of titles, also a
        tuple, a 1-D numpy array or a pandas Series; empty is a history too) gives one :class:`Recommendations`,
        a list of histories (or a 2-D array) one per history. Answered by ``retrieval``'s ``by_history``
        signature: a history's own titles are never returned, titles the model does not know are ignored and
        counted in ``unmatched``, and a history with no known title gets the most popular movies
        (``fallback`` True)."""
        return await self._hits(calls.for_history(self.settings, history, False, k, version, label), timeout)

    @overload
    async def recommend_for_history_ids(  # type: ignore[overload-overlap]  # as for recommend_for_history
        self,
        history_ids: Iterable[str | int | bytes],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    async def recommend_for_history_ids(
        self,
        history_ids: Iterable[Iterable[str | int | bytes]],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    @overload
    async def recommend_for_history_ids(
        self,
        history_ids: ArrayLike,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations | list[Recommendations]: ...

    async def recommend_for_history_ids(
        self,
        history_ids: Iterable[str | int | bytes] | Iterable[Iterable[str | int | bytes]] | ArrayLike,
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """:meth:`recommend_for_history` by catalogue id (str or int, as ``Hit.id``): one history of ids, or a
        list of them; answered by the ``by_history_ids`` signature, where each id stands for the title it is
        served as and an unknown id is ignored (counted in ``unmatched``)."""
        return await self._hits(calls.for_history(self.settings, history_ids, True, k, version, label), timeout)

    # -- TF Serving's calls --------------------------------------------------------------------------------
    async def predict(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        output_filter: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Any model and signature, as :meth:`retrieval_client.Client.predict`."""
        return await self._predict(
            calls.predict(model_name, inputs, signature_name, version, label, output_filter), timeout
        )

    async def status(
        self,
        model_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> list[VersionStatus]:
        """The versions of a model (default: the retrieval model), newest first."""
        model = calls.servable(self.settings, model_name, version, label)
        return await self._call(lambda t: self._transport.status(model, t), timeout, model)

    async def metadata(
        self,
        model_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> ModelMetadata:
        """The signatures of a model's version (default: the retrieval model's latest)."""
        model = calls.servable(self.settings, model_name, version, label)
        return await self._call(lambda t: self._transport.metadata(model, t), timeout, model)

    async def wait_until_available(self, timeout: float = 30.0, model_names: Sequence[str] | None = None) -> None:
        """Return once each model (default: retrieval and similar_movies) has an AVAILABLE version.

        Raises DeadlineExceededError naming what was still missing when ``timeout`` passed.
        """
        waiting = calls.Waiting(self.settings, timeout, model_names)
        self._check_open()
        while True:
            try:
                if waiting.done(
                    [(n, await self._transport.status(ModelRef(n), waiting.left())) for n in waiting.names]
                ):
                    return
            except calls.Waiting.RETRYABLE as exc:
                waiting.failed(exc)
            await self._sleep(waiting.pause())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals -----------------------------------------------------------------------------------------
    async def _call(self, attempt: Callable[[float], Awaitable[T]], timeout: float | None, model: ModelRef) -> T:
        """One call under one deadline, retrying UNAVAILABLE (only) with backoff:
        :class:`retrieval_client.calls.Attempts`, as the sync client."""
        self._check_open()
        attempts = calls.Attempts(self.settings, timeout, model)
        while True:
            try:
                return await attempt(attempts.left())
            except UnavailableError as exc:
                delay = attempts.backoff(exc)
                if delay is None:
                    raise
                await self._sleep(delay)
                attempts.after_sleep(exc)

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError(f"{self!r} is closed; make a new client")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise FailedPreconditionError(
                f"{self!r} belongs to the event loop of its first call; make one client per event loop"
            )

    async def _predict(self, call: calls.PredictCall, timeout: float | None) -> dict[str, Any]:
        return await self._call(
            lambda t: self._transport.predict(call.model, call.inputs, call.output_filter, t), timeout, call.model
        )

    async def _hits(self, call: calls.HitsCall, timeout: float | None) -> Recommendations | list[Recommendations]:
        """A domain call: its predict (none for no query), its answer (Recommendations, or a list of them)."""
        request = call.predict()
        return call.answer(None if request is None else await self._predict(request, timeout))


def connect_async(url: str | Sequence[str] | None = None, **options: Any) -> AsyncClient:
    """An :class:`AsyncClient` for ``url`` (``http(s)://...`` REST, ``grpc(s)://...`` gRPC); options as for it."""
    return AsyncClient(url, **options)


def _round_robin(transports: list[AsyncTransport]) -> AsyncTransport:
    from retrieval_client.transports.multi import AsyncRoundRobinTransport

    return AsyncRoundRobinTransport(transports)
