"""The REST server (port 8501), as TF Serving's ``http_server.cc`` wires it.

- Paths matching ``(?i)/v1/.*`` go to :class:`serving.rest_handler.RestApi` (JSON answers, error bodies
  ``{ "error": "..." }``, ``Content-Type: application/json``).
- The monitoring config's Prometheus path (exactly; with a query string: 400 ``Unexpected path``) serves
  :meth:`serving.monitoring.Metrics.render` as ``text/plain`` when ``prometheus_config.enable`` is set.
- Anything else: 404 with libevent's HTML error page, as ``evhttp_send_error`` answers it.

Bodies sent with ``Content-Encoding: gzip`` are uncompressed, as TF Serving's ``auto_uncompress_input``.
HTTP/1.1 with keep-alive; one thread per connection (``socketserver.ThreadingTCPServer``), Nagle off, each
response written with a single ``send``. Request bodies are capped at ``max_body_bytes``: a larger
``Content-Length`` (or chunked body) is answered 413 and the connection closed.

The HTTP/1.x parsing is httptools (the bindings to llhttp, Node.js's parser, that uvicorn uses), fed from
the socket in :class:`_Handler`: it rejects a request with both ``Content-Length`` and ``Transfer-Encoding``
(the request-smuggling ambiguity), a negative or non-numeric ``Content-Length``, bad chunk sizes and invalid
header-name characters per the RFC 9112 grammar, parses chunk extensions and trailers, and answers pipelined
requests in order. One difference from libevent (TF Serving) follows: llhttp rejects bare-LF line ends
(400), which libevent accepts. The limits (request line 414, header lines 431, body 413),
``Expect: 100-continue``, the deadline and the error pages are this module's, on top of it. TF Serving
itself sets no body cap (libevent's default is unlimited); the cap keeps one request from exhausting the
local server's memory.
:meth:`RestServer.stop` stops accepting, closes idle keep-alive connections and waits for in-flight
requests to finish.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import heapq
import http
import itertools
import logging
import os
import re
import socket
import socketserver
import threading
import time
import zlib

import httptools

from serving.json_writer import error_json
from serving.monitoring import Metrics, prometheus_path
from serving.rest_handler import RestApi
from serving.service import ServingCore

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_TIMEOUT_S = 300
_V1_PATH = re.compile(r"/v1/.*", re.I | re.S)
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
# libevent's evhttp_send_error page.
_ERROR_PAGE = "<HTML><HEAD>\n<TITLE>{code} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n"
_HTML = "text/html; charset=ISO-8859-1"
_MAX_DRAIN_BYTES = 1024 * 1024
_MAX_LINE = 65536
_MAX_HEADERS = 100
_FRAMING_WORDS = ("Content-Length", "Transfer-Encoding", "chunk")  # in llhttp's error messages


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


class _Reject(Exception):
    """Raised in a parser callback to stop parsing and answer ``status`` with libevent's error page."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class _Request:
    """One request as the parser delivers it (httptools' callbacks fill it in)."""

    __slots__ = (
        "declared",
        "header_count",
        "headers",
        "keep_alive",
        "method",
        "parts",
        "size",
        "target",
        "too_large",
        "version",
    )

    def __init__(self) -> None:
        self.method, self.target, self.version = "", b"", "1.1"
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.parts: list[bytes] = []
        self.size = self.header_count = 0
        self.too_large = False
        self.declared: int | None = None  # Content-Length, when given


