"""client.AsyncClient over real sockets: ``grpc.aio`` and aiohttp against the local server (``python -m serving``
on the shared BruteForce store, as test_e2e.py), each test one ``asyncio.run``.

What it proves: the async answers are the sync client's (results, flags, status, metadata, errors and their
messages); many calls from one event loop go out at once and all come back right; a cancelled call raises
asyncio's CancelledError (or wait_for's TimeoutError) and leaves the client working; deadlines are
DeadlineExceededError; a dead replica is failed over; the README's asyncio example runs.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

import retrieval_client as client
from retrieval_client import AsyncClient, Client, Retry
from retrieval_client.transports.multi import AsyncRoundRobinTransport

ROOT = Path(__file__).resolve().parents[2]
K = 10


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def dead_url(kind: str) -> str:
    """A URL on a port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"{'http' if kind == 'rest' else 'grpc'}://127.0.0.1:{port}"


def flags(answer: Any) -> Any:
    """An answer with its flags (equality of Recommendations ignores them)."""
    if isinstance(answer, client.Recommendations):
        return (list(answer), answer.fallback, answer.unmatched)
    if isinstance(answer, list) and answer and isinstance(answer[0], client.Recommendations):
        return [flags(row) for row in answer]
    return answer


# (method, args, kwargs): every call of the API, with flags and both kinds of id
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("recommend", ("42",), {}),
    ("recommend", (7,), {"k": 3}),
    ("recommend", (["1", "2", "nosuchuser"],), {"k": 5}),
    ("recommend", ("7",), {"exclude": ["no such movie"]}),
    ("recommend", (["7", "8"],), {"exclude_ids": [["1", "no such id"], []]}),
    ("recommend", ("9",), {"label": "stable"}),
    ("recommend_for_history", (["no such movie"],), {}),
    ("recommend_for_history", ([[], ["nope"]],), {"k": 4}),
    ("recommend_for_history_ids", (["1", 2, "no such id"],), {}),
    ("similar", ("no such movie",), {}),
    ("similar_by_id", (["1", 2],), {"k": 3}),
    ("status", ("similar_movies",), {}),
    ("metadata", (), {}),
    ("metadata", ("similar_movies",), {}),
    ("predict", ("retrieval", {"user_id": ["3"]}), {"output_filter": ["movie_titles"]}),
]


def test_async_answers_are_the_sync_clients(local_server, transport_kind):
    url = local_server.url(transport_kind)
    with Client(url, timeout=30) as sync:
        expected = [flags(getattr(sync, name)(*args, **kwargs)) for name, args, kwargs in CALLS]
        title = sync.recommend("5")[0].title
        expected_similar = flags(sync.similar([title, "no such movie"], k=4))
        history = [h.title for h in sync.recommend("11", k=2)]
        expected_history = flags(sync.recommend_for_history(history))

    async def main():
        async with client.connect_async(url, timeout=30) as c:
            got = [flags(await getattr(c, name)(*args, **kwargs)) for name, args, kwargs in CALLS]
            assert flags(await c.similar([title, "no such movie"], k=4)) == expected_similar
            assert flags(await c.recommend_for_history(history)) == expected_history
            await c.wait_until_available(timeout=10)
            return got

    assert run(main()) == expected


def test_many_concurrent_calls_from_one_loop_all_come_back_right(local_server, transport_kind):
    url = local_server.url(transport_kind)
    users = [str(u) for u in range(1, 61)]

    async def main():
        async with AsyncClient(url, timeout=30) as c:
            sequential = {u: await c.recommend(u, k=5) for u in users}
            # 180 calls at once: 3 per user, every one in flight before the first answer is read
            answers = await asyncio.gather(*(c.recommend(u, k=5) for u in users * 3))
            return sequential, answers

    sequential, answers = run(main())
    assert len(answers) == 180 and answers == [sequential[u] for u in users * 3]
    assert all(len(a) == 5 and a.fallback is False for a in answers)


