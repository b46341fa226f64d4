"""client.transports.multi: several servers behind one client (round robin, failover on UNAVAILABLE),
through the gRPC seam of each (fake channels, no sockets). The real thing, three local servers with one
killed mid-load, is tests/deploy/test_replicas.py."""

from __future__ import annotations

import pytest

import client_fakes as fakes
from retrieval_client import Client, Retry
from retrieval_client.errors import NotFoundError, UnavailableError
from retrieval_client.settings import Endpoint, Settings
from retrieval_client.transports.grpc import GrpcTransport
from retrieval_client.transports.multi import RoundRobinTransport


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(n: int = 3, **options):
    servers = [fakes.FakeServer() for _ in range(n)]
    clock = Clock()
    transport = RoundRobinTransport(
        [
            GrpcTransport(Endpoint.parse(f"grpc://fake{i}:8500"), channel=fakes.FakeChannel(s))
            for i, s in enumerate(servers)
        ],
        clock=clock,
        **options,
    )
    c = Client(
        ",".join(f"grpc://fake{i}:8500" for i in range(n)),
        transport=transport,
        sleep=lambda s: None,
        retry=Retry(attempts=3, backoff=0.01),
    )
    return servers, transport, clock, c


def predicts(server) -> int:
    """Calls that reached ``server``, answered or failed (the fake channel records each one's timeout)."""
    return len(server.timeouts)


def test_calls_go_round_robin():
    servers, _, _, c = make()
    for _ in range(6):
        assert len(c.recommend("1", k=3)) == 3
    assert [predicts(s) for s in servers] == [2, 2, 2]


def test_unavailable_fails_over_at_once_and_ejects_the_endpoint():
    servers, transport, clock, c = make(eject_seconds=1.0)
    servers[0].fail_next(("UNAVAILABLE", "connection refused"))
    assert len(c.recommend("1")) == fakes.K  # first pick: server 0 fails, server 1 answers
    assert transport.failovers == 1
    for _ in range(4):  # server 0 is skipped while ejected
        c.recommend("1")
    assert predicts(servers[0]) == 1 and predicts(servers[1]) + predicts(servers[2]) == 5
    clock.now += 1.5  # ejection over: server 0 gets calls again
    for _ in range(3):
        c.recommend("1")
    assert predicts(servers[0]) == 2


def test_other_errors_are_the_server_s_answer_and_do_not_fail_over():
    servers, transport, _, c = make()
    servers[0].fail_next(("NOT_FOUND", "Servable not found for request: Latest(retrieval)"))
    with pytest.raises(NotFoundError):
        c.recommend("1")
    assert transport.failovers == 0 and predicts(servers[1]) == predicts(servers[2]) == 0


def test_all_endpoints_unavailable_reaches_the_client_s_retry_then_raises():
    servers, _, _, c = make(n=2)
    for s in servers:
        s.fail_next(*[("UNAVAILABLE", "connection refused")] * 3)
    with pytest.raises(UnavailableError):
        c.recommend("1")
    assert [predicts(s) for s in servers] == [3, 3]  # 3 client attempts x every endpoint
    servers, _, _, c = make(n=2)
    for s in servers:
        s.fail_next(("UNAVAILABLE", "connection refused"))
    assert len(c.recommend("1")) == fakes.K  # the client's second attempt finds both again


def test_urls_as_a_list_or_comma_separated_string(monkeypatch):
    urls = ["grpc://a:8500", "grpc://b:8500", "http://c:8501"]
    assert Settings(",".join(urls)).endpoints == tuple(Endpoint.parse(u) for u in urls)
    assert Settings(" , ".join(urls)).endpoint == Endpoint.parse(urls[0])
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        Settings("grpc://a:8500,ftp://nonsense")
    with Client(urls) as c:
        assert isinstance(c._transport, RoundRobinTransport) and len(c._transport.transports) == 3
    monkeypatch.setenv("RETRIEVAL_URL", ",".join(urls[:2]))
    with Client() as c:
        assert [t.endpoint for t in c._transport.transports] == [Endpoint.parse(u) for u in urls[:2]]
    with Client(urls[0]) as c:
        assert isinstance(c._transport, GrpcTransport)
