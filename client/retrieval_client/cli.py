"""``retrieval-client`` (or ``python -m retrieval_client``): recommend, similar, status, metadata.

A table by default, JSON with ``--json``.

Under a list that is the popularity fallback, and under one whose exclusions or history had items that matched
nothing, the table has a one-line notice; ``--strict`` makes a fallback an error (NOT_FOUND). Any failure prints
one line, ``error: <CODE>: <message>``, to stderr and exits 1; usage errors (argparse's, and what the client
refuses before any call: a bad URL, header or certificate file, ``-k 0``) print the usage and exit 2.

Options that take a value take one each (``--exclude TITLE``, repeated for more): a list option
(``nargs="+"``) before the positional user ids would swallow them. TLS and credentials: ``--ca-cert``,
``--client-cert``/``--client-key``, ``--header "Name: value"``, each over its environment variable
(:mod:`retrieval_client.credentials`; headers add to the environment's, the same name replaced).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from retrieval_client import __version__
from retrieval_client.client import Client
from retrieval_client.credentials import (
    CA_CERT_ENV,
    CLIENT_CERT_ENV,
    CLIENT_KEY_ENV,
    HEADERS_ENV,
    TOKEN_ENV,
    Tls,
    headers,
    headers_from_env,
    parse_header,
)
from retrieval_client.errors import InvalidArgumentError, NotFoundError, ServingError
from retrieval_client.results import Recommendations
from retrieval_client.settings import DEFAULT_URL, URL_ENV, Settings

PROG = "retrieval-client"  # the console script; python -m retrieval_client passes its own name
MODELS = {"recommend": "retrieval", "similar": "similar_movies", "status": "retrieval", "metadata": "retrieval"}


@dataclasses.dataclass(frozen=True)
class Answer:
    """One query's recommendations and the words its notices need: ``unknown`` says what the model did not
    know when the answer is the fallback (e.g. 'user "42" is unknown'), ``entries`` what ``unmatched`` counts
    (e.g. "excluded title")."""

    hits: Recommendations
    unknown: str
    entries: str

    def notices(self) -> list[str]:
        """The lines to print under the list: why it is a fallback, how many entries matched nothing."""
        lines = []
        if self.hits.fallback:
            lines.append(f"(fallback: {self.unknown} to the model; these are the most popular movies)")
        n = self.hits.unmatched
        if n == 1:
            lines.append(f"(1 {self.entries} matched no movie and was ignored)")
        elif n:
            lines.append(f"({n} {self.entries}s matched no movie and were ignored)")
        return lines


def _positive(kind: type[int] | type[float]) -> Any:
    """An argparse type: a number of ``kind`` above 0 (else exit 2 with the usage)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0 (got {text})")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help=f"http(s)://host:8501 or grpc(s)://host:8500 (or a gRPC target: grpc://dns:///host:8500), host:port "
        f"meaning http://; several comma-separated (default ${URL_ENV}, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--timeout", type=_positive(float), default=10.0, help="deadline per call, seconds (default 10)"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("-v", "--verbose", action="store_true", help="log retries and waits to stderr")
    tls = common.add_argument_group("TLS and credentials (https:// and grpcs:// URLs)")
    tls.add_argument("--ca-cert", metavar="PEM", help=f"CAs to trust (default ${CA_CERT_ENV}, else the public CAs)")
    tls.add_argument(
        "--client-cert", metavar="PEM", help=f"client certificate, mutual TLS (default ${CLIENT_CERT_ENV})"
    )
    tls.add_argument("--client-key", metavar="PEM", help=f"its private key (default ${CLIENT_KEY_ENV})")
    tls.add_argument(
        "--header",
        action="append",
        metavar='"NAME: VALUE"',
        help=f'sent on every request, repeatable, e.g. "Authorization: Bearer ..." (adds to ${HEADERS_ENV} '
        f"and ${TOKEN_ENV})",
    )
    servable = argparse.ArgumentParser(add_help=False)
    choice = servable.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="a specific model version")
    choice.add_argument("--label", help="a version label such as stable or canary")

    answers = argparse.ArgumentParser(add_help=False)
    answers.add_argument("-k", type=_positive(int), help="number of movies (default: the model's K)")
    answers.add_argument(
        "--strict", action="store_true", help="fail (NOT_FOUND) instead of printing the popularity fallback"
    )

    parser = argparse.ArgumentParser(prog=prog, description="Query the movie retrieval server.")
    # Before the command only: after it, --version is a model version (recommend 42 --version 3).
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}", help="the client's version")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "recommend",
        parents=[common, servable, answers],
        help="movies for user ids, or for one history of titles (or ids)",
        usage="%(prog)s (USER_ID [USER_ID ...] | --history TITLE [TITLE ...] | --history-id ID [ID ...]) [options]",
    )
    p.add_argument("user_ids", nargs="*", metavar="USER_ID", help="user ids (or give --history / --history-id)")
    p.add_argument("--exclude", action="append", metavar="TITLE", help="a title never to return (repeat for more)")
    p.add_argument(
        "--exclude-id", action="append", metavar="MOVIE_ID", help="a catalogue id never to return (repeat for more)"
    )
    p.add_argument(
        "--history", nargs="+", action="extend", metavar="TITLE", help="recommend for these watched titles, no user"
    )
    p.add_argument("--history-id", nargs="+", action="extend", metavar="ID", help="the same by catalogue movie ids")
    p = sub.add_parser("similar", parents=[common, servable, answers], help="movies like the given titles (or ids)")
    p.add_argument("titles", nargs="+", metavar="TITLE")
    p.add_argument("--by-id", action="store_true", help="the arguments are catalogue movie ids, not titles")
    sub.add_parser("status", parents=[common, servable], help="versions of a model and their states")
    sub.add_parser("metadata", parents=[common, servable], help="a model's signatures")
    for name, command in sub.choices.items():
        command.add_argument("--model", default=MODELS[name], help=f"model name (default {MODELS[name]})")
        command.set_defaults(usage_error=command.error)  # for check_usage: the error shows the command's usage
    return parser


