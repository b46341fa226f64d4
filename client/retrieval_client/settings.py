"""Settings of a client, validated on construction; the default URL is read from the environment per call."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from retrieval_client.credentials import Headers, Tls, headers
from retrieval_client.errors import InvalidArgumentError

URL_ENV = "RETRIEVAL_URL"
DEFAULT_URL = "http://localhost:8501"
# scheme -> the port a URL without one means: TF Serving's for the plain schemes, HTTPS's for the TLS ones
# (what an ingress or a TLS proxy listens on).
DEFAULT_PORTS = {"http": 8501, "https": 443, "grpc": 8500, "grpcs": 443}
TLS_SCHEMES = frozenset({"https", "grpcs"})
GRPC_SCHEMES = frozenset({"grpc", "grpcs"})
# gRPC's target names after grpc:// or grpcs://: a resolver, then what it resolves
# (https://github.com/grpc/grpc/blob/master/doc/naming.md).
_TARGET = re.compile(r"(?P<resolver>dns|ipv4|ipv6|unix|unix-abstract|vsock):(?P<rest>.*)", re.IGNORECASE | re.DOTALL)
# dns:[//authority/]host[:port]; ipv4:host[:port][,...], ipv6:[host][:port][,...] (see Endpoint.parse).
_DNS = re.compile(r"(?://(?P<authority>[^/]*)/)?(?P<hostport>[^/]+)", re.DOTALL)
_HOSTPORT = re.compile(r"(?P<host>\[[^\]]+\]|[^:\[\]]+)(?::(?P<port>[0-9]*))?")


def default_url() -> str:
    """``$RETRIEVAL_URL`` if set (read now, not at import), else ``http://localhost:8501``."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass(frozen=True)
class Retry:
    """Retries of a call that failed with UNAVAILABLE (and nothing else), within the call's deadline.

    ``attempts`` counts every try (1 = no retry); the n-th wait is ``backoff * multiplier**(n-1)`` capped at
    ``max_backoff``, and never past the deadline.
    """

    attempts: int = 3
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or not 1 <= self.attempts <= 20:
            raise InvalidArgumentError(f"Retry.attempts must be an int in [1, 20] (got {self.attempts!r})")
        if not 0 <= self.backoff <= self.max_backoff:
            raise InvalidArgumentError(
                f"Retry needs 0 <= backoff <= max_backoff (got {self.backoff!r}, {self.max_backoff!r})"
            )
        if self.multiplier < 1:
            raise InvalidArgumentError(f"Retry.multiplier must be >= 1 (got {self.multiplier!r})")

    def delays(self) -> Iterator[float]:
        """The waits between attempts: ``attempts - 1`` of them."""
        delay = self.backoff
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_backoff)
            delay *= self.multiplier


@dataclass(frozen=True)
class Endpoint:
    """A parsed server URL: ``scheme`` picks the transport (http/https: REST, grpc/grpcs: gRPC) and TLS (https,
    grpcs). ``host:port`` without a scheme is ``http://host:port``, as tritonclient takes it.

    After ``grpc://`` or ``grpcs://`` may come a gRPC target name instead of ``host:port``, handed to grpc as
    given (:attr:`target`) so that grpc resolves it and balances over the addresses: ``dns:///host:port`` (a
    Kubernetes headless Service: every pod's address), ``dns://resolver-ip/host:port``, ``ipv4:10.0.0.1:8500``,
    ``ipv6:[::1]:8500``, ``unix:/path/to.sock`` (``unix:///abs/path`` too), ``unix-abstract:name``,
    ``vsock:cid:port``; ipv4:/ipv6: may list several addresses, comma-separated
    (``grpc://ipv4:10.0.0.1:8500,10.0.0.2:8500``: in a list of URLs, the parts after such a target that have no
    scheme are its addresses). An address without a port gets the scheme's default (8500, or 443 for grpcs), as
    ``grpc://host`` does, not gRPC's own 443. A dns:, ipv4: or ipv6: target is balanced by grpc per call over
    every address it resolves to (gRPC's ``round_robin`` policy; ``host:port`` keeps grpc's default,
    ``pick_first``: one connection).
    """

    scheme: str
    host: str
    port: int
    path: str = ""
    target: str = ""  # a gRPC target name (dns:///host:port, ...), passed to grpc as given; "" for host:port

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        if not isinstance(url, str) or not url:
            raise InvalidArgumentError(f"server URL must look like http://host:8501 or grpc://host:8500 (got {url!r})")
        scheme, sep, rest = url.partition("://")
        target = _TARGET.fullmatch(rest) if sep else None
        if target and re.fullmatch(r"[0-9]*/?", target.group("rest")):
            target = None  # a host named like a resolver, with a port: grpc://dns:8500
        if target and scheme.lower() in GRPC_SCHEMES:
            return cls._target(scheme.lower(), target, url)
        if target and scheme.lower() in DEFAULT_PORTS:
            raise InvalidArgumentError(
                f"a gRPC target name ({target.group('resolver')}:...) is for grpc:// and grpcs:// URLs, not "
                f"{scheme}:// (got {url!r})"
            )
        parts = urlsplit(url if "://" in url else f"http://{url}")
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise InvalidArgumentError(
                f"unsupported URL scheme {parts.scheme!r} in {url!r}; use http://, https://, grpc:// or grpcs://"
            )
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise InvalidArgumentError(f"bad port in server URL {url!r}") from exc
        if not parts.hostname:
            raise InvalidArgumentError(f"no host in server URL {url!r}")
        if scheme in GRPC_SCHEMES and parts.path.strip("/"):
            raise InvalidArgumentError(
                f"a {scheme}:// URL has no path (got {url!r}); a gRPC target name goes as {scheme}://dns:///host:port"
            )
        return cls(scheme, parts.hostname, port, parts.path.rstrip("/"))

    @classmethod
    def _target(cls, scheme: str, target: re.Match[str], url: str) -> Endpoint:
        """``grpc://`` + a gRPC target name: its host and port (for messages) and the target for grpc."""
        resolver, rest = target.group("resolver").lower(), target.group("rest")
        bad = InvalidArgumentError(
            f"bad gRPC target in {url!r}: use e.g. {scheme}://dns:///host:8500, {scheme}://ipv4:10.0.0.1:8500 or "
            f"{scheme}://unix:/path/to.sock"
        )
        if resolver in ("unix", "unix-abstract", "vsock"):  # no host and port: the target is the address
            if not rest.strip("/"):
                raise bad
            return cls(scheme, f"{resolver}:{rest}", 0, "", f"{resolver}:{rest}")
        authority = None
        if resolver == "dns":
            dns = _DNS.fullmatch(rest)
            if not dns or "," in rest:
                raise bad
            authority, rest = dns.group("authority"), dns.group("hostport")
        addresses = []
        for address in rest.split(","):
            hostport = _HOSTPORT.fullmatch(address.strip())
            if not hostport:
                raise bad
            host, port_text = hostport.group("host"), hostport.group("port")
            if (resolver == "ipv6") != host.startswith("[") and resolver != "dns":  # dns: either
                raise bad
            port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
            if not 0 < port < 65536:
                raise InvalidArgumentError(f"bad port in server URL {url!r}")
            addresses.append((host, port))
        prefix = f"dns://{authority}/" if authority is not None else f"{resolver}:"
        (host, port), *_ = addresses
        return cls(scheme, host.strip("[]"), port, "", prefix + ",".join(f"{h}:{p}" for h, p in addresses))

    @property
    def balanced(self) -> bool:
        """Whether grpc should balance calls over the target's addresses (a dns:, ipv4: or ipv6: target)."""
        return self.target.startswith(("dns:", "ipv4:", "ipv6:"))

    @property
    def tls(self) -> bool:
        return self.scheme in TLS_SCHEMES

    @property
    def grpc(self) -> bool:
        return self.scheme in GRPC_SCHEMES

    @property
    def netloc(self) -> str:
        """``host:port`` (or a unix/vsock target as given), for messages and REST URLs."""
        if not self.port:
            return self.target
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def grpc_target(self) -> str:
        """What a gRPC channel is opened on: the target name as given, else ``host:port``."""
        return self.target or self.netloc

    def __str__(self) -> str:
        return f"{self.scheme}://{self.grpc_target}{self.path}"


