"""The REST server (port 8501), as TF Serving's ``http_server.cc`` wires it.

- Paths matching ``(?i)/v1/.*`` go to :class:`serving.rest_api.RestApi` (JSON answers, error bodies
  ``{ "error": "..." }``, ``Content-Type: application/json``).
- The monitoring config's Prometheus path (exactly; with a query string: 400 ``Unexpected path``) serves
  :meth:`serving.monitoring.Metrics.render` as ``text/plain`` when ``prometheus_config.enable`` is set.
- Anything else: 404 with libevent's HTML error page, as ``evhttp_send_error`` answers it.

Bodies sent with ``Content-Encoding: gzip`` are uncompressed, as TF Serving's ``auto_uncompress_input``.
HTTP/1.1 with keep-alive; one thread per connection (``ThreadingHTTPServer``), Nagle off, each response
written with a single ``send``. Request bodies are capped at ``max_body_bytes``: a larger
``Content-Length`` (or chunked body) is answered 413 and the connection closed. TF Serving itself sets no
cap (libevent's default is unlimited); the cap keeps one request from exhausting the local server's memory.
:meth:`RestServer.stop` stops accepting, closes idle keep-alive connections and waits for in-flight
requests to finish.
"""

from __future__ import annotations

import email.utils
import heapq
import http.server
import itertools
import logging
import os
import re
import socket
import threading
import time
import zlib

from serving.json_tensor import error_json
from serving.monitoring import Metrics, prometheus_path
from serving.rest_api import RestApi

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_TIMEOUT_S = 300
_V1_PATH = re.compile(r"/v1/.*", re.I | re.S)
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
# libevent's evhttp_send_error page.
_ERROR_PAGE = ("<HTML><HEAD>\n<TITLE>{code} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n")
_HTML = "text/html; charset=ISO-8859-1"
_MAX_DRAIN_BYTES = 1024 * 1024
_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Date:
    """The ``Date`` header, formatted once per second."""

    _lock = threading.Lock()
    _second = -1
    _value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls._second:
            with cls._lock:
                cls._value = email.utils.formatdate(second, usegmt=True)
                cls._second = second
        return cls._value


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


