"""Validation requests, typed (TFX InfraValidator's request builder): a signature's inputs, why it is asked, and
what its answer owes. export/validation/specs.py builds them per served model; the runners answer them and the
checks read them, without branching on model or signature names.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

import numpy as np

UNKNOWN_USER = "__unknown_user__"
UNKNOWN_TITLE = "__unknown_title__ (1900)"
UNKNOWN_ID = "__unknown_id__"
RECALL_QUERIES = 1000  # at most this many rows in a recall request (a seeded sample above)
MAX_HISTORY = 200  # titles of a history in the compare requests
RECALL_HISTORY = 50  # ... and in the recall requests (1,000 rows)


class Purpose(enum.Enum):
    COMPARE = "compare"  # answered as the in-memory module answers, and as the contract says
    RECALL = "recall"  # ... and its served top-K measured against exact search over its index's vectors


@dataclasses.dataclass(frozen=True)
class Request:
    """One request to a signature and what its answer owes beside the in-memory module's answer."""

    signature_name: str
    inputs: dict[str, list]  # input name -> a list (one key per row) or a list of rows
    purpose: Purpose = Purpose.COMPARE
    query: str | None = None  # the input holding each row's key; None: each row is a history (by_history)
    excluded: str | None = None  # the input whose titles a row must not hold (exclude_seen, by_history)
    returns_query: bool = True  # False: a row never holds its own key (similar_movies)
    twin: int | None = None  # a by-id request: the position of the title-keyed request it must answer as

    def row_keys(self) -> list:
        """Each row's key, as messages name it: its user or title, or "history <row>"."""
        if self.query is None:
            return [f"history {i}" for i in range(len(next(iter(self.inputs.values()))))]
        return self.inputs[self.query]

    def wire(self) -> dict:
        """The request as export/validate_child.py reads it: ``{"signature_name": ..., "inputs": ...}``."""
        return {"signature_name": self.signature_name, "inputs": self.inputs}


@dataclasses.dataclass(frozen=True)
class ById:
    """A title-keyed signature's by-id twin: ``signature`` takes ``by`` (catalogue ids) instead of ``field``
    (titles) and must answer exactly alike."""

    signature: str
    field: str
    by: str


def pad(rows: list[list[str]]) -> list[list[str]]:
    """Rows of titles padded with "" (which matches nothing) to the longest."""
    width = max([len(r) for r in rows] + [1])
    return [r + [""] * (width - len(r)) for r in rows]


def history(seen: Mapping[str, list[str]], user: str, limit: int = MAX_HISTORY) -> list[str]:
    """A user's distinct training titles, at most ``limit`` of them (a request's width stays bounded)."""
    return sorted(set(seen.get(user, [])))[:limit]


def sample(keys: list[str], size: int, rng: np.random.Generator) -> list[str]:
    """``size`` of ``keys`` drawn by ``rng`` without replacement, in their order (all of them if fewer)."""
    return [keys[i] for i in sorted(rng.choice(len(keys), size=min(size, len(keys)), replace=False))]


def recall_keys(keys: list[str], rng: np.random.Generator) -> list[str]:
    """The keys a recall request asks for: all, or a sample of ``RECALL_QUERIES``."""
    return keys if len(keys) <= RECALL_QUERIES else sample(keys, RECALL_QUERIES, rng)


def with_ids(requests: list[Request], by_id: Mapping[str, ById], titles, ids) -> list[Request]:
    """``requests`` and, for each compare request to a signature of ``by_id``, its twin: the same rows with each
    title replaced by its catalogue id (``ids[i]`` of ``titles[i]``; an unknown title by an unknown id, "" kept)."""
    id_of = dict(zip(list(titles), list(ids), strict=True))
    twins = []
    for position, request in enumerate(requests):
        twin = by_id.get(request.signature_name)
        if request.purpose is not Purpose.COMPARE or twin is None:
            continue
        values = [_ids(row, id_of) for row in request.inputs[twin.field]]
        inputs = {name: value for name, value in request.inputs.items() if name != twin.field}
        query = twin.by if request.query == twin.field else request.query
        twins.append(Request(twin.signature, {**inputs, twin.by: values}, query=query, twin=position))
    return requests + twins


def _ids(row, id_of: Mapping[str, str]):
    """A title's catalogue id, or a row's ("" kept); an unknown title gets ``UNKNOWN_ID``."""
    if isinstance(row, list):
        return [id_of.get(t, UNKNOWN_ID) if t else "" for t in row]
    return id_of.get(row, UNKNOWN_ID)


def warmup_inputs(requests: list[Request], per_signature: int = 3) -> dict[str, list[dict]]:
    """A few rows of each compare request, as {signature: [{input: array}]} for export/warmup.py."""
    out: dict[str, list[dict]] = {}
    for request in requests:
        if request.purpose is not Purpose.COMPARE:
            continue
        inputs = {
            name: np.array(value[:per_signature] + value[-1:], dtype=object) for name, value in request.inputs.items()
        }
        out.setdefault(request.signature_name, []).append(inputs)
    return out