def test_a_cancelled_call_raises_cancelled_error_and_the_client_keeps_working(local_server, transport_kind):
    url = local_server.url(transport_kind)

    async def main():
        async with AsyncClient(url, timeout=30) as c:
            expected = await c.recommend("3")
            # asyncio.wait_for with a deadline that passes while the call is in flight
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.recommend("3"), timeout=1e-4)
            # task.cancel() on calls in flight, among others that must still answer
            tasks = [asyncio.create_task(c.recommend(str(u))) for u in range(1, 21)]
            await asyncio.sleep(0)  # every task has started its call
            for task in tasks[::2]:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            cancelled = [r for r in results[::2] if isinstance(r, asyncio.CancelledError)]
            answered = results[1::2]
            # then the client answers as before, many times
            after = await asyncio.gather(*(c.recommend("3") for _ in range(20)))
            return expected, cancelled, answered, after

    expected, cancelled, answered, after = run(main())
    assert len(cancelled) == 10  # no call had answered before its cancel: each raised CancelledError
    assert all(isinstance(a, client.Recommendations) and len(a) == K for a in answered)
    assert after == [expected] * 20


def test_deadlines_are_deadline_exceeded_as_in_the_sync_client(transport_kind):
    # A server that never answers: the kernel accepts the connection, nobody reads it (no TLS, no HTTP/2
    # handshake, no HTTP answer), so only the deadline ends the call.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"{'http' if transport_kind == 'rest' else 'grpc'}://127.0.0.1:{silent.getsockname()[1]}"
        with Client(url, timeout=0.3) as sync, pytest.raises(client.DeadlineExceededError) as expected:
            sync.recommend("1")

        async def main():
            async with AsyncClient(url, timeout=0.3) as c:
                with pytest.raises(client.DeadlineExceededError) as default:
                    await c.recommend("1")
                with pytest.raises(client.DeadlineExceededError) as per_call:
                    await c.status(timeout=0.2)  # a call's own timeout overrides the client's
                return default.value, per_call.value

        default, per_call = run(main())
    assert isinstance(default, TimeoutError) and default.message == expected.value.message
    assert per_call.code == "DEADLINE_EXCEEDED" and ("0.2 s" in per_call.message or transport_kind == "grpc")


def test_errors_are_the_sync_clients_types_and_messages(local_server, transport_kind):
    url, dead = local_server.url(transport_kind), dead_url(transport_kind)
    attempts: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
        (url, "status", ("nope",), {}),  # NOT_FOUND, the server's words
        (url, "predict", ("nope", {"user_id": ["1"]}), {}),
        (url, "recommend", ("1",), {"version": 1}),
        (url, "recommend", ("1",), {"k": K + 1}),  # INVALID_ARGUMENT: k above K, the client's words
        (url, "recommend", ("1",), {"k": 0}),  # refused before any call
        (url, "recommend", ("1",), {"exclude": ["a"], "exclude_ids": ["1"]}),
        (url, "recommend_for_history", ([1],), {}),
        (url, "metadata", (), {"label": "beta"}),  # an unknown label
        (url, "predict", ("retrieval", {"movie_title": ["x"]}), {}),
        (url, "predict", ("retrieval", {"user_id": ["3"]}), {"output_filter": ["nope"]}),
        (dead, "recommend", ("1",), {}),  # UNAVAILABLE: connection refused, after the retries
    ]

    def failure(outcome: Any) -> tuple[type, str]:
        assert isinstance(outcome, client.ServingError), outcome
        return type(outcome), outcome.message

    expected = []
    for target, name, args, kwargs in attempts:
        with Client(target, timeout=10, retry=Retry(attempts=2, backoff=0.01)) as sync:
            try:
                getattr(sync, name)(*args, **kwargs)
            except client.ServingError as exc:
                expected.append(failure(exc))

    async def main():
        got = []
        for target, name, args, kwargs in attempts:
            async with AsyncClient(target, timeout=10, retry=Retry(attempts=2, backoff=0.01)) as c:
                try:
                    await getattr(c, name)(*args, **kwargs)
                except client.ServingError as exc:
                    got.append(failure(exc))
        return got

    got = run(main())
    assert len(expected) == len(attempts) and [t for t, _ in got] == [t for t, _ in expected]
    assert [t for t, _ in got][:4] == [client.NotFoundError] * 3 + [client.InvalidArgumentError]
    assert got[-1][0] is client.UnavailableError
    assert got == expected


