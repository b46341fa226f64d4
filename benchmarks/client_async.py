"""Throughput of the asyncio client from one event loop against the sync client from threads, in one run.

Starts ``python -m serving`` on a tiny BruteForce store (exported with ``python -m export`` on synthetic data,
or ``--store`` to reuse one holding ``retrieval/<version>/``) and sends ``--calls`` recommendations (users
"1".."60" in turn), ``--concurrency`` at a time, four ways:

REST   client.Client from N threads (one shared client: requests, a pool of 16 connections)
       client.AsyncClient from one event loop, N tasks (aiohttp)
gRPC   client.Client from N threads (one channel)
       client.AsyncClient from one event loop, N tasks (grpc.aio, one channel)

It prints calls per second each way and the ratio async / sync per transport (above 1: the event loop
does more). Each contender is warmed up first (connections, the model) and checked to answer as the others.

    python benchmarks/client_async.py [--calls 500] [--concurrency 16] [--store PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]  # export and serving, and retrieval_client (client/)

from client_overhead import export_store, start_server  # noqa: E402 - beside this script (sys.path[0])

import retrieval_client as client  # noqa: E402 - this checkout's client: importable once on sys.path (above)

USERS = [str(u) for u in range(1, 61)]


def sync_run(url: str, calls: int, concurrency: int) -> tuple[float, list[client.Recommendations]]:
    users = [USERS[i % len(USERS)] for i in range(calls)]
    with client.connect(url, timeout=30) as c, ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(c.recommend, USERS))  # warm up: connections, threads, the model
        start = time.perf_counter()
        answers = list(pool.map(c.recommend, users))
        return time.perf_counter() - start, answers


async def async_run(url: str, calls: int, concurrency: int) -> tuple[float, list[client.Recommendations]]:
    users = [USERS[i % len(USERS)] for i in range(calls)]
    answers: list[client.Recommendations] = [client.Recommendations()] * calls
    async with client.connect_async(url, timeout=30) as c:

        async def worker(first: int) -> None:  # N workers, each taking every N-th call: N in flight
            for i in range(first, calls, concurrency):
                answers[i] = await c.recommend(users[i])

        await asyncio.gather(*(c.recommend(u) for u in USERS[:concurrency]))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return time.perf_counter() - start, answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--store", type=Path, help="a model store with retrieval/<version>/ (default: export one)")
    args = parser.parse_args()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or export_store(Path(tmp))
        server = start_server(store)
        urls = {"REST": f"http://127.0.0.1:{server.rest_port}", "gRPC": f"grpc://127.0.0.1:{server.port}"}
        try:
            reference = None
            for transport, url in urls.items():
                took, answers = sync_run(url, args.calls, args.concurrency)
                seconds[f"{transport} sync, {args.concurrency} threads"] = took
                reference = reference or answers
                assert answers == reference, "the sync client answered differently"
                took, answers = asyncio.run(async_run(url, args.calls, args.concurrency))
                seconds[f"{transport} async, {args.concurrency} tasks"] = took
                assert answers == reference, "the async client answered differently"
        finally:
            server.stop()
    print(f"{args.calls} recommend calls, {args.concurrency} at a time, one run:")
    for name, took in seconds.items():
        print(f"  {name:26} {args.calls / took:7.0f} calls/s  ({took:.2f} s)")
    for transport in urls:
        sync = seconds[f"{transport} sync, {args.concurrency} threads"]
        aio = seconds[f"{transport} async, {args.concurrency} tasks"]
        print(f"  {transport}: async / sync throughput {sync / aio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
