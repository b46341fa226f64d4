"""TF Serving's REST API (port 8501) over one pooled ``requests.Session``.

``https://`` verifies the server against ``Tls.ca_cert`` (else requests' certifi bundle) and presents
``Tls.client_cert`` when given; headers (e.g. ``Authorization``) are the session's, so on every request.

All error mapping of this transport is in :meth:`RestTransport._send`, in the words of :class:`RestCodec`
(shared with the asyncio transport, :mod:`retrieval_client.transports.rest_aio`, as are the bodies and answers):
requests' exceptions (connection refused, timeouts, TLS handshakes: :class:`~retrieval_client.errors.TlsError`; an
HTTP/2 answer: the port speaks gRPC) and HTTP error responses (TF Serving's ``{"error": "..."}`` JSON or any
other body) become :mod:`retrieval_client.errors` exceptions. The seam for tests is requests' own: pass ``adapter=`` (a
``requests.adapters.BaseAdapter``) and no socket is opened.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from retrieval_client.credentials import Headers, Tls
from retrieval_client.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    TlsError,
    UnavailableError,
    UnknownError,
    error_for,
)
from retrieval_client.results import ModelMetadata, Signature, TensorSpec, VersionStatus
from retrieval_client.settings import Endpoint, ModelRef
from retrieval_client.tensors import Tensor

log = logging.getLogger(__name__)

# The inverse of TF Serving's ToHTTPStatusCode, taking the first code of each shared status.
HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")
_SSL_REASON = re.compile(r"\[SSL[^\]]*\][^'\")(]*")


class RestCodec:
    """Everything of the REST transport but the sending: URLs, bodies, answers, and the words of every error.
    Shared by :class:`RestTransport` and the asyncio one (:mod:`retrieval_client.transports.rest_aio`)."""

    default_bundle = "requests' default CA bundle (certifi)"

    def __init__(self, endpoint: Endpoint, tls: Tls | None) -> None:
        self.endpoint = endpoint
        self.tls = tls or Tls()
        self._base = f"{endpoint.scheme}://{endpoint.netloc}{endpoint.path}/v1/models/"
        self._output_names: dict[tuple[str, int | None, str | None, str], str] = {}
        self._lock = threading.Lock()

    def _url(self, model: ModelRef, suffix: str = "") -> str:
        url = self._base + quote(model.name, safe="")
        if model.version is not None:
            url += f"/versions/{model.version}"
        elif model.label is not None:
            url += f"/labels/{quote(model.label, safe='')}"
        return url + suffix

    def _predict_body(self, model: ModelRef, inputs: Mapping[str, Tensor]) -> bytes:
        body: dict[str, Any] = {"inputs": {name: _to_json(t.nested()) for name, t in inputs.items()}}
        if model.signature_name:
            body["signature_name"] = model.signature_name
        return json.dumps(body).encode()

    def _raw_outputs(self, reply: Any) -> tuple[Any, bool]:
        """(the reply's outputs, whether they are named): one output comes without its name (TF Serving's
        columnar format), and the signature knows it."""
        if not isinstance(reply, dict) or "outputs" not in reply:
            raise UnknownError(f"predict response from {self.endpoint} has no 'outputs': {_snippet(reply)}")
        outputs = reply["outputs"]
        return outputs, isinstance(outputs, dict) and set(outputs) != {"b64"}

    def _output_key(self, model: ModelRef) -> tuple[str, int | None, str | None, str]:
        return (model.name, model.version, model.label, model.signature_name or "serving_default")

    def _cached_output_name(self, model: ModelRef) -> str | None:
        # Always from the signature: naming it after a one-name output_filter would relabel another tensor.
        with self._lock:
            return self._output_names.get(self._output_key(model))

    def _output_name(self, model: ModelRef, metadata: ModelMetadata) -> str:
        key = self._output_key(model)
        signature = metadata.signatures.get(key[3])
        if signature is None or len(signature.outputs) != 1:
            raise UnknownError(
                f"{model} answered one unnamed output, but its signature {key[3]!r} does not have exactly one output"
            )
        name = next(iter(signature.outputs))
        with self._lock:
            self._output_names[key] = name
        return name

    def _predict_result(
        self, model: ModelRef, outputs: dict[str, Any], output_filter: Sequence[str] | None
    ) -> dict[str, Any]:
        outputs = {name: _from_json(value) for name, value in outputs.items()}
        if output_filter:  # REST has no output_filter; filter here so both transports answer alike.
            missing = [name for name in output_filter if name not in outputs]
            if missing:
                raise InvalidArgumentError(
                    f"output tensor alias not found in signature outputs: {', '.join(missing)} "
                    f"(outputs of {model}: {', '.join(sorted(outputs))})"
                )
            outputs = {name: outputs[name] for name in output_filter}
        return outputs

    def _status_result(self, reply: Any) -> list[VersionStatus]:
        try:
            versions = [
                VersionStatus(
                    int(v["version"]),
                    v["state"],
                    v.get("status", {}).get("error_code", "OK"),
                    v.get("status", {}).get("error_message", ""),
                )
                for v in reply["model_version_status"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise UnknownError(f"unexpected status response from {self.endpoint}: {_snippet(reply)}") from exc
        return sorted(versions, key=lambda v: v.version, reverse=True)

    def _metadata_result(self, reply: Any) -> ModelMetadata:
        try:
            spec = reply["model_spec"]
            defs = reply["metadata"]["signature_def"]["signature_def"]
            signatures = {
                name: Signature(
                    name, _specs(d.get("inputs", {})), _specs(d.get("outputs", {})), d.get("method_name", "")
                )
                for name, d in defs.items()
            }
            return ModelMetadata(spec["name"], int(spec.get("version") or 0), signatures)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnknownError(f"unexpected metadata response from {self.endpoint}: {_snippet(reply)}") from exc

    # -- the words of every error, whichever library sent the request ------------------------------------
    def _timed_out(self, url: str, timeout: float) -> DeadlineExceededError:
        return DeadlineExceededError(f"no answer from {url} within {timeout:.3g} s")

    def _unreachable(self, url: str, reason: str) -> UnavailableError:
        return UnavailableError(f"cannot reach {url}: {reason}")

    def _speaks_grpc(self) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{self.endpoint} answered with HTTP/2 frames, not HTTP/1.1: this port speaks gRPC, not TF "
            f"Serving's REST API; use grpc{'s' if self.endpoint.tls else ''}://{self.endpoint.netloc} "
            "(or the REST port, 8501 by default)"
        )

    def _tls_failure(self, exc: Exception) -> str:
        """What went wrong in a TLS handshake, and what to check."""
        match = _SSL_REASON.search(str(exc))
        reason = match.group(0).strip() if match else str(exc)
        message = f"TLS handshake with {self.endpoint} failed: {reason}"
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            message += "; " + self.tls.not_trusted(self.default_bundle)
        elif "WRONG_VERSION_NUMBER" in reason or "record layer failure" in reason:
            message += f"; does {self.endpoint.netloc} speak TLS? (http:// for a plain port)"
        return message

    def _reply(self, method: str, url: str, status: int, reason: str | None, text: str) -> Any:
        """The JSON of a 2xx answer; any other status as the error of its code (TF Serving's ``{"error": ...}``
        text, else the status line and the start of the body)."""
        if status < 400:  # requests' Response.ok
            try:
                return json.loads(text)
            except ValueError as exc:
                raise UnknownError(
                    f"{method} {url}: HTTP {status} with a body that is not JSON: {_snippet(text)}"
                ) from exc
        raise error_for(HTTP_CODES.get(status, "UNKNOWN"), _error_message(status, reason, url, text))


class RestTransport(RestCodec):
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        tls: Tls | None = None,
        headers: Headers = (),
        adapter: BaseAdapter | None = None,
        pool_maxsize: int = 16,
    ) -> None:
        super().__init__(endpoint, tls)
        self._session = requests.Session()
        # No proxies/.netrc/REQUESTS_CA_BUNDLE lookups from the environment on every call: this talks to a
        # known server, and what it trusts is Tls's (retrieval_client.credentials).
        self._session.trust_env = False
        self._session.verify = self.tls.ca_cert or True
        if self.tls.client_cert:
            self._session.cert = (
                (self.tls.client_cert, self.tls.client_key) if self.tls.client_key else self.tls.client_cert
            )
        self._session.headers.update(dict(headers))
        adapter = adapter or HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    # -- the Transport interface -------------------------------------------------------------------------
    def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        reply = self._send("POST", self._url(model, ":predict"), self._predict_body(model, inputs), timeout)
        outputs, named = self._raw_outputs(reply)
        if not named:
            name = self._cached_output_name(model) or self._output_name(model, self.metadata(model, timeout))
            outputs = {name: outputs}
        return self._predict_result(model, outputs, output_filter)

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return self._status_result(self._send("GET", self._url(model), None, timeout))

    def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        return self._metadata_result(self._send("GET", self._url(model, "/metadata"), None, timeout))

    def close(self) -> None:
        self._session.close()

    # -- the one place where requests' errors are mapped -------------------------------------------------
    def _send(self, method: str, url: str, body: bytes | None, timeout: float) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            response = self._session.request(method, url, data=body, headers=headers, timeout=timeout)
        except requests.Timeout as exc:
            raise self._timed_out(url, timeout) from exc
        except requests.exceptions.SSLError as exc:
            raise TlsError(self._tls_failure(exc)) from exc
        except requests.ConnectionError as exc:
            if _speaks_http2(exc):
                raise self._speaks_grpc() from exc
            raise self._unreachable(url, _reason(exc)) from exc
        except requests.RequestException as exc:
            raise UnknownError(f"{method} {url} failed: {exc}") from exc
        return self._reply(method, response.url or url, response.status_code, response.reason, response.text)


def _error_message(status: int, reason: str | None, url: str, text: str) -> str:
    """TF Serving's ``{"error": ...}`` text, else the status line and the start of whatever body came."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return error
    body = _snippet(text) if text else "(empty body)"
    return f"HTTP {status} {reason or ''}".rstrip() + f" from {url}: {body}"