class _Handler(socketserver.BaseRequestHandler):
    """One connection: bytes from the socket into httptools' parser (llhttp), requests answered in order.

    httptools does the HTTP/1.x framing (request line, headers, Content-Length and chunked bodies,
    keep-alive per version and ``Connection``, rejecting malformed or ambiguous framing); this class adds
    what TF Serving's libevent server answers: limits on the request line (414), header lines and their
    count (431), the body cap (413, draining a small excess so the client reads the answer), ``Expect:
    100-continue``, and the error pages.
    """

    server: _HTTPServer

    def setup(self) -> None:
        self.connection = self.request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection.settimeout(IDLE_TIMEOUT_S)
        self.idle = True
        self.close_connection = False
        self.command, self.path, self.request_version = "", "", "HTTP/1.1"
        self.headers: dict[str, str] = {}
        self._parser = httptools.HttpRequestParser(self)
        self._current: _Request | None = None
        self._ready: collections.deque[_Request] = collections.deque()
        self.server.track(self, True)

    def finish(self) -> None:
        self.server.track(self, False)

    def handle(self) -> None:
        sock = self.connection
        try:
            while not self.close_connection:
                self.idle = self._current is None
                if self.idle and self.server.stopping:
                    return
                data = sock.recv(65536)
                self.idle = False
                if not data:
                    return
                try:
                    self._parser.feed_data(data)
                except httptools.HttpParserUpgrade:  # libevent does not upgrade: answer what came, then close
                    self.close_connection = True
                except httptools.HttpParserCallbackError as exc:
                    self._serve_ready()
                    cause = exc.__context__
                    if isinstance(cause, _Reject):
                        self._bad_request(cause.status)
                    elif isinstance(cause, _BodyTooLarge):
                        self._too_large(cause)
                    else:
                        raise
                    return
                except httptools.HttpParserError as exc:
                    self._serve_ready()
                    logger.debug("malformed request from %s: %s", self.client_address, exc)
                    if self._framing_error(exc):
                        self.close_connection = True
                        self._reply(400, error_json("Malformed request body framing"))
                    else:
                        self._bad_request(400)
                    return
                self._serve_ready()
        except (TimeoutError, ConnectionError, OSError) as exc:
            logger.debug("connection %s closed: %s", self.client_address, exc)
        finally:
            self.idle = True

    def _framing_error(self, exc: Exception) -> bool:
        """A bad body or body framing (Content-Length, Transfer-Encoding, a chunk), as opposed to a bad
        request line or header: the former is answered in JSON."""
        if self._current is None:
            return False
        return bool(self._current.method) or any(word in str(exc) for word in _FRAMING_WORDS)

    # ------------------------------------------------------------------ httptools callbacks
    def _parsing(self) -> _Request:
        """The request being parsed: llhttp calls on_message_begin before the other callbacks."""
        request = self._current
        assert request is not None
        return request

    def on_message_begin(self) -> None:
        self._current = _Request()

    def on_url(self, url: bytes) -> None:
        request = self._parsing()
        request.target += url
        if len(request.target) > _MAX_LINE:
            raise _Reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._parsing()
        request.header_count += 1
        if len(name) + len(value) > _MAX_LINE or request.header_count > _MAX_HEADERS:
            raise _Reject(431)
        key, text = name.decode("latin-1").lower(), value.decode("latin-1").strip()
        headers = request.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        request, parser = self._parsing(), self._parser
        request.method = parser.get_method().decode("ascii", "replace")
        request.version = parser.get_http_version()
        if request.version not in ("1.0", "1.1"):
            raise _Reject(400)
        request.keep_alive = parser.should_keep_alive()
        limit = self.server.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            request.declared = int(length)  # llhttp has checked the digits
            if request.declared > limit:
                if request.declared > limit + _MAX_DRAIN_BYTES:
                    raise _BodyTooLarge(request.declared)
                request.too_large = True  # read (and drop) the body, then answer 413
        if request.headers.get("expect", "").lower() == "100-continue":
            self.connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self._parsing()
        request.size += len(body)
        if request.too_large:
            return
        if request.size > self.server.max_body_bytes:  # chunked: the size is known only as it comes
            raise _BodyTooLarge(None)
        request.parts.append(body)

    def on_message_complete(self) -> None:
        self._ready.append(self._parsing())
        self._current = None

    # ------------------------------------------------------------------ requests
    def _serve_ready(self) -> None:
        while self._ready and not self.close_connection:
            request = self._ready.popleft()
            self.command = request.method
            self.path = request.target.decode("latin-1")
            self.request_version = f"HTTP/{request.version}"
            self.headers = request.headers
            self.close_connection = not request.keep_alive
            if request.too_large:
                self._too_large(_BodyTooLarge(request.declared))
                return
            self._serve(b"".join(request.parts))  # every method: TF Serving answers unknown ones under /v1
        if self.close_connection:
            self._ready.clear()

    def _bad_request(self, status: int) -> None:
        self.close_connection = True
        self.command = ""
        self._reply(status, _ERROR_PAGE.format(code=status, reason=_REASONS[status]), _HTML)

    def _too_large(self, exc: _BodyTooLarge) -> None:
        size = "a chunked or compressed body" if exc.size is None else f"{exc.size} bytes"
        self.close_connection = True
        self._reply(413, error_json(f"Request body too large: {size}; the limit is {self.server.max_body_bytes} bytes"))

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

    def _serve(self, body: bytes) -> None:
        method, target = self.command, self.path
        server = self.server
        if body and "gzip" in self.headers.get("content-encoding", "").lower():
            try:
                body = self._gunzip(body)
            except _BodyTooLarge as exc:
                self._too_large(exc)
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

    def _reply(self, status: int, text: str, content_type: str = "application/json") -> None:
        payload = text.encode("utf-8")
        if self.server.stopping:
            self.close_connection = True
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Date: {_Date.now()}\r\n"
            f"Content-Length: {len(payload)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            head += "Connection: keep-alive\r\n"
        data = (head + "\r\n").encode("latin-1")
        if self.command != "HEAD":
            data += payload
        self.connection.sendall(data)


class _HTTPServer(socketserver.ThreadingTCPServer):
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
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("RestServer is not started")
        return self._httpd.server_address[1]

    def start(self) -> RestServer:
        if self._httpd is not None:
            raise RuntimeError("RestServer already started")
        self._httpd = _HTTPServer(
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
