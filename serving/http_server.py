"""The REST server (port 8501), as TF Serving's ``http_server.cc`` wires it.

- Paths matching ``(?i)/v1/.*`` go to :class:`serving.rest_handler.RestApi` (JSON answers, error bodies
  ``{ "error": "..." }``, ``Content-Type: application/json``).
- The monitoring config's Prometheus path (exactly; with a query string: 400 ``Unexpected path``) serves
  :meth:`serving.monitoring.Metrics.render` as ``text/plain`` when ``prometheus_config.enable`` is set.
- Anything else: 404 with libevent's HTML error page, as ``evhttp_send_error`` answers it.

HTTP/1.1 with keep-alive; one thread per connection (``socketserver.ThreadingTCPServer``), each served by
:class:`serving.http_connection.ConnectionHandler` (parsing, limits, gzip bodies, error pages, the
``--rest_api_timeout_in_ms`` deadline, whose timer thread, :class:`_Watchdog`, is the server's). Request
bodies are capped at ``max_body_bytes``: a larger ``Content-Length`` (or chunked body) is answered 413 and
the connection closed; TF Serving itself sets no body cap (libevent's default is unlimited), the cap keeps
one request from exhausting the local server's memory. :meth:`RestServer.stop` stops accepting, closes idle
keep-alive connections and waits for in-flight requests to finish.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import socketserver
import threading
import time

from serving.http_connection import ConnectionHandler
from serving.monitoring import Metrics, prometheus_path
from serving.rest_handler import RestApi
from serving.service import ServingCore

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


class _Watchdog:
    """One thread that answers requests whose ``--rest_api_timeout_in_ms`` deadline passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list = []  # (when, seq, entry); entry[0] is the callback, None once disarmed
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="rest-deadlines", daemon=True)
        self._thread.start()

    def arm(self, seconds: float, callback) -> list:
        entry = [callback]
        when = time.monotonic() + seconds
        with self._cond:
            earliest = not self._heap or when < self._heap[0][0]
            heapq.heappush(self._heap, (when, next(self._seq), entry))
            if earliest:
                self._cond.notify()
        return entry

    @staticmethod
    def disarm(entry: list) -> None:
        entry[0] = None

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                callback = heapq.heappop(self._heap)[2][0]
                if callback is None:
                    continue
                self._cond.release()
                try:
                    callback()
                except Exception:  # a broken connection, say: never let the watchdog die
                    logger.debug("deadline callback failed", exc_info=True)
                finally:
                    self._cond.acquire()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


class HTTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address,
        api: RestApi,
        metrics: Metrics,
        metrics_path: str | None,
        max_body_bytes: int,
        timeout_s: float | None,
        num_threads: int,
    ):
        self.api = api
        self.timeout_s = timeout_s
        self.workers = threading.BoundedSemaphore(num_threads)
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.max_body_bytes = max_body_bytes
        self.stopping = False
        self._handlers: set[ConnectionHandler] = set()
        self._handlers_changed = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ConnectionHandler)
        self.watchdog = _Watchdog()

    def track(self, handler: ConnectionHandler, active: bool) -> None:
        with self._handlers_changed:
            (self._handlers.add if active else self._handlers.discard)(handler)
            self._handlers_changed.notify_all()

    def close_idle(self) -> None:
        with self._handlers_changed:
            handlers = list(self._handlers)
        for handler in handlers:
            if handler.idle:
                with contextlib.suppress(OSError):
                    handler.connection.shutdown(socket.SHUT_RDWR)

    def wait_handlers(self, timeout: float) -> bool:
        """Wait for every connection to end, closing the ones that go idle (their request answered)."""
        deadline = time.monotonic() + timeout
        while True:
            self.close_idle()
            with self._handlers_changed:
                if not self._handlers:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._handlers_changed.wait(min(remaining, 0.05))


class RestServer:
    """TF Serving's HTTP/REST endpoint over a server core (:class:`serving.service.ServingCore`).

    ``metrics`` defaults to the core's ``metrics`` attribute when it has one, else a new
    :class:`~serving.monitoring.Metrics`; the Prometheus page is served only when ``monitoring_config``
    (a ``MonitoringConfig`` proto) enables it. ``timeout_ms`` (``--rest_api_timeout_in_ms``; <= 0: none)
    bounds each API request; ``num_threads`` (``--rest_api_num_threads``) caps the requests processed at
    once (others wait, as in TF Serving's handler pool; default 4 per CPU).
    """

    def __init__(
        self,
        core: ServingCore,
        *,
        host: str = "0.0.0.0",
        port: int = 8501,
        timeout_ms: int = 30000,
        monitoring_config=None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        metrics: Metrics | None = None,
        num_threads: int | None = None,
    ):
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive (got {max_body_bytes})")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535 (got {port})")
        if num_threads is not None and num_threads <= 0:
            raise ValueError(f"num_threads must be positive (got {num_threads})")
        self.core = core
        self.host = host
        self.metrics = metrics if metrics is not None else (getattr(core, "metrics", None) or Metrics())
        self.metrics_path = prometheus_path(monitoring_config)
        self.max_body_bytes = max_body_bytes
        self.api = RestApi(core, metrics=self.metrics)
        self.timeout_s = timeout_ms / 1000.0 if timeout_ms and timeout_ms > 0 else None
        self.num_threads = num_threads or 4 * (os.cpu_count() or 1)
        self._requested_port = port
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("RestServer is not started")
        return self._httpd.server_address[1]

    def start(self) -> RestServer:
        if self._httpd is not None:
            raise RuntimeError("RestServer already started")
        self._httpd = HTTPServer(
            (self.host, self._requested_port),
            self.api,
            self.metrics,
            self.metrics_path,
            self.max_body_bytes,
            self.timeout_s,
            self.num_threads,
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="rest-accept", daemon=True
        )
        self._thread.start()
        logger.debug("REST server listening on %s:%d", self.host, self.port)
        return self

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish (up to ``grace_s``)."""
        httpd = self._httpd
        if httpd is None:
            return
        httpd.stopping = True
        httpd.shutdown()
        httpd.server_close()
        httpd.close_idle()
        if not httpd.wait_handlers(grace_s):
            logger.warning("REST server stopped with requests still in flight after %.0f s", grace_s)
        httpd.watchdog.stop()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._httpd = None

    def __enter__(self) -> RestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