class _BodyTooLarge(Exception):
    def __init__(self, size: int | None):
        super().__init__(size)
        self.size = size


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    request_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idle = True
        self.server.track(self, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self, False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        logger.debug("%s - %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        self.command = ""
        try:
            self.idle = True
            if self.server.stopping:
                self.close_connection = True
                return
            line = self.rfile.readline(_MAX_LINE + 1)
            self.idle = False
            if not line:
                self.close_connection = True
                return
            if self._parse(line):
                self._serve()  # every method: TF Serving answers unknown ones under /v1 with "Malformed request"
        except (TimeoutError, ConnectionError, OSError) as exc:
            logger.debug("connection %s closed: %s", self.client_address, exc)
            self.close_connection = True
        finally:
            self.idle = True

    def _parse(self, line: bytes) -> bool:
        """Request line and headers (a lean ``parse_request``); False after answering a malformed request."""
        self.raw_requestline = line
        self.requestline = line.decode("latin-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(line) > _MAX_LINE or len(words) != 3 or not words[2].startswith("HTTP/1."):
            return self._bad_request(414 if len(line) > _MAX_LINE else 400)
        self.command, self.path, self.request_version = words
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if len(raw) > _MAX_LINE or not sep:
                return self._bad_request(431 if len(raw) > _MAX_LINE else 400)
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        else:
            return self._bad_request(431)
        self.headers = headers
        connection = headers.get("connection", "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in connection
        else:
            self.close_connection = "close" in connection
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _bad_request(self, status: int) -> bool:
        self.close_connection = True
        self.command = ""
        self._reply(status, _ERROR_PAGE.format(code=status, reason=_REASONS[status]), _HTML)
        return False

    # ------------------------------------------------------------------ request
    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked(limit)
        length = self.headers.get("content-length")
        if not length:
            return b""
        size = int(length)  # ValueError -> 400 by the caller
        if size < 0:
            raise ValueError(length)
        if size > limit:
            raise _BodyTooLarge(size)
        return self.rfile.read(size)

    def _gunzip(self, body: bytes) -> bytes:
        """TF Serving uncompresses ``Content-Encoding: gzip`` bodies (auto_uncompress_input); a body that does
        not uncompress reads as empty, as there. The uncompressed size is capped like any body."""
        limit = self.server.max_body_bytes
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            logger.debug("failed to uncompress a gzipped body: %s", exc)
            return b""
        if len(data) > limit or inflater.unconsumed_tail:
            raise _BodyTooLarge(None)
        return data

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                raise _BodyTooLarge(None)
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _serve(self) -> None:
        method, target = self.command, self.path
        server = self.server
        try:
            body = self._read_body()
            if body and "gzip" in self.headers.get("content-encoding", "").lower():
                body = self._gunzip(body)
        except _BodyTooLarge as exc:
            size = "a chunked or compressed body" if exc.size is None else f"{exc.size} bytes"
            self._drain(exc.size)
            self.close_connection = True
            self._reply(413, error_json(
                f"Request body too large: {size}; the limit is {server.max_body_bytes} bytes"))
            return
        except ValueError:
            self.close_connection = True
            self._reply(400, error_json("Malformed request body framing"))
            return
        metrics_path = server.metrics_path
        if metrics_path is not None and target.split("?", 1)[0] == metrics_path:
            if target != metrics_path:
                text = f"Unexpected path: {target}. Should be {metrics_path}"
                self._reply(400, text, "text/plain")
            else:
                self._reply(200, server.metrics.render(), "text/plain")
            return
        if _V1_PATH.fullmatch(target):
            self._serve_api(method, target, body)
            return
        reason = _REASONS[404]
        self._reply(404, _ERROR_PAGE.format(code=404, reason=reason), _HTML)

    def _serve_api(self, method: str, target: str, body: bytes) -> None:
        """The REST API under the server's deadline: past it the client gets 504 DEADLINE_EXCEEDED at once, and
        the late answer is dropped when it comes (as TF Serving's RunOptions timeout ends the request)."""
        server = self.server
        with server.workers:  # --rest_api_num_threads requests run at once, as TF Serving's handler pool
            if server.timeout_s is None:
                status, text = server.api.handle(method, target, body)
                self._reply(status, text)
                return
            lock = threading.Lock()
            state = {"answered": False, "expired": False}

            def on_deadline() -> None:
                with lock:
                    if state["answered"]:
                        return
                    state["answered"] = state["expired"] = True
                    self._reply(504, error_json("Timed out waiting for notification"))  # DirectSession's message

            entry = server.watchdog.arm(server.timeout_s, on_deadline)
            try:
                status, text = server.api.handle(method, target, body, expired=lambda: state["expired"])
            finally:
                server.watchdog.disarm(entry)
            with lock:
                if not state["answered"]:
                    state["answered"] = True
                    self._reply(status, text)

    def _drain(self, size: int | None) -> None:
        """Read (and drop) a too-large body when it is small enough, so the 413 reaches the client."""
        if size is not None and size <= self.server.max_body_bytes + _MAX_DRAIN_BYTES:
            remaining = size
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _reply(self, status: int, text: str, content_type: str = "application/json") -> None:
        payload = text.encode("utf-8")
        if self.server.stopping:
            self.close_connection = True
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Date: {_Date.now()}\r\n"
                f"Content-Length: {len(payload)}\r\n")
        if self.close_connection:
            head += "Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            head += "Connection: keep-alive\r\n"
        data = (head + "\r\n").encode("latin-1")
        if self.command != "HEAD":
            data += payload
        self.wfile.write(data)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, api: RestApi, metrics: Metrics, metrics_path: str | None, max_body_bytes: int,
                 timeout_s: float | None, num_threads: int):
        self.api = api
        self.timeout_s = timeout_s
        self.workers = threading.BoundedSemaphore(num_threads)
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.max_body_bytes = max_body_bytes
        self.stopping = False
        self._handlers: set[_Handler] = set()
        self._handlers_changed = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.watchdog = _Watchdog()

    def track(self, handler: _Handler, active: bool) -> None:
        with self._handlers_changed:
            (self._handlers.add if active else self._handlers.discard)(handler)
            self._handlers_changed.notify_all()

    def close_idle(self) -> None:
        with self._handlers_changed:
            handlers = list(self._handlers)
        for handler in handlers:
            if handler.idle:
                try:
                    handler.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

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
    """TF Serving's HTTP/REST endpoint over a ``ServerCore`` (interface: docs/serving-core.md).

    ``metrics`` defaults to the core's ``metrics`` attribute when it has one, else a new
    :class:`~serving.monitoring.Metrics`; the Prometheus page is served only when ``monitoring_config``
    (a ``MonitoringConfig`` proto) enables it. ``timeout_ms`` (``--rest_api_timeout_in_ms``; <= 0: none)
    bounds each API request; ``num_threads`` (``--rest_api_num_threads``) caps the requests processed at
    once (others wait, as in TF Serving's handler pool; default 4 per CPU).
    """

    def __init__(self, core, *, host: str = "0.0.0.0", port: int = 8501, timeout_ms: int = 30000,
                 monitoring_config=None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, metrics: Metrics | None = None,
                 num_threads: int | None = None):
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
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("RestServer is not started")
        return self._httpd.server_address[1]

    def start(self) -> "RestServer":
        if self._httpd is not None:
            raise RuntimeError("RestServer already started")
        self._httpd = _HTTPServer((self.host, self._requested_port), self.api, self.metrics, self.metrics_path,
                                  self.max_body_bytes, self.timeout_s, self.num_threads)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-accept", daemon=True)
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

    def __enter__(self) -> "RestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
