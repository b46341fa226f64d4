"""Fixtures of the client tests (the fakes themselves live in client_fakes.py).

fake_server        a FakeServer: two tiny in-memory models behind TF Serving's semantics
transport_kind     "rest" / "grpc" (parametrized: tests that take it run once per transport)
make_fake_client   (kind, server, **client_options) -> Client whose transport talks to the FakeServer
                   through requests' adapter seam (REST) or a fake grpc channel (gRPC); no sockets
local_server       module fixture: ``python -m serving`` on free ports serving both models of the
                   shared ``brute_force_store``; has ``rest_url`` / ``grpc_url`` / ``url(kind)``
"""

from __future__ import annotations

import pytest

import client_fakes as fakes  # tests/client is on pytest's pythonpath
from retrieval_client import Client
from retrieval_client.settings import Endpoint
from retrieval_client.transports.base import Transport
from retrieval_client.transports.grpc import GrpcTransport
from retrieval_client.transports.rest import RestTransport


@pytest.fixture
def fake_server():
    return fakes.FakeServer()


@pytest.fixture(params=["rest", "grpc"])
def transport_kind(request) -> str:
    return request.param


@pytest.fixture
def make_fake_client():
    made = []

    def make(kind: str, server: fakes.FakeServer, **options) -> Client:
        options.setdefault("sleep", lambda s: None)
        if kind == "rest":
            endpoint = Endpoint.parse("http://fake:8501")
            transport: Transport = RestTransport(endpoint, adapter=fakes.FakeAdapter(server))
        else:
            endpoint = Endpoint.parse("grpc://fake:8500")
            transport = GrpcTransport(endpoint, channel=fakes.FakeChannel(server))
        client = Client(str(endpoint), transport=transport, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def local_server(brute_force_store, tmp_path_factory):
    proc, server = fakes.start_local_server(
        brute_force_store, tmp_path_factory.mktemp("client_server"), labels=["stable"]
    )
    try:
        yield server
    finally:
        proc.stop()
