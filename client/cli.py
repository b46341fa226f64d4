"""``python -m client``: recommend, similar, status, metadata; a table by default, JSON with ``--json``.

Any failure prints one line, ``error: <CODE>: <message>``, to stderr and exits 1 (usage errors: 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any

from client.client import Client
from client.errors import ServingError
from client.settings import DEFAULT_URL, URL_ENV


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"http://host:8501 or grpc://host:8500 (default ${URL_ENV}, else {DEFAULT_URL})")
    common.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds (default 10)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("-v", "--verbose", action="store_true", help="log retries and waits to stderr")
    servable = argparse.ArgumentParser(add_help=False)
    choice = servable.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="a specific model version")
    choice.add_argument("--label", help="a version label such as stable or canary")

    parser = argparse.ArgumentParser(prog="python -m client", description="Query the movie retrieval server.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("recommend", parents=[common, servable], help="movies for user ids")
    p.add_argument("user_ids", nargs="+", metavar="USER_ID")
    p.add_argument("-k", type=int, help="number of movies (default: the model's K)")
    p.add_argument("--exclude", nargs="+", action="extend", metavar="TITLE", help="titles never to return")
    p.add_argument("--exclude-id", nargs="+", action="extend", metavar="MOVIE_ID", help="catalogue ids never to return")
    p = sub.add_parser("similar", parents=[common, servable], help="movies like the given titles (or ids)")
    p.add_argument("titles", nargs="+", metavar="TITLE")
    p.add_argument("-k", type=int, help="number of movies (default: the model's K)")
    p.add_argument("--by-id", action="store_true", help="the arguments are catalogue movie ids, not titles")
    for name, text in (("status", "versions of a model and their states"), ("metadata", "a model's signatures")):
        p = sub.add_parser(name, parents=[common, servable], help=text)
        p.add_argument("--model", default="retrieval", help="model name (default retrieval)")
    return parser


def run(args: argparse.Namespace) -> Any:
    with Client(args.url, timeout=args.timeout) as client:
        if args.command == "recommend":
            exclude = None if args.exclude is None else [list(args.exclude) for _ in args.user_ids]
            exclude_ids = None if args.exclude_id is None else [list(args.exclude_id) for _ in args.user_ids]
            hits = client.recommend(args.user_ids, args.k, exclude, args.version, args.label, exclude_ids=exclude_ids)
            return dict(zip(args.user_ids, hits, strict=True))
        if args.command == "similar":
            similar = client.similar_by_id if args.by_id else client.similar
            return dict(zip(args.titles, similar(args.titles, args.k, args.version, args.label), strict=True))
        if args.command == "status":
            return client.status(args.model, args.version, args.label)
        return client.metadata(args.model, args.version, args.label)


def render(result: Any) -> str:
    if isinstance(result, dict):  # query -> hits
        lines = []
        for query, hits in result.items():
            lines.append(f"{query}:")
            lines += [f"  {rank:>3}  {hit.score:>10.4f}  {hit.title}" for rank, hit in enumerate(hits, 1)]
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


def to_json(result: Any) -> Any:
    if isinstance(result, dict):
        return {q: [dataclasses.asdict(h) for h in hits] for q, hits in result.items()}
    if isinstance(result, list):
        return [dataclasses.asdict(v) for v in result]
    return dataclasses.asdict(result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    try:
        result = run(args)
    except ServingError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(to_json(result), indent=2) if args.json else render(result))
    return 0