@dataclass(frozen=True)
class Settings:
    """Everything a :class:`retrieval_client.Client` needs besides its transport. ``tls`` and ``headers``: see
    :mod:`retrieval_client.credentials` (``tls`` applies to the ``https://`` and ``grpcs://`` URLs of the list)."""

    url: str = field(default_factory=default_url)
    timeout: float = 10.0
    retry: Retry = field(default_factory=Retry)
    retrieval_model: str = "retrieval"
    similar_model: str = "similar_movies"
    tls: Tls = field(default_factory=Tls)
    headers: Headers = field(default=(), repr=False)  # tokens: kept out of reprs, so out of logs and tracebacks

    def __post_init__(self) -> None:
        self.endpoints  # noqa: B018 - validates every URL of the list
        if not isinstance(self.tls, Tls):
            raise InvalidArgumentError(f"tls must be a retrieval_client.Tls (got {self.tls!r})")
        object.__setattr__(self, "headers", headers(self.headers))
        _check_timeout(self.timeout)
        if not isinstance(self.retry, Retry):
            raise InvalidArgumentError(f"retry must be a retrieval_client.Retry (got {self.retry!r})")
        for name in ("retrieval_model", "similar_model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidArgumentError(f"{name} must be a non-empty model name (got {getattr(self, name)!r})")

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[0]

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """``url`` may list several servers, comma-separated (replicas: see retrieval_client.transports.multi)."""
        if not isinstance(self.url, str):
            raise InvalidArgumentError(f"server URL must be a string (got {self.url!r})")
        urls: list[str] = []
        for part in (p.strip() for p in self.url.split(",")):
            # an ipv4:/ipv6: target's further addresses (grpc://ipv4:a:8500,b:8500) have no scheme of their own
            if urls and "://" not in part and re.match(r"grpcs?://ipv[46]:", urls[-1], re.IGNORECASE):
                urls[-1] += "," + part
            else:
                urls.append(part)
        return tuple(Endpoint.parse(url) for url in urls)


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgumentError(f"timeout must be a positive number of seconds (got {timeout!r})")
    return float(timeout)


@dataclass(frozen=True)
class ModelRef:
    """Which servable a call addresses: TF Serving's ModelSpec (a version or a label, not both)."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(f"model_name must be a non-empty string (got {self.name!r})")
        if self.version is not None and self.label is not None:
            raise InvalidArgumentError(
                f"pass a version or a label, not both (got version={self.version!r}, label={self.label!r})"
            )
        if self.version is not None and (
            isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0
        ):
            raise InvalidArgumentError(f"version must be a non-negative int (got {self.version!r})")
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise InvalidArgumentError(f"label must be a non-empty string (got {self.label!r})")
        if self.signature_name is not None and not isinstance(self.signature_name, str):
            raise InvalidArgumentError(f"signature_name must be a string (got {self.signature_name!r})")

    def __str__(self) -> str:
        where = (
            f" version {self.version}" if self.version is not None else (f" label {self.label!r}" if self.label else "")
        )
        return f"model {self.name!r}{where}"
