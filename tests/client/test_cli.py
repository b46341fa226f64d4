"""The CLI without a server: usage and connection failures are one line and a non-zero exit; in process
against the fakes, the fallback and unmatched notices, --strict, --history/--history-id and --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client import cli as cli_module
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


# -- in process, against the fakes: notices, --strict, histories --------------------------------------------
@pytest.fixture
def cli(monkeypatch, capsys, fake_server, make_fake_client):
    """``run(*args) -> (exit code, stdout, stderr)`` of ``python -m client`` in this process, its Client
    talking to the fake server (over gRPC: the REST codec is the same in every other respect)."""
    monkeypatch.setattr(cli_module, "Client", lambda url, timeout: make_fake_client("grpc", fake_server))

    def run(*args: str) -> tuple[int, str, str]:
        code = cli_module.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_a_fallback_list_has_a_notice_under_it(cli):
    code, out, err = cli("recommend", "3", "nosuchuser", "-k", "2")

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "3:",
        "    1      0.9090  Movie 3",
        "    2      0.8090  Movie 4",
        "nosuchuser:",
        "    1      0.9090  Movie 0",
        "    2      0.8090  Movie 1",
        '  (fallback: user "nosuchuser" is unknown to the model; these are the most popular movies)',
    ]
    _, out, _ = cli("similar", "no such movie", "Movie 1", "-k", "1")
    assert (
        out.splitlines()[2]
        == '  (fallback: "no such movie" is unknown to the model; these are the most popular movies)'
    )
    assert "fallback" not in "".join(out.splitlines()[3:])


def test_exclusions_that_match_nothing_have_a_notice(cli):
    _, out, _ = cli("recommend", "1", "2", "-k", "1", "--exclude", "Movie 1", "nope", "nor this")
    assert out.splitlines() == [
        "1:",
        "    1      0.9090  Movie 2",
        "  (2 excluded titles matched no movie and were ignored)",
        "2:",
        "    1      0.9090  Movie 2",
        "  (2 excluded titles matched no movie and were ignored)",
    ]


def test_strict_turns_a_fallback_into_not_found_and_exit_1(cli):
    code, out, err = cli("recommend", "3", "nosuchuser", "--strict")
    assert (code, out) == (1, "")
    assert err == (
        'error: NOT_FOUND: user "nosuchuser" is unknown to the model (--strict refuses the popularity fallback)\n'
    )
    code, out, err = cli("similar", "no such movie", "--strict", "--json")
    assert (code, out) == (1, "") and err.startswith('error: NOT_FOUND: "no such movie" is unknown to the model')
    code, _, err = cli("recommend", "--history", "nope", "--strict")
    assert code == 1 and err.startswith("error: NOT_FOUND: no title of the history is known to the model")
    # no fallback, no error; and a version that does not say (fallback None) is not refused
    assert cli("recommend", "3", "--strict")[0] == 0
    assert cli("recommend", "nosuchuser", "--strict", "--version", "7")[0] == 0


def test_history_and_history_id_ask_the_history_signatures(cli, fake_server):
    code, out, err = cli("recommend", "--history", "Movie 2", "no such movie", "--history", "Movie 5", "-k", "2")
    assert (code, err) == (0, "")
    assert fake_server.calls[-1][4:] == (
        "by_history",
        {"history_titles": [["", "Movie 2", "no such movie", "Movie 5"]]},
    )
    assert out.splitlines() == [
        "history:",
        "    1      0.9090  Movie 6",
        "    2      0.8090  Movie 7",
        "  (1 history title matched no movie and was ignored)",
    ]
    code, out, _ = cli("recommend", "--history-id", "2", "5", "99", "77", "-k", "1", "--label", "canary")
    assert fake_server.calls[-1][3:] == ("canary", "by_history_ids", {"history_ids": [["", "2", "5", "99", "77"]]})
    assert out.splitlines()[-1] == "  (2 history movie ids matched no movie and were ignored)"
    _, out, _ = cli("recommend", "--history-id", "99")
    assert "(fallback: no movie id of the history is known to the model;" in out


def test_json_carries_fallback_and_unmatched_per_query(cli):
    code, out, _ = cli("recommend", "3", "x", "-k", "1", "--json", "--exclude", "nope")
    assert code == 0 and json.loads(out) == {
        "3": {"hits": [{"title": "Movie 3", "score": 0.909, "id": ""}], "fallback": False, "unmatched": 1},
        "x": {"hits": [{"title": "Movie 0", "score": 0.909, "id": ""}], "fallback": True, "unmatched": 1},
    }
    _, out, _ = cli("similar", "Movie 1", "-k", "1", "--json", "--version", "7")  # an older version: null
    assert json.loads(out) == {
        "Movie 1": {"hits": [{"title": "Movie 2", "score": 0.907, "id": ""}], "fallback": None, "unmatched": 0}
    }


@pytest.mark.parametrize(
    "args, text",
    [
        ([], "neither was given"),
        (["1", "--history", "Movie 1"], "got USER_ID and --history"),
        (["--history", "A", "--history-id", "1"], "got --history and --history-id"),
        (["--history", "A", "--exclude", "B"], "--history takes no --exclude/--exclude-id"),
        (["--history-id", "1", "--exclude-id", "2"], "--history-id takes no --exclude/--exclude-id"),
        (["--history"], "expected at least one argument"),
    ],
)
def test_recommend_needs_user_ids_or_one_history(args, text, cli, capsys, fake_server):
    with pytest.raises(SystemExit) as exit_:
        cli("recommend", *args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and text in err and err.startswith("usage: python -m client recommend")
    assert fake_server.calls == []