def _speaks_http2(exc: BaseException) -> bool:
    """Whether a failed HTTP/1.1 exchange read an HTTP/2 SETTINGS frame instead of a status line: a gRPC port
    (an HTTP/2 server sends SETTINGS first, RFC 9113 section 3.4; http.client reports it as BadStatusLine,
    e.g. ``'\\x00\\x00\\x18\\x04...'``: a 3-byte length, then type 4)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, http.client.BadStatusLine):
            line = item.args[0] if item.args and isinstance(item.args[0], str) else ""
            return len(line) >= 5 and line[3] == "\x04" and line[4] in "\x00\x01"
        todo += [*item.args, item.__cause__, item.__context__]
    return False


def _reason(exc: Exception) -> str:
    match = _ERRNO.search(str(exc))
    return match.group(0).strip() if match else str(exc)


def _snippet(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value)[: limit + 1]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    return value


def _specs(tensors: dict[str, Any]) -> dict[str, TensorSpec]:
    out = {}
    for alias, info in tensors.items():
        shape_json = info.get("tensor_shape", {})
        shape = (
            None if shape_json.get("unknown_rank") else tuple(int(d.get("size", 0)) for d in shape_json.get("dim", []))
        )
        out[alias] = TensorSpec(info.get("name", ""), info.get("dtype", "DT_INVALID"), shape)
    return out
