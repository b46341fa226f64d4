"""gRPC target names after grpc:// and grpcs:// (``dns:///host:port``, ``ipv4:``, ``unix:``, ...): parsed, handed
to grpc as given, resolved by grpc over real channels, and balanced (round_robin) over every address."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from client_fakes import grpc_test_server, run_cli
from retrieval_client import AsyncClient, Client, InvalidArgumentError
from retrieval_client.protos import get_model_status_pb2
from retrieval_client.settings import Endpoint, Settings


@pytest.mark.parametrize(
    "url, target, host, port",
    [
        ("grpc://dns:///serving.example.com:8500", "dns:///serving.example.com:8500", "serving.example.com", 8500),
        ("grpc://dns:///serving.example.com", "dns:///serving.example.com:8500", "serving.example.com", 8500),
        ("grpcs://dns:///serving.example.com", "dns:///serving.example.com:443", "serving.example.com", 443),
        ("grpc://dns://10.0.0.53/svc.ns.svc:9000", "dns://10.0.0.53/svc.ns.svc:9000", "svc.ns.svc", 9000),
        ("GRPC://DNS:///h:1", "dns:///h:1", "h", 1),
        ("grpc://ipv4:10.0.0.1:8500", "ipv4:10.0.0.1:8500", "10.0.0.1", 8500),
        ("grpc://ipv4:10.0.0.1,10.0.0.2:9", "ipv4:10.0.0.1:8500,10.0.0.2:9", "10.0.0.1", 8500),
        ("grpc://ipv6:[::1]:8500", "ipv6:[::1]:8500", "::1", 8500),
        ("grpc://dns:///[::1]:8500", "dns:///[::1]:8500", "::1", 8500),
        ("grpc://unix:/run/tfs.sock", "unix:/run/tfs.sock", "unix:/run/tfs.sock", 0),
        ("grpc://unix:///run/tfs.sock", "unix:///run/tfs.sock", "unix:///run/tfs.sock", 0),
        ("grpc://unix-abstract:tfs", "unix-abstract:tfs", "unix-abstract:tfs", 0),
        ("grpc://dns:8500", "", "dns", 8500),  # a host named dns, with a port: not a target
        ("grpc://serving:8500", "", "serving", 8500),
    ],
)
def test_target_names_are_parsed_and_kept_for_grpc(url, target, host, port):
    endpoint = Endpoint.parse(url)
    assert (endpoint.target, endpoint.host, endpoint.port) == (target, host, port)
    assert endpoint.grpc_target == (target or f"{host}:{port}")
    assert endpoint.balanced == target.startswith(("dns:", "ipv4:", "ipv6:"))
    assert str(endpoint) == f"{endpoint.scheme}://{target or f'{host}:{port}'}"


@pytest.mark.parametrize(
    "url, text",
    [
        ("http://dns:///h:8501", "a gRPC target name (dns:...) is for grpc:// and grpcs:// URLs, not http://"),
        ("https://unix:/run/tfs.sock", "a gRPC target name (unix:...) is for grpc:// and grpcs:// URLs"),
        ("grpc://dns:///", "bad gRPC target in 'grpc://dns:///'"),
        ("grpc://dns:///a:1,b:2", "bad gRPC target"),
        ("grpc://ipv6:::1", "bad gRPC target"),
        ("grpc://ipv4:[::1]:1", "bad gRPC target"),
        ("grpc://dns:///h:70000", "bad port in server URL"),
        ("grpc://h:1/path", "a grpc:// URL has no path (got 'grpc://h:1/path'); a gRPC target name goes as"),
    ],
)
def test_bad_target_names_are_refused_with_what_to_write(url, text):
    with pytest.raises(
        InvalidArgumentError, match=r"^INVALID_ARGUMENT: " + text.replace("(", r"\(").replace(")", r"\)")
    ):
        Endpoint.parse(url)


def test_in_a_list_of_urls_an_ipv4_target_keeps_its_further_addresses():
    settings = Settings("grpc://ipv4:127.0.0.1:1,127.0.0.2:2, grpc://h:3,http://x")
    assert [str(e) for e in settings.endpoints] == [
        "grpc://ipv4:127.0.0.1:1,127.0.0.2:2",
        "grpc://h:3",
        "http://x:8501",
    ]


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.mark.parametrize("target", ["dns:///127.0.0.1:{port}", "dns:///localhost:{port}", "ipv4:127.0.0.1:{port}"])
def test_a_target_name_reaches_the_local_server_like_host_port(local_server, target):
    url = "grpc://" + target.format(port=_port(local_server.grpc_url))
    with Client(local_server.grpc_url) as plain, Client(url, timeout=10) as named:
        assert named.recommend(["1", "2"], k=3) == plain.recommend(["1", "2"], k=3)
        assert named.status()[0].state == "AVAILABLE"

    async def main():
        async with AsyncClient(url, timeout=10) as c:
            return await asyncio.gather(c.recommend("1", k=3), c.similar_by_id("50", k=3))

    hits, alike = asyncio.run(main())
    with Client(local_server.grpc_url) as plain:
        assert hits == plain.recommend("1", k=3) and alike == plain.similar_by_id("50", k=3)


def test_the_cli_takes_a_target_name(local_server):
    proc = run_cli("recommend", "42", "-k", "2", "--url", f"grpc://dns:///127.0.0.1:{_port(local_server.grpc_url)}")
    assert proc.returncode == 0 and proc.stdout.count("\n") >= 3, proc.stderr


class _Replica:
    """GetModelStatus answering with its own version number, counting its calls."""

    def __init__(self, version: int) -> None:
        self.version, self.calls = version, 0

    def GetModelStatus(self, request, context):
        self.calls += 1
        status = get_model_status_pb2.ModelVersionStatus(
            version=self.version, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
        )
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=[status])


def _replica(version: int, address: str = "127.0.0.1:0"):
    replica = _Replica(version)
    server, port = grpc_test_server(
        "ModelService",
        "GetModelStatus",
        replica.GetModelStatus,
        get_model_status_pb2.GetModelStatusRequest,
        get_model_status_pb2.GetModelStatusResponse,
        address=address,
    )
    return replica, server, port


def test_an_ipv4_target_with_two_addresses_balances_calls_over_both():
    (one, server_one, port_one), (two, server_two, port_two) = _replica(1), _replica(2)
    try:
        with Client(f"grpc://ipv4:127.0.0.1:{port_one},127.0.0.1:{port_two}", timeout=10) as c:
            seen = [c.status()[0].version for _ in range(40)]
        with Client(f"grpc://127.0.0.1:{port_one}", timeout=10) as c:  # host:port: one server, as before
            assert {c.status()[0].version for _ in range(5)} == {1}
    finally:
        server_one.stop(0)
        server_two.stop(0)
    # round_robin, once both connections are READY, alternates; pick_first would send all 40 to one
    assert set(seen) == {1, 2} and min(one.calls, two.calls) >= 10, (one.calls, two.calls)


def test_a_unix_socket_target(tmp_path):
    socket = tmp_path / "tfs.sock"
    replica, server, _ = _replica(7, f"unix:{socket}")
    try:
        for url in (f"grpc://unix:{socket}", f"grpc://unix://{socket}"):
            with Client(url, timeout=10) as c:
                assert c.status()[0].version == 7
    finally:
        server.stop(0)
    assert replica.calls == 2
