"""The CLI without a server: usage and connection failures are one line and a non-zero exit; in process
against the fakes, the fallback and unmatched notices, --strict, --history/--history-id and --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client_fakes import run_cli
from retrieval_client import Tls
from retrieval_client import cli as cli_module
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


def test_a_bad_url_is_a_usage_error_exit_2():
    proc = run_cli("metadata", "--url", "ftp://host")
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == (
        "python -m retrieval_client metadata: error: unsupported URL scheme 'ftp' in 'ftp://host'; "
        "use http://, https://, grpc:// or grpcs://"
    )
    assert proc.stderr.startswith("usage: python -m retrieval_client metadata")


@pytest.mark.parametrize(
    "args, text",
    [
        (["recommend"], "neither was given"),
        (["recommend", "1", "--version", "3", "--label", "stable"], "not allowed with argument --version"),
        (["recommend", "42", "-k", "0"], "argument -k: must be above 0 (got 0)"),
        (["similar", "x", "-k", "-3"], "argument -k: must be above 0 (got -3)"),
        (["recommend", "42", "-k", "two"], "argument -k: not a number: 'two'"),
        (["status", "--timeout", "0"], "argument --timeout: must be above 0 (got 0)"),
        (["status", "--url", "http://host:99999"], "bad port in server URL"),
        (["status", "--url", "http://a:1,ftp://b"], "unsupported URL scheme 'ftp'"),
        (["status", "--header", "Authorization Bearer x"], 'a header is "Name: value"'),
        (["status", "--header", "Bad Name: x"], "bad header name 'Bad Name'"),
        (["status", "--ca-cert", "/no/such.pem"], "cannot read the PEM file '/no/such.pem'"),
        (["status", "--client-key", "/etc/hostname"], "Tls.client_key needs Tls.client_cert"),
    ],
)
def test_usage_mistakes_exit_2_with_the_usage_before_any_call(args, text, cli, capsys, fake_server):
    with pytest.raises(SystemExit) as exit_:
        cli(*args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and text in err.splitlines()[-1], err
    assert err.startswith(f"usage: retrieval-client {args[0]}")  # in process: the console script's name
    assert fake_server.calls == []


def test_a_bad_environment_is_a_usage_error_too(monkeypatch, cli, capsys):
    monkeypatch.setenv("RETRIEVAL_HEADERS", "x-tenant")
    with pytest.raises(SystemExit) as exit_:
        cli("status")
    assert exit_.value.code == 2 and "$RETRIEVAL_HEADERS: expected name=value" in capsys.readouterr().err


def test_host_port_without_a_scheme_is_http():
    port = free_port()
    proc = run_cli("status", "--url", f"127.0.0.1:{port}", "--timeout", "2")
    assert proc.returncode == 1 and f"http://127.0.0.1:{port}/v1/models/retrieval" in proc.stderr, proc.stderr


# -- in process, against the fakes: notices, --strict, histories --------------------------------------------
@pytest.fixture
def cli(monkeypatch, capsys, fake_server, make_fake_client):
    """``run(*args) -> (exit code, stdout, stderr)`` of ``python -m retrieval_client`` in this process, its Client
    talking to the fake server (over gRPC: the REST codec is the same in every other respect)."""
    made: list[dict] = []  # the options each Client was made with

    def fake_client(url, **options):
        made.append(dict(options, url=url))
        return make_fake_client("grpc", fake_server)

    monkeypatch.setattr(cli_module, "Client", fake_client)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli_module.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    run.made = made
    return run


def test_a_fallback_list_has_a_notice_under_it(cli):
    code, out, err = cli("recommend", "3", "nosuchuser", "-k", "2")

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "3:",
        "  #  ID   SCORE  TITLE",
        "  1      0.9090  Movie 3",
        "  2      0.8090  Movie 4",
        "nosuchuser:",
        "  #  ID   SCORE  TITLE",
        "  1      0.9090  Movie 0",
        "  2      0.8090  Movie 1",
        '  (fallback: user "nosuchuser" is unknown to the model; these are the most popular movies)',
    ]
    _, out, _ = cli("similar", "no such movie", "Movie 1", "-k", "1")
    assert (
        out.splitlines()[3]
        == '  (fallback: "no such movie" is unknown to the model; these are the most popular movies)'
    )
    assert "fallback" not in "".join(out.splitlines()[4:])


def test_exclusions_that_match_nothing_have_a_notice(cli):
    _, out, _ = cli("recommend", "1", "2", "-k", "1", "--exclude", "Movie 1", "--exclude", "nope", "--exclude", "x")
    assert out.splitlines() == [
        "1:",
        "  #  ID   SCORE  TITLE",
        "  1      0.9090  Movie 2",
        "  (2 excluded titles matched no movie and were ignored)",
        "2:",
        "  #  ID   SCORE  TITLE",
        "  1      0.9090  Movie 2",
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
        "  #  ID   SCORE  TITLE",
        "  1      0.9090  Movie 6",
        "  2      0.8090  Movie 7",
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
    assert exit_.value.code == 2 and text in err and err.startswith("usage: retrieval-client recommend")
    assert fake_server.calls == []


# -- options that take one value each, --model, the table -----------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["--exclude", "Movie 1", "42", "-k", "2"],  # a list option would take 42 as a second title
        ["-k", "2", "--exclude-id", "139", "42"],
        ["42", "--exclude", "Movie 1", "-k", "2"],
        ["-k", "2", "--exclude", "Movie 1", "--", "42"],  # "--": what follows is positional, as everywhere
    ],
)
def test_an_exclusion_before_the_user_id_does_not_swallow_it(args, cli, fake_server):
    code, out, err = cli("recommend", *args)
    by_id = "139" in args  # the fake has no exclude_seen_by_id (an "older export"): what was sent is the point
    assert by_id or ((code, err) == (0, "") and out.splitlines()[0] == "42:")
    inputs = fake_server.calls[-1][5]
    excluded = {"exclude_ids": [["", "139"]]} if by_id else {"exclude_titles": [["", "Movie 1"]]}
    assert inputs == {"user_id": ["42"], **excluded}


def test_repeated_exclusions_add_up(cli, fake_server):
    cli("recommend", "--exclude", "Movie 1", "--exclude", "Movie 2", "7")
    assert fake_server.calls[-1][5] == {"user_id": ["7"], "exclude_titles": [["", "Movie 1", "Movie 2"]]}


def test_model_names_the_model_of_recommend_and_similar(cli):
    cli("recommend", "42", "--model", "retrieval-kserve")
    cli("similar", "Movie 1", "--model", "similar-kserve")
    cli("status", "--model", "similar_movies")
    cli("similar", "Movie 1")
    assert [{k: v for k, v in m.items() if k.endswith("model")} for m in cli.made] == [
        {"retrieval_model": "retrieval-kserve"},
        {"similar_model": "similar-kserve"},
        {"retrieval_model": "similar_movies"},
        {"similar_model": "similar_movies"},
    ]


def test_tls_and_header_flags_over_the_environment(monkeypatch, cli, tmp_path):
    ca, env_ca, cert, key = (tmp_path / name for name in ("ca.pem", "env.pem", "app.pem", "app.key"))
    for path in (ca, env_ca, cert, key):
        path.write_text("PEM")
    monkeypatch.setenv("RETRIEVAL_CA_CERT", str(env_ca))
    monkeypatch.setenv("RETRIEVAL_TOKEN", "from-env")
    monkeypatch.setenv("RETRIEVAL_HEADERS", "x-tenant=a%20b,x-trace=1")
    cli("status")
    cli("status", "--ca-cert", str(ca), "--client-cert", str(cert), "--client-key", str(key), "--header", "X-Trace: 2")
    cli("status", "--header", "Authorization: Bearer from-flag")
    env_made, flags_made, token_made = cli.made
    assert env_made["tls"] == Tls(str(env_ca)) and env_made["headers"] == (
        ("Authorization", "Bearer from-env"),
        ("x-tenant", "a b"),
        ("x-trace", "1"),
    )
    assert flags_made["tls"] == Tls(str(ca), str(cert), str(key))
    assert dict(flags_made["headers"])["X-Trace"] == "2" and "x-trace" not in dict(flags_made["headers"])
    assert dict(token_made["headers"])["Authorization"] == "Bearer from-flag"


def test_the_table_has_a_header_and_an_id_column():
    from retrieval_client import Hit, Recommendations

    hits = Recommendations([Hit("Star Wars (1977)", 4.5, "50"), Hit("Fargo (1996)", 12.25, "100")])
    assert cli_module._hits_table(hits) == [
        "  #  ID     SCORE  TITLE",
        "  1  50    4.5000  Star Wars (1977)",
        "  2  100  12.2500  Fargo (1996)",
    ]
    assert cli_module._hits_table(Recommendations([])) == ["  (no movies)"]
