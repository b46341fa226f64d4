"""TLS and credentials over real sockets, as a production deployment has them.

One local server (``python -m serving``) on the shared BruteForce store, with TF Serving's ``--ssl_config_file``:
its gRPC port speaks TLS with a certificate the tests make (trustme), its REST port plain HTTP, as TF
Serving's. In front of it nginx (Debian's nginx-light), the usual TLS terminator and token check for TF
Serving: ``https://`` to the REST port and ``grpcs://`` to the gRPC port (re-encrypted to it), each refusing a
request without ``Authorization: Bearer <TOKEN>`` with 401 (UNAUTHENTICATED over both).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import retrieval_client as client
from client_fakes import PYTHONPATH, readme_examples, run_cli, start_local_server
from retrieval_client import Client, Retry, Tls
from serving.testing import free_port

pytestmark = pytest.mark.tools

trustme = pytest.importorskip("trustme")

TOKEN = "s3cret-token"
ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA the servers' certificates come from, another CA, a client certificate and key."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    person = ca.issue_cert("app@example.com")
    paths = Pki(
        *(folder / name for name in ("ca.pem", "other_ca.pem", "server.pem", "server.key", "app.pem", "app.key"))
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    other.cert_pem.write_to_path(str(paths.other_ca))
    server.private_key_pem.write_to_path(str(paths.server_key))
    for blob in server.cert_chain_pems:
        blob.write_to_path(str(paths.server_cert), append=True)
    person.private_key_pem.write_to_path(str(paths.client_key))
    person.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    return paths


def ssl_config(path: Path, pki: Pki, *, client_verify: bool = False) -> Path:
    """TF Serving's SSLConfig text proto: the PEM text itself, not paths (config/ssl_config.proto)."""

    def quoted(file: Path) -> str:
        return '"' + file.read_text().replace("\n", "\\n") + '"'

    lines = [f"server_key: {quoted(pki.server_key)}", f"server_cert: {quoted(pki.server_cert)}"]
    if client_verify:
        lines += [f"custom_ca: {quoted(pki.ca)}", "client_verify: true"]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Deployment:
    grpcs_direct: str  # the local server's own TLS gRPC port (--ssl_config_file)
    rest_plain: str  # its REST port (plain, as TF Serving's)
    https: str  # nginx: TLS + token, to the REST port
    grpcs: str  # nginx: TLS + token, to the TLS gRPC port
    https_mtls: str  # nginx: TLS requiring a client certificate from the CA (no token), to the REST port


