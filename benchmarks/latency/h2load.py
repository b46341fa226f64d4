"""The h2load rows: nghttp2's load generator driven over REST (HTTP/1.1) and gRPC (HTTP/2, a hand-built
frame), each run checked against the server's own count of answered calls."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from latency.clients import PREDICT_PATH, predict_request, rest_body
from latency.measure import cpu_per_request, no_cpu, summary
from latency.model import FIXED_USER
from latency.server import check_requests

if TYPE_CHECKING:
    from latency.canned import CannedServer
    from latency.server import Server

H2LOAD = shutil.which("h2load")

H2LOAD_MISSING = (
    "h2load not found: install it with `apt-get install -y nghttp2-client` (Debian/Ubuntu); skipping the h2load rows"
)

_H2LOAD_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load_targets(rest_port: int | None, grpc_port: int | None) -> dict[str, tuple[str, bytes, list[str], bool]]:
    """``{transport: (url, body, headers, http1)}`` for the h2load rows, all for ``FIXED_USER``."""
    targets = {}
    if rest_port is not None:
        targets["REST"] = (
            f"http://127.0.0.1:{rest_port}/v1/models/retrieval:predict",
            rest_body(FIXED_USER),
            ["content-type: application/json"],
            True,
        )
    if grpc_port is not None:
        targets["gRPC"] = (
            f"http://127.0.0.1:{grpc_port}{PREDICT_PATH}",
            grpc_frame(predict_request(FIXED_USER).SerializeToString()),
            ["content-type: application/grpc", "te: trailers"],
            False,
        )
    return targets


def h2load(
    target: tuple[str, bytes, list[str], bool], connections: int, requests: int, warmup: int = 20, cpu=no_cpu
) -> dict:
    """One h2load run over ``connections`` connections, one request in flight on each: ``warmup`` requests per
    connection, then ``requests`` measured ones.

    Each new connection's first requests are slow (the REST server starts a thread per connection; both
    servers warm up per connection): 1-40 ms here against a p50 of 2-3 ms with 8 connections. So, as the
    Python clients do, each connection warms up before it is measured, in the same run (a separate warm-up
    run would warm other connections): h2load sends ``warmup`` requests per connection more, and the first
    ``warmup * connections`` requests by start time, which hold every connection's first ones, are dropped.
    Latencies come from h2load's ``--log-file`` (start µs, status, µs to the end of the response), written
    to a fresh file: h2load appends to an existing one. Throughput is the measured requests over the span
    from the first one's start to the last one's end; the server's CPU is read around the whole run and
    divided by all requests sent. ``"sent"`` in the result is that total.
    """
    url, body, headers, http1 = target
    total = requests + warmup * connections  # h2load gives each connection total // connections requests
    with tempfile.TemporaryDirectory(prefix="serving_latency-h2load-") as tmp:
        data, log = Path(tmp, "body"), Path(tmp, "requests.log")
        data.write_bytes(body)
        assert H2LOAD is not None, H2LOAD_MISSING  # callers check it first
        command = [
            H2LOAD,
            "-n",
            str(total),
            "-c",
            str(connections),
            "-m",
            "1",
            "-t",
            "1",
            "-d",
            str(data),
            f"--log-file={log}",
        ]
        if http1:
            command.append("--h1")
        for header in headers:
            command += ["-H", header]
        cpu_before = cpu()
        done = subprocess.run([*command, url], check=False, capture_output=True, text=True, timeout=600)
        cpu_after = cpu()
        lines = log.read_text().splitlines() if log.exists() else []
    report = _H2LOAD_REQUESTS.search(done.stdout)
    if done.returncode != 0 or report is None:
        raise RuntimeError(f"h2load failed (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    counted, _, _, succeeded, failed, errored, timeouts = map(int, report.groups())
    if (counted, succeeded, failed, errored, timeouts) != (total, total, 0, 0, 0):
        raise RuntimeError(f"h2load: {report.group(0)} (wanted {total} succeeded)\n{done.stdout[-2000:]}")
    entries = sorted(tuple(int(x) for x in line.split("\t")[:3]) for line in lines)
    bad = [e for e in entries if e[1] != 200]
    if len(entries) != total or bad:
        raise RuntimeError(f"h2load logged {len(entries)} requests (sent {total}), {len(bad)} not HTTP 200: {bad[:5]}")
    measured = entries[warmup * connections :]
    span_us = max(s + d for s, _, d in measured) - measured[0][0]
    result = summary([d / 1e6 for _, _, d in measured], span_us / 1e6, cpu_per_request(cpu_before, cpu_after, total))
    return {**result, "sent": total}


def h2load_checked(target, connections: int, requests: int, cpu, counts) -> dict:
    """:func:`h2load`, checked against ``counts()``, the server's own count of answered calls, read before
    and after: it must have grown by exactly the calls h2load sent (warm-up included)."""
    before = counts()
    result = h2load(target, connections, requests, cpu=cpu)
    counts.check(before, counts(), result["sent"])
    return result


class ServerCounts:
    """Served OK Predict calls of the real server, from its Prometheus page, for one entrypoint."""

    def __init__(self, server: Server, entrypoint: str) -> None:
        self._server, self._entrypoint = server, entrypoint

    def __call__(self) -> Counter:
        return self._server.request_counts()

    def check(self, before: Counter, after: Counter, sent: int) -> None:
        check_requests(before, after, self._entrypoint, sent)


class CannedCounts:
    """Predict calls the canned server answered (it counts them itself)."""

    def __init__(self, canned: CannedServer) -> None:
        self._canned = canned

    def __call__(self) -> int:
        return self._canned.calls()

    def check(self, before: int, after: int, sent: int) -> None:
        if after - before != sent:
            raise RuntimeError(f"the canned gRPC server answered {after - before} Predict calls; h2load sent {sent}")
