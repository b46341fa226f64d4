"""One HTTP/1.x connection of the REST server, as libevent's ``evhttp`` connection serves it for TF Serving.

:class:`ConnectionHandler` feeds bytes from the socket into httptools' parser (llhttp, Node.js's parser, the
one uvicorn uses) and answers the requests in order: it rejects a request with both ``Content-Length`` and
``Transfer-Encoding`` (the request-smuggling ambiguity), a negative or non-numeric ``Content-Length``, bad
chunk sizes and invalid header-name characters per the RFC 9112 grammar, parses chunk extensions and
trailers, and answers pipelined requests in order. llhttp rejects bare-LF line ends (400), which libevent
accepts. On top of it, this module answers what TF Serving's libevent server does: limits on the request
line (414), header lines and their count (431), the body cap (413, draining a small excess so the client
reads the answer), ``Expect: 100-continue``, gzip bodies (``auto_uncompress_input``), libevent's HTML error
pages, and the ``--rest_api_timeout_in_ms`` deadline around each API request. The server around the
connections is :mod:`serving.http_server`.
"""

from __future__ import annotations

import collections
import email.utils
import http
import logging
import re
import socket
import socketserver
import threading
import time
import zlib
from typing import TYPE_CHECKING

import httptools

from serving.json_writer import error_json

if TYPE_CHECKING:
    from serving.http_server import HTTPServer

logger = logging.getLogger(__name__)

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


class ConnectionHandler(socketserver.BaseRequestHandler):
    """One connection: bytes from the socket into httptools' parser (llhttp), requests answered in order.

    httptools does the HTTP/1.x framing (request line, headers, Content-Length and chunked bodies,
    keep-alive per version and ``Connection``, rejecting malformed or ambiguous framing); this class adds
    what TF Serving's libevent server answers: limits on the request line (414), header lines and their
    count (431), the body cap (413, draining a small excess so the client reads the answer), ``Expect:
    100-continue``, and the error pages.
    """

    server: HTTPServer

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