@pytest.fixture(scope="module")
def deployment(brute_force_store, pki, tmp_path_factory):
    assert NGINX is not None, "nginx is not installed (Debian: apt-get install nginx-light; scripts/test.sh does)"
    work = tmp_path_factory.mktemp("tls_server")
    proc, server = start_local_server(
        brute_force_store, work, extra_flags=(f"--ssl_config_file={ssl_config(work / 'ssl.config', pki)}",)
    )
    nginx = None
    try:
        https_port, grpcs_port, mtls_port = free_port(), free_port(), free_port()
        conf = work / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                prefix=work,
                cert=pki.server_cert,
                key=pki.server_key,
                ca=pki.ca,
                token=TOKEN,
                https_port=https_port,
                grpcs_port=grpcs_port,
                mtls_port=mtls_port,
                rest_port=proc.rest_port,
                grpc_port=proc.port,
            )
        )
        nginx = subprocess.Popen(
            [NGINX, "-p", str(work), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        _wait_for_ports(nginx, https_port, grpcs_port, mtls_port)
        yield Deployment(
            f"grpcs://localhost:{proc.port}",
            server.rest_url,
            f"https://localhost:{https_port}",
            f"grpcs://localhost:{grpcs_port}",
            f"https://localhost:{mtls_port}",
        )
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        proc.stop()


# master_process off: one process that never changes user (as root, workers would run as nobody and could not
# read the keys); every path under the test's folder.
NGINX_CONF = """
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_authorization $token_ok {{
        "Bearer {token}" 1;
        default 0;
    }}
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{
        listen 127.0.0.1:{https_port} ssl;
        location / {{
            if ($token_ok = 0) {{
                return 401 '{{"error": "a bearer token is required"}}';
            }}
            proxy_pass http://127.0.0.1:{rest_port};
        }}
    }}
    server {{
        listen 127.0.0.1:{grpcs_port} ssl http2;
        location / {{
            if ($token_ok = 0) {{
                return 401;
            }}
            grpc_pass grpcs://127.0.0.1:{grpc_port};
            grpc_ssl_trusted_certificate {ca};
            grpc_ssl_verify on;
            grpc_ssl_name localhost;
        }}
    }}
    server {{
        listen 127.0.0.1:{mtls_port} ssl;
        ssl_client_certificate {ca};
        ssl_verify_client on;
        location / {{
            proxy_pass http://127.0.0.1:{rest_port};
        }}
    }}
}}
"""


def _wait_for_ports(nginx: subprocess.Popen, *ports: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if nginx.poll() is not None:
                raise RuntimeError(f"nginx exited: {nginx.stdout.read() if nginx.stdout else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_grpc_tls_straight_to_the_server_with_its_ssl_config_file(deployment, pki):
    with Client(deployment.grpcs_direct, tls=Tls(ca_cert=str(pki.ca)), headers={}, timeout=30) as c:
        hits = c.recommend("42", k=3)
        assert len(hits) == 3 and all(h.title for h in hits)
        assert c.status("retrieval")[0].state == "AVAILABLE"


@pytest.mark.parametrize("kind", ["https", "grpcs"])
def test_tls_and_token_through_the_proxy_answer_as_the_plain_server(deployment, pki, kind):
    with Client(deployment.rest_plain, tls=Tls(), headers={}, timeout=30) as plain:
        expected = plain.recommend(["1", "2"], k=5)
    with Client(getattr(deployment, kind), tls=Tls(ca_cert=str(pki.ca)), headers=BEARER, timeout=30) as c:
        assert c.recommend(["1", "2"], k=5) == expected
        assert c.similar_by_id("50", k=2)
        assert set(c.metadata().signatures) >= {"serving_default", "exclude_seen"}


@pytest.mark.parametrize("kind", ["https", "grpcs"])
def test_a_missing_or_wrong_token_is_refused_by_the_proxy(deployment, pki, kind):
    for sent in ({}, {"Authorization": "Bearer wrong"}):
        with (
            Client(getattr(deployment, kind), tls=Tls(ca_cert=str(pki.ca)), headers=sent, timeout=30) as c,
            pytest.raises(client.UnauthenticatedError),
        ):
            c.recommend("42")


@pytest.mark.parametrize("kind", ["https", "grpcs", "grpcs_direct"])
def test_a_wrong_ca_is_a_tls_error_at_once(deployment, pki, kind):
    slept: list[float] = []
    tls = Tls(ca_cert=str(pki.other_ca))
    with (
        Client(getattr(deployment, kind), tls=tls, headers=BEARER, retry=Retry(attempts=3), sleep=slept.append) as c,
        pytest.raises(client.TlsError) as err,
    ):
        c.recommend("42")
    assert isinstance(err.value, client.UnavailableError)
    assert "TLS handshake" in err.value.message and "CERTIFICATE_VERIFY_FAILED" in err.value.message
    assert str(pki.other_ca) in err.value.message  # says which bundle did not hold the signer
    assert slept == [], "a certificate that is not trusted is not retried"


@pytest.mark.parametrize("kind", ["https", "grpcs"])
def test_the_default_ca_bundle_does_not_trust_a_private_ca(deployment, kind):
    with (
        Client(getattr(deployment, kind), tls=Tls(), headers=BEARER, timeout=10) as c,
        pytest.raises(client.TlsError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        c.recommend("42")


def test_tls_spoken_to_a_plain_port_says_so(deployment, pki):
    plain_port = deployment.rest_plain.rsplit(":", 1)[1]
    with (
        Client(f"https://localhost:{plain_port}", tls=Tls(ca_cert=str(pki.ca)), headers={}, timeout=10) as c,
        pytest.raises(client.TlsError, match="speak TLS"),
    ):
        c.recommend("42")


@pytest.fixture(scope="module")
def mtls_server(brute_force_store, pki, tmp_path_factory):
    """The local server with ``client_verify: true``: its gRPC port takes only clients with a certificate
    signed by the SSLConfig's ``custom_ca`` (TF Serving's own mutual TLS; no proxy)."""
    work = tmp_path_factory.mktemp("mtls_server")
    config = ssl_config(work / "ssl.config", pki, client_verify=True)
    proc, _ = start_local_server(brute_force_store, work, extra_flags=(f"--ssl_config_file={config}",))
    try:
        yield f"grpcs://localhost:{proc.port}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def combined_pem(pki, tmp_path_factory) -> Path:
    """The client's certificate and key in one PEM file (``Tls(client_cert=...)`` alone)."""
    path = tmp_path_factory.mktemp("combined") / "app-with-key.pem"
    path.write_text(pki.client_cert.read_text() + pki.client_key.read_text())
    return path


def test_mutual_tls_presents_the_client_certificate(deployment, mtls_server, pki, combined_pem):
    for url in (deployment.https_mtls, mtls_server):
        for tls in (Tls(str(pki.ca), str(pki.client_cert), str(pki.client_key)), Tls(str(pki.ca), str(combined_pem))):
            with Client(url, tls=tls, headers={}, timeout=30) as c:
                assert len(c.recommend("42", k=2)) == 2, (url, tls)


def test_mutual_tls_without_a_client_certificate_is_refused(deployment, mtls_server, pki):
    # TLS 1.3: the gRPC server closes the connection after the handshake; gRPC can only say UNAVAILABLE
    with (
        Client(mtls_server, tls=Tls(str(pki.ca)), headers={}, timeout=10, retry=Retry(attempts=1)) as c,
        pytest.raises(client.UnavailableError, match=r"requires a client certificate .*--client-cert"),
    ):
        c.recommend("42")
    # nginx answers 400 with its reason
    with (
        Client(deployment.https_mtls, tls=Tls(str(pki.ca)), headers={}, timeout=10) as c,
        pytest.raises(client.InvalidArgumentError, match="No required SSL certificate was sent"),
    ):
        c.recommend("42")


def test_the_cli_takes_ca_cert_and_header_flags_and_the_environment(deployment, pki):
    flags = ["--ca-cert", str(pki.ca), "--header", f"Authorization: Bearer {TOKEN}", "--json"]
    for url in (deployment.https, deployment.grpcs):
        proc = run_cli("recommend", "42", "-k", "2", "--url", url, *flags)
        assert proc.returncode == 0, proc.stderr
    env = {"RETRIEVAL_URL": deployment.grpcs, "RETRIEVAL_CA_CERT": str(pki.ca), "RETRIEVAL_TOKEN": TOKEN}
    proc = run_cli("similar", "50", "--by-id", "-k", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("recommend", "42", env=dict(env, RETRIEVAL_TOKEN=""))
    assert proc.returncode == 1 and proc.stderr.startswith("error: UNAUTHENTICATED: "), proc.stderr
    proc = run_cli("recommend", "42", "--url", deployment.https, "--ca-cert", str(pki.other_ca))
    assert proc.returncode == 1 and "TLS handshake" in proc.stderr and "--ca-cert" in proc.stderr, proc.stderr


def test_the_readmes_production_example_runs(deployment, pki):
    [example] = [code for heading, code in readme_examples() if "Tls(" in code]  # the others: test_readme_examples
    replicas = '"grpcs://serving-0.example.com:443", "grpcs://serving-1.example.com:443"'
    assert replicas in example and '"/etc/retrieval/ca.pem"' in example
    example = example.replace(replicas, f'"{deployment.grpcs}", "{deployment.https}"')
    example = example.replace('"/etc/retrieval/ca.pem"', repr(str(pki.ca)))
    proc = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=PYTHONPATH, TOKEN=TOKEN),
    )
    assert proc.returncode == 0, proc.stderr
    assert len(ast.literal_eval(proc.stdout.strip())) == 5


@pytest.mark.parametrize("kind", ["https", "grpcs"])
def test_the_async_client_takes_the_same_tls_and_headers_and_fails_alike(deployment, pki, kind):
    import asyncio

    url, ca = getattr(deployment, kind), Tls(ca_cert=str(pki.ca))
    cases = [(ca, BEARER), (ca, {}), (Tls(ca_cert=str(pki.other_ca)), BEARER)]  # answer, 401, untrusted

    def outcome(call):
        try:
            return call()
        except client.ServingError as exc:
            return (type(exc), exc.message)

    expected = []
    for tls, sent in cases:
        with Client(url, tls=tls, headers=sent, timeout=30, retry=Retry(attempts=1)) as c:
            expected.append(outcome(lambda c=c: c.recommend(["1", "2"], k=5)))

    async def main():
        got = []
        for tls, sent in cases:
            async with client.AsyncClient(url, tls=tls, headers=sent, timeout=30, retry=Retry(attempts=1)) as c:
                try:
                    got.append(await c.recommend(["1", "2"], k=5))
                except client.ServingError as exc:
                    got.append((type(exc), exc.message))
        if kind == "https":  # mutual TLS: the client certificate is presented
            mtls = Tls(ca_cert=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key))
            async with client.AsyncClient(deployment.https_mtls, tls=mtls, headers={}, timeout=30) as c:
                got.append(await c.recommend(["1", "2"], k=5))
        return got

    got = asyncio.run(main())
    assert [type(g) for g in got[:3]] == [type(e) for e in expected]
    assert got[0] == expected[0] and len(expected[0]) == 2
    assert got[1][0] is client.UnauthenticatedError and got[1] == expected[1]
    assert got[2][0] is client.TlsError and "CERTIFICATE_VERIFY_FAILED" in got[2][1] and str(pki.other_ca) in got[2][1]
    assert got[2] == expected[2]
    assert got[3:] == ([expected[0]] if kind == "https" else [])
