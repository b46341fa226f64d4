"""The CLI without a server: usage and connection failures are one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

from client_fakes import run_cli
from server_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_refused_connection_is_one_line_and_exit_1():
    port = free_port()
    for url in (f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{port}"):
        proc = run_cli("recommend", "42", "-k", "5", "--url", url, "--timeout", "2")
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith("error: UNAVAILABLE: ") and len(proc.stderr.strip().splitlines()) == 1
        assert str(port) in proc.stderr


def test_the_url_comes_from_the_environment_when_not_given():
    port = free_port()
    proc = run_cli("status", env={"RETRIEVAL_URL": f"grpc://127.0.0.1:{port}"})
    assert proc.returncode == 1 and f"127.0.0.1:{port}" in proc.stderr


def test_a_bad_url_is_one_line_and_exit_1():
    proc = run_cli("metadata", "--url", "ftp://host")
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: INVALID_ARGUMENT: unsupported URL scheme 'ftp' in 'ftp://host'; use http://, https:// or grpc://"
    )


def test_usage_errors_exit_2():
    assert run_cli("recommend").returncode == 2
    assert run_cli("recommend", "1", "--version", "3", "--label", "stable").returncode == 2
