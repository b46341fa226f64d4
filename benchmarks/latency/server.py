"""The local server under test (serving.testing's harness, with a monitoring config) and its request counts."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

from latency.measure import cpu_seconds
from serving.testing import REST_READY_LINE, ROOT, ServerProcess

METRICS_PATH = "/monitoring/prometheus/metrics"  # serving/monitoring.config's
MONITORING_CONFIG = f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n'  # --monitoring_config_file
REQUEST_COUNT = ":tensorflow:serving:request_count"  # serving.monitoring.REQUEST_COUNT (TF Serving's name)

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Server(ServerProcess):
    """``python -m serving`` on ``base_path`` (serving.testing's harness), with a monitoring config that
    serves the Prometheus page; started at once, :meth:`wait_ready` waits for it. ``root``: the checkout
    whose server runs (another one measures a baseline in the same run)."""

    def __init__(self, base_path: Path, root: Path | None = None) -> None:
        fd, self._monitoring = tempfile.mkstemp(prefix="serving_latency-", suffix=".config")
        with os.fdopen(fd, "w") as f:
            f.write(MONITORING_CONFIG)
        flags = (
            "--model_name=retrieval",
            f"--model_base_path={base_path}",
            f"--monitoring_config_file={self._monitoring}",
        )
        super().__init__(*flags, rest=True, root=ROOT if root is None else root)
        self.grpc_port = self.port
        self.start(wait_ready=False)

    def wait_ready(self, timeout: float = 600) -> None:
        try:
            self.wait_for_line(REST_READY_LINE, timeout)
        except BaseException:
            self.stop()
            raise

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid)

    def request_counts(self) -> Counter:
        """``:tensorflow:serving:request_count`` from the Prometheus page, summed by (API, entrypoint, status)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{METRICS_PATH}", timeout=30) as answer:
            text = answer.read().decode()
        counts: Counter = Counter()
        for line in text.splitlines():
            if not line.startswith(REQUEST_COUNT + "{"):
                continue
            labels, _, value = line[len(REQUEST_COUNT) + 1 :].rpartition("} ")
            found = dict(_LABEL.findall(labels))
            counts[found.get("API", ""), found.get("entrypoint", ""), found.get("status", "")] += int(float(value))
        return counts

    def stop(self) -> int | None:
        try:
            return super().stop()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self._monitoring)


def check_requests(before: Counter, after: Counter, entrypoint: str, sent: int) -> None:
    """The server answered exactly ``sent`` more OK ``Predict`` calls on ``entrypoint`` and no more errors."""
    grown = after[("Predict", entrypoint, "OK")] - before[("Predict", entrypoint, "OK")]
    errors = {key: after[key] - before[key] for key in after if key[2] != "OK" and after[key] != before[key]}
    if grown != sent or errors:
        raise RuntimeError(
            f"the server's request_count disagrees with h2load: {sent} {entrypoint} Predict calls "
            f"sent, OK count grew by {grown}; non-OK counts grown: {errors or 'none'}"
        )
