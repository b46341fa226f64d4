"""TLS settings, headers and URL schemes without a server: what the client accepts, reads from the environment
and puts on the wire (tests/client/test_tls.py runs them against real TLS servers)."""

from __future__ import annotations

import pytest
import requests

import retrieval_client as client
from retrieval_client import Client, Tls
from retrieval_client.settings import Endpoint
from retrieval_client.transports.grpc import GrpcTransport
from retrieval_client.transports.rest import RestTransport


@pytest.mark.parametrize(
    "url, scheme, port, tls",
    [
        ("localhost:8501", "http", 8501, False),  # host:port is http://, as tritonclient takes it
        ("10.0.0.7", "http", 8501, False),
        ("https://serving.example.com", "https", 443, True),
        ("grpcs://serving.example.com", "grpcs", 443, True),
        ("grpcs://serving.example.com:8500", "grpcs", 8500, True),
        ("GRPC://h", "grpc", 8500, False),
    ],
)
def test_url_schemes_and_default_ports(url, scheme, port, tls):
    endpoint = Endpoint.parse(url)
    assert (endpoint.scheme, endpoint.port, endpoint.tls) == (scheme, port, tls)


def test_headers_come_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("RETRIEVAL_TOKEN", "t0k")
    monkeypatch.setenv("RETRIEVAL_HEADERS", "X-Tenant=acme%2Cinc , authorization=Basic%20eA==")
    with Client("http://h:1") as c:  # RETRIEVAL_HEADERS wins over the token for the same name
        assert c.settings.headers == (("X-Tenant", "acme,inc"), ("authorization", "Basic eA=="))
    monkeypatch.delenv("RETRIEVAL_HEADERS")
    with Client("http://h:1") as c:
        assert c.settings.headers == (("Authorization", "Bearer t0k"),)
    with Client("http://h:1", headers={}) as c:  # given: exactly these
        assert c.settings.headers == ()
    with Client("http://h:1") as c:  # a token stays out of reprs (logs, tracebacks)
        assert "t0k" not in repr(c) + repr(c.settings)


def test_tls_files_must_be_readable_and_come_from_the_environment(monkeypatch, tmp_path):
    with pytest.raises(client.InvalidArgumentError, match="cannot read the PEM file"):
        Tls(ca_cert=str(tmp_path / "missing.pem"))
    pem = tmp_path / "ca.pem"
    pem.write_text("PEM")
    monkeypatch.setenv("RETRIEVAL_CA_CERT", str(pem))
    with Client("https://h:1") as c:
        assert c.settings.tls == Tls(ca_cert=str(pem))
    monkeypatch.setenv("RETRIEVAL_CA_CERT", str(tmp_path / "gone.pem"))
    with pytest.raises(client.InvalidArgumentError, match=r"gone\.pem"):
        Client("https://h:1")


def test_headers_reach_the_wire_on_every_request(fake_server):
    """REST: the session's headers; gRPC: call metadata, lowercased (the fakes record what they are given)."""
    sent: list = []

    class Recording(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            sent.append(dict(request.headers))
            raise requests.ConnectionError("no server")

    rest = RestTransport(Endpoint.parse("http://h:1"), headers=(("Authorization", "Bearer x"),), adapter=Recording())
    with (
        Client("http://h:1", transport=rest, retry=client.Retry(attempts=2), sleep=lambda s: None) as c,
        pytest.raises(client.UnavailableError),
    ):
        c.status()
    assert [h["Authorization"] for h in sent] == ["Bearer x", "Bearer x"]

    class Channel:
        def unary_unary(self, path, **_):
            def call(request, timeout=None, metadata=None):
                sent.append(metadata)
                raise requests.ConnectionError("unreachable")  # any exception ends the call

            return call

        def close(self):
            pass

    grpc_transport = GrpcTransport(Endpoint.parse("grpc://h:1"), metadata=(("X-Tenant", "a"),), channel=Channel())
    with pytest.raises(requests.ConnectionError):
        grpc_transport.status(client.settings.ModelRef("retrieval"), 1.0)
    assert sent[-1] == (("x-tenant", "a"),)
