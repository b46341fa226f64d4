"""TF Serving's REST API for asyncio: one pooled ``aiohttp.ClientSession``, the same URLs, bodies, answers and
error words as :class:`retrieval_client.transports.rest.RestTransport` (its
:class:`~retrieval_client.transports.rest.RestCodec`); only the sending differs.

aiohttp rather than httpx: it is released every few weeks while httpx has had no release since 0.28.1 (Dec
2024, still 0.x), it is faster under many concurrent requests on one loop (httpx's pool is the known
bottleneck there: encode/httpx#3215), and it is what tritonclient's ``http.aio`` client is built on.

The session is made on the first call, in the event loop that makes it (an aiohttp session belongs to one
loop). As the sync transport: no proxy or .netrc lookups from the environment (``trust_env=False``, aiohttp's
default), ``https://`` verifies against ``Tls.ca_cert`` else certifi's bundle (requests' default, so both
clients trust the same CAs), and presents ``Tls.client_cert``.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from retrieval_client.credentials import Headers, Tls
from retrieval_client.errors import TlsError, UnknownError
from retrieval_client.results import ModelMetadata, VersionStatus
from retrieval_client.settings import Endpoint, ModelRef
from retrieval_client.tensors import Tensor
from retrieval_client.transports.rest import RestCodec

_JSON = {"Content-Type": "application/json"}
_SETTINGS_FRAME = re.compile(r"b'\\x00\\x00(?:\\x[0-9a-f]{2}|[^\\])\\x04\\x0[01]")


class AsyncRestTransport(RestCodec):
    def __init__(
        self, endpoint: Endpoint, *, tls: Tls | None = None, headers: Headers = (), pool_maxsize: int = 100
    ) -> None:
        super().__init__(endpoint, tls)
        self._headers = dict(headers)
        self._pool_maxsize = pool_maxsize
        self._ssl = _ssl_context(self.tls) if endpoint.tls else None
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_maxsize, ssl=self._ssl if self._ssl else True)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, trust_env=False)
        return self._session

    # -- the AsyncTransport interface ----------------------------------------------------------------------
    async def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        reply = await self._send("POST", self._url(model, ":predict"), self._predict_body(model, inputs), timeout)
        outputs, named = self._raw_outputs(reply)
        if not named:
            name = self._cached_output_name(model) or self._output_name(model, await self.metadata(model, timeout))
            outputs = {name: outputs}
        return self._predict_result(model, outputs, output_filter)

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return self._status_result(await self._send("GET", self._url(model), None, timeout))

    async def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        return self._metadata_result(await self._send("GET", self._url(model, "/metadata"), None, timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- the one place where aiohttp's errors are mapped (in RestCodec's words) ---------------------------
    async def _send(self, method: str, url: str, body: bytes | None, timeout: float) -> Any:
        try:
            async with self._open().request(
                method,
                url,
                data=body,
                headers=_JSON if body is not None else None,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
        except TimeoutError as exc:  # asyncio.TimeoutError too; a cancelled task raises CancelledError instead
            raise self._timed_out(url, timeout) from exc
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            # the ssl module's own error, as requests reports it (aiohttp's wraps it in words of its own)
            cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
            raise TlsError(self._tls_failure(cause)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(url, _reason(exc.os_error)) from exc
        except aiohttp.ClientResponseError as exc:
            if _speaks_http2(exc):
                raise self._speaks_grpc() from exc
            raise UnknownError(f"{method} {url} failed: {exc}") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:  # reset, server disconnected
            raise self._unreachable(url, _reason(exc)) from exc
        except aiohttp.ClientError as exc:
            raise UnknownError(f"{method} {url} failed: {exc}") from exc
        return self._reply(method, str(response.url), response.status, response.reason, text)


def _ssl_context(tls: Tls) -> ssl.SSLContext:
    if tls.ca_cert:
        context = ssl.create_default_context(cafile=tls.ca_cert)
    else:
        try:
            import certifi  # requests' bundle (requests depends on it)
        except ImportError:  # pragma: no cover - the client extra installs requests, so certifi
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=certifi.where())
    if tls.client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


def _reason(exc: BaseException) -> str:
    """``[Errno 111] Connection refused``: the words the sync transport gives (from the OS's message)."""
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return f"[Errno {errno}] {os.strerror(errno)}"
    return str(exc) or type(exc).__name__


def _speaks_http2(exc: aiohttp.ClientResponseError) -> bool:
    """Whether an HTTP/1.1 parse failed on an HTTP/2 SETTINGS frame (see rest._speaks_http2): aiohttp's
    "Bad status line" names the bytes it read, ``b'\\x00\\x00\\x18\\x04\\x00...'``: a 3-byte length, then
    type 4 and flags 0 or 1."""
    return _SETTINGS_FRAME.search(exc.message) is not None