def check_usage(args: argparse.Namespace) -> dict[str, Any]:
    """What argparse cannot say, exiting 2 with the usage: the client's options (URL, TLS files, headers) must
    make a client; ``recommend`` takes user ids or one history (by titles or by ids), one only, and a history
    takes no exclusions (its own items are never returned). Returns the Client's options."""
    try:
        options = client_options(args)
    except InvalidArgumentError as exc:
        args.usage_error(exc.message)
    if args.command != "recommend":
        return options
    given = [
        name
        for name, value in (("USER_ID", args.user_ids), ("--history", args.history), ("--history-id", args.history_id))
        if value
    ]
    if len(given) != 1:
        what = "neither was given" if not given else f"got {' and '.join(given)}"
        args.usage_error(f"give USER_ID ..., --history TITLE ... or --history-id ID ..., one of them ({what})")
    if given[0] != "USER_ID" and (args.exclude or args.exclude_id):
        args.usage_error(f"{given[0]} takes no --exclude/--exclude-id (a history's own movies never return)")
    return options


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Client's options from the flags over the environment; InvalidArgumentError for a bad URL, header or
    certificate file (checked here, before any call)."""
    env_tls = Tls.from_env()
    tls = Tls(
        args.ca_cert or env_tls.ca_cert,
        args.client_cert or env_tls.client_cert,
        args.client_key or (None if args.client_cert else env_tls.client_key),
    )
    sent = headers([*headers_from_env(), *(parse_header(text) for text in args.header or ())])
    url = Settings(args.url).url if args.url else None  # validates every URL of a comma-separated list
    model = {"retrieval_model": args.model} if args.command != "similar" else {"similar_model": args.model}
    return {"url": url, "timeout": args.timeout, "tls": tls, "headers": sent, **model}


def run(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    url = options.pop("url")
    with Client(url, **options) as client:
        if args.command == "recommend":
            answers = _recommend(client, args)
        elif args.command == "similar":
            answers = _similar(client, args)
        elif args.command == "status":
            return client.status(args.model, args.version, args.label)
        else:
            return client.metadata(args.model, args.version, args.label)
    if args.strict:
        refused = [answer.unknown for answer in answers.values() if answer.hits.fallback]
        if refused:
            reasons = "; ".join(f"{reason} to the model" for reason in refused)
            raise NotFoundError(f"{reasons} (--strict refuses the popularity fallback)")
    return answers


def _recommend(client: Client, args: argparse.Namespace) -> dict[str, Answer]:
    if args.history or args.history_id:
        by_id = bool(args.history_id)
        history = args.history_id if by_id else args.history
        ask = client.recommend_for_history_ids if by_id else client.recommend_for_history
        noun = "movie id" if by_id else "title"
        hits = ask(history, args.k, args.version, args.label)
        return {"history": Answer(hits, f"no {noun} of the history is known", f"history {noun}")}
    exclude = None if args.exclude is None else [list(args.exclude) for _ in args.user_ids]
    exclude_ids = None if args.exclude_id is None else [list(args.exclude_id) for _ in args.user_ids]
    rows = client.recommend(args.user_ids, args.k, exclude, args.version, args.label, exclude_ids=exclude_ids)
    entries = "excluded movie id" if exclude_ids is not None else "excluded title"
    return _answers(args.user_ids, rows, "user {} is unknown", entries)


def _similar(client: Client, args: argparse.Namespace) -> dict[str, Answer]:
    similar = client.similar_by_id if args.by_id else client.similar
    rows = similar(args.titles, args.k, args.version, args.label)
    return _answers(args.titles, rows, "movie id {} is unknown" if args.by_id else "{} is unknown", "")


def _answers(queries: Sequence[str], rows: Sequence[Recommendations], unknown: str, entries: str) -> dict[str, Answer]:
    """One Answer per query; ``unknown`` is a format of the query in double quotes."""
    return {
        q: Answer(hits, unknown.format(json.dumps(q, ensure_ascii=False)), entries)
        for q, hits in zip(queries, rows, strict=True)
    }


def render(result: Any) -> str:
    if isinstance(result, dict):  # query -> Answer
        lines = []
        for query, answer in result.items():
            lines.append(f"{query}:")
            lines += _hits_table(answer.hits)
            lines += [f"  {notice}" for notice in answer.notices()]
        return "\n".join(lines)
    if isinstance(result, list):  # VersionStatus
        rows = [("VERSION", "STATE", "STATUS")] + [
            (str(v.version), v.state, v.error_code + (f": {v.error_message}" if v.error_message else ""))
            for v in result
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)
    lines = [f"model {result.name} version {result.version}"]
    for sig in result.signatures.values():
        if sig.name.startswith("__"):  # e.g. __saved_model_init_op: not callable
            continue
        lines.append(f"signature {sig.name} ({sig.method_name})")
        for kind, specs in (("in ", sig.inputs), ("out", sig.outputs)):
            for alias, spec in specs.items():
                shape = "unknown" if spec.shape is None else "[" + ", ".join(map(str, spec.shape)) + "]"
                lines.append(f"  {kind} {alias}: {spec.dtype} {shape}")
    return "\n".join(lines)


def _hits_table(hits: Recommendations) -> list[str]:
    """One query's hits as an indented table with a header: rank, catalogue id, score, title."""
    rows = [("#", "ID", "SCORE", "TITLE")] + [
        (str(rank), hit.id, f"{hit.score:.4f}", hit.title) for rank, hit in enumerate(hits, 1)
    ]
    if len(rows) == 1:
        return ["  (no movies)"]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"  {r:>{width[0]}}  {i:<{width[1]}}  {s:>{width[2]}}  {t}" for r, i, s, t in rows]


def to_json(result: Any) -> Any:
    if isinstance(result, dict):  # query -> Answer
        return {
            q: {
                "hits": [dataclasses.asdict(h) for h in a.hits],
                "fallback": a.hits.fallback,
                "unmatched": a.hits.unmatched,
            }
            for q, a in result.items()
        }
    if isinstance(result, list):
        return [dataclasses.asdict(v) for v in result]
    return dataclasses.asdict(result)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command (``argv``, default ``sys.argv[1:]``); the exit code: 0, 1 (the call failed) or 2 (usage,
    by ``SystemExit``). ``prog`` names the command in usage messages: the console script, or ``python -m ...``."""
    args = build_parser(prog).parse_args(argv)
    options = check_usage(args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    try:
        result = run(args, options)
    except ServingError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(to_json(result), indent=2) if args.json else render(result))
    return 0
