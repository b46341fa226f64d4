"""Latency summaries, CPU time of a process, and the in-process (threads) measurement loop."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from latency.model import USERS


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time (s) of process ``pid`` so far (all its threads, live and ended), or None.

    Linux: the process's CPU-time clock, in ns (the clock id glibc's ``clock_getcpuclockid(pid)`` returns);
    else /proc/<pid>/stat's utime + stime (clock ticks, 10 ms); else psutil if it is installed.
    """
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except (OSError, AttributeError, OverflowError):
        pass
    try:  # /proc/<pid>/stat: the fields after the ")" that ends the command name; utime, stime are 14, 15
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return None
    return times.user + times.system


def no_cpu() -> None:
    return None


def cpu_per_request(cpu_before, cpu_after, requests: int) -> float | None:
    if cpu_before is None or cpu_after is None:
        return None
    return (cpu_after - cpu_before) / requests


def summary(latencies: list[float], wall: float, srv_cpu: float | None = None) -> dict:
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": len(latencies) / wall,
        "n": len(latencies),
        "srv_cpu": srv_cpu,
    }


def measure(make_client, clients: int, requests_per_client: int, warmup: int = 20, cpu=no_cpu) -> dict:
    """Latencies (s) of ``requests_per_client`` calls from each of ``clients`` threads of this process, the
    throughput, and the server's CPU per request (``cpu()``: its CPU seconds, or None)."""
    latencies: list[float] = []
    lock = threading.Lock()
    cpu_before: list = []
    barrier = threading.Barrier(clients + 1, action=lambda: cpu_before.append(cpu()))
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            call = make_client()
            rng = np.random.default_rng(seed)
            users = [str(u) for u in rng.integers(1, USERS + 1, size=requests_per_client + warmup)]
            for user in users[:warmup]:
                call(user)
            mine = []
            barrier.wait()
            for user in users[warmup:]:
                start = time.perf_counter()
                call(user)
                mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu_after = cpu()
    if errors:
        raise errors[0]
    return summary(latencies, wall, cpu_per_request(cpu_before[0], cpu_after, len(latencies)))
