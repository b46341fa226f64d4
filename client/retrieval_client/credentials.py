"""What a client presents and trusts: TLS files (CA bundle, client certificate) and headers on every request.

TLS is asked for by the URL (``https://`` for REST, ``grpcs://`` for gRPC, as grpcurl and Triton's clients
spell it); :class:`Tls` says what to trust and which certificate to present. Headers go on every request:
HTTP headers over REST, call metadata over gRPC (names lowercased, as HTTP/2 and gRPC require).

Defaults come from the environment, read when a client is made (as ``$RETRIEVAL_URL``):

=========================  ====================================================================================
``RETRIEVAL_CA_CERT``      PEM bundle of the CAs to trust (default: the public CAs of certifi / grpcio's roots)
``RETRIEVAL_CLIENT_CERT``  PEM client certificate to present (mutual TLS); with ``RETRIEVAL_CLIENT_KEY``, or
                           a PEM holding both
``RETRIEVAL_CLIENT_KEY``   its PEM private key
``RETRIEVAL_HEADERS``      ``name=value,name2=value2``, values percent-encoded: OpenTelemetry's
                           ``OTEL_EXPORTER_OTLP_HEADERS`` format (W3C Baggage)
``RETRIEVAL_TOKEN``        a bearer token: ``Authorization: Bearer <token>`` (``RETRIEVAL_HEADERS`` may override)
=========================  ====================================================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from retrieval_client.errors import InvalidArgumentError

CA_CERT_ENV = "RETRIEVAL_CA_CERT"
CLIENT_CERT_ENV = "RETRIEVAL_CLIENT_CERT"
CLIENT_KEY_ENV = "RETRIEVAL_CLIENT_KEY"
HEADERS_ENV = "RETRIEVAL_HEADERS"
TOKEN_ENV = "RETRIEVAL_TOKEN"

Headers = tuple[tuple[str, str], ...]
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")  # RFC 9110


@dataclass(frozen=True)
class Tls:
    """TLS for ``https://`` and ``grpcs://`` URLs: PEM file paths, checked readable when made.

    ``ca_cert``: the CAs that may sign the server's certificate (None: the public CAs requests trusts through
    certifi and grpcio through its bundled roots, both Mozilla's list; for the operating system's store pass
    e.g. ``/etc/ssl/certs/ca-certificates.crt``). ``client_cert`` / ``client_key``: the certificate to present
    when the server asks for one (mutual TLS); ``client_key`` may be omitted when ``client_cert`` holds both.
    """

    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca_cert", "client_cert", "client_key"):
            path = getattr(self, name)
            if path is None:
                continue
            if not isinstance(path, (str, os.PathLike)) or not str(path):
                raise InvalidArgumentError(f"Tls.{name} must be the path of a PEM file (got {path!r})")
            object.__setattr__(self, name, os.fspath(path))
            if not os.access(path, os.R_OK) or not os.path.isfile(path):
                raise InvalidArgumentError(f"Tls.{name}: cannot read the PEM file {str(path)!r}")
        if self.client_key is not None and self.client_cert is None:
            raise InvalidArgumentError("Tls.client_key needs Tls.client_cert (the certificate it belongs to)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tls:
        """The files named by ``RETRIEVAL_CA_CERT``, ``RETRIEVAL_CLIENT_CERT`` and ``RETRIEVAL_CLIENT_KEY``."""
        env = os.environ if environ is None else environ
        return cls(env.get(CA_CERT_ENV) or None, env.get(CLIENT_CERT_ENV) or None, env.get(CLIENT_KEY_ENV) or None)

    def not_trusted(self, default: str) -> str:
        """What to do about a server certificate that ``ca_cert`` (None: ``default``, the transport's own
        bundle) does not vouch for; both transports' TLS errors end with it."""
        trusted = self.ca_cert or default
        return (
            f"the server's certificate is not signed by a CA in {trusted}: give the CA that signed it "
            f"(Tls(ca_cert=...), --ca-cert or ${CA_CERT_ENV})"
        )

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) as grpc.ssl_channel_credentials takes them."""
        roots = Path(self.ca_cert).read_bytes() if self.ca_cert else None
        chain = Path(self.client_cert).read_bytes() if self.client_cert else None
        key = Path(self.client_key).read_bytes() if self.client_key else chain
        return roots, key, chain


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` (curl's ``-H`` syntax) as a (name, value) pair; InvalidArgumentError otherwise."""
    name, sep, value = text.partition(":")
    if not sep:
        raise InvalidArgumentError(f'a header is "Name: value" (got {text!r})')
    return check_header(name.strip(), value.strip())


def check_header(name: str, value: str) -> tuple[str, str]:
    """A header as both transports can send it: a token name (RFC 9110), a value without line breaks or other
    control characters. gRPC metadata also takes only printable ASCII values (``-bin`` keys are binary)."""
    if not isinstance(name, str) or not name or not set(name) <= _TOKEN_CHARS:
        raise InvalidArgumentError(f"bad header name {name!r}: letters, digits and !#$%&'*+-.^_`|~ only")
    if not isinstance(value, str) or any(not (" " <= ch <= "~") for ch in value):
        raise InvalidArgumentError(f"bad value for header {name!r}: printable ASCII only, no line breaks")
    if name.lower().endswith("-bin"):
        raise InvalidArgumentError(f"header {name!r}: gRPC's binary (-bin) metadata is not supported")
    return name, value


def headers(items: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    """Checked (name, value) pairs from a mapping or pairs; a later pair replaces an earlier one of the same
    name (names compare case-insensitively, as HTTP's do)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    merged: dict[str, tuple[str, str]] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise InvalidArgumentError(f"headers are (name, value) pairs or a mapping (got {pair!r})")
        name, value = check_header(*pair)
        merged.pop(name.lower(), None)  # the later one wins, and takes the later position
        merged[name.lower()] = (name, value)
    return tuple(merged.values())


def headers_from_env(environ: Mapping[str, str] | None = None) -> Headers:
    """``Authorization: Bearer $RETRIEVAL_TOKEN``, then ``$RETRIEVAL_HEADERS`` (which wins on the same name)."""
    env = os.environ if environ is None else environ
    pairs: list[tuple[str, str]] = []
    token = env.get(TOKEN_ENV)
    if token:
        pairs.append(("Authorization", f"Bearer {token}"))
    for item in filter(None, (part.strip() for part in env.get(HEADERS_ENV, "").split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgumentError(f"${HEADERS_ENV}: expected name=value[,name=value...] (got {item!r})")
        pairs.append((name.strip(), unquote(value.strip())))
    try:
        return headers(pairs)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"${HEADERS_ENV} / ${TOKEN_ENV}: {exc.message}") from None