def test_an_unreachable_replica_is_failed_over(local_server, transport_kind):
    live, dead = local_server.url(transport_kind), dead_url(transport_kind)

    async def main():
        async with AsyncClient([dead, live], timeout=30) as c:
            transport = c._transport
            assert isinstance(transport, AsyncRoundRobinTransport) and len(transport.transports) == 2
            answers = await asyncio.gather(*(c.recommend("4") for _ in range(8)))
            failovers = transport.failovers
        async with AsyncClient([dead, dead_url(transport_kind)], timeout=30, retry=Retry(2, backoff=0.01)) as c:
            with pytest.raises(client.UnavailableError):
                await c.recommend("4")
            assert c._transport.failovers == 4  # each endpoint, on each of the two attempts
        return answers, failovers

    answers, failovers = run(main())
    assert all(a == answers[0] and len(a) == K for a in answers)
    assert failovers >= 1  # the dead one was tried, then ejected: the rest went to the live one at once


def test_the_other_transports_port_is_named(local_server):
    grpc_port = local_server.grpc_url.rsplit(":", 1)[1]
    rest_port = local_server.rest_url.rsplit(":", 1)[1]

    async def main():
        async with AsyncClient(f"http://127.0.0.1:{grpc_port}", timeout=10) as c:
            with pytest.raises(client.InvalidArgumentError, match="this port speaks gRPC"):
                await c.recommend("42")
        async with AsyncClient(f"grpc://127.0.0.1:{rest_port}", timeout=10) as c:
            with pytest.raises(client.InvalidArgumentError, match="this port speaks REST"):
                await c.recommend("42")

    run(main())


def test_a_client_belongs_to_one_loop_and_refuses_calls_once_closed(local_server, transport_kind):
    c = AsyncClient(local_server.url(transport_kind), timeout=30)  # made outside any loop: opens on first call
    first = asyncio.new_event_loop()
    try:
        assert len(first.run_until_complete(c.recommend("1"))) == K
        with pytest.raises(client.FailedPreconditionError, match="one client per event loop"):
            run(c.recommend("1"))
        first.run_until_complete(c.close())
    finally:
        first.close()

    async def closed():
        async with AsyncClient(local_server.url(transport_kind)) as c:
            pass
        with pytest.raises(client.FailedPreconditionError, match="closed"):
            await c.recommend("1")
        await c.close()  # idempotent

    run(closed())


def test_unavailable_is_retried_with_the_retry_s_backoff_and_waiting_gives_up_in_time(transport_kind):
    dead = dead_url(transport_kind)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with Client(dead, timeout=10) as sync, pytest.raises(client.DeadlineExceededError) as expected:
        sync.wait_until_available(timeout=0.3)

    async def main():
        retry = Retry(attempts=3, backoff=0.01, multiplier=2.0)
        async with AsyncClient(dead, timeout=10, retry=retry, sleep=sleep) as c:
            with pytest.raises(client.UnavailableError):
                await c.recommend("1")
            assert slept == [0.01, 0.02]  # three attempts, the Retry's waits between them
        async with AsyncClient(dead, timeout=10) as c:
            with pytest.raises(client.DeadlineExceededError) as waited:
                await c.wait_until_available(timeout=0.3)
            return waited.value

    waited = run(main())
    assert waited.message.split(": ", 1)[0] == expected.value.message.split(": ", 1)[0]
    assert waited.message.startswith(f"{dead} not ready after 0.3 s: UNAVAILABLE: ")
