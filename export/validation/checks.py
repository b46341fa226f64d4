"""Checks (TFX InfraValidator's checks): what differs between the staged and the in-memory answers, where the
staged answers break the contract (docs/contract.md), and recall against exact search. Each check reads what
a request owes from the request itself (export/validation/requests.py).
"""

from __future__ import annotations

import numpy as np

from export.validation.requests import Request
from export.validation.runners import FLAGS
from export.vectors import exact_top_k


def _rows_differ(exp_t, exp_s, act_t, act_s, tol: float) -> str | None:
    if exp_t.shape != act_t.shape:
        return f"shape {act_t.shape} != expected {exp_t.shape}"
    finite = np.isfinite(exp_s)
    if not np.array_equal(finite, np.isfinite(act_s)) or not np.allclose(
        exp_s[finite], act_s[finite], atol=tol, rtol=tol
    ):
        return f"scores {np.round(act_s, 4).tolist()} != expected {np.round(exp_s, 4).tolist()}"
    for j in np.flatnonzero(exp_t != act_t):
        tied = np.abs(exp_s - exp_s[j]) <= tol
        tied[j] = False
        if not tied.any() and j != len(exp_t) - 1:
            return f"title at rank {j + 1} is {act_t[j]!r}, expected {exp_t[j]!r}"
    return None


def _titles_owed(k: int, catalogue: frozenset[str] | None, excluded) -> int:
    """How many titles a row must hold: K, or fewer if its exclusions leave fewer than K of the catalogue
    (the servable's documented "" slots)."""
    if catalogue is None or excluded is None:
        return k
    return min(k, len(catalogue - set(excluded)))


def compare(
    model_name: str,
    requests: list[Request],
    expected,
    actual,
    k: int,
    tol: float,
    catalogue: frozenset[str] | None = None,
    id_of: dict[str, str] | None = None,
    query_keys: frozenset[str] | None = None,
) -> list[str]:
    """What differs between the staged (``actual``) and in-memory (``expected``) answers, and where the
    staged answers break the contract. ``catalogue`` (all candidate titles) lets rows that exclude all but
    fewer than K titles hold "" slots; without it every row must hold K titles. ``id_of`` (title -> catalogue
    id): each ``movie_ids`` entry must be its title's id ("" for an empty slot). ``catalogue`` and
    ``query_keys`` (the keys with a query of their own) given, ``fallback`` and ``unmatched`` must say which
    rows are the popularity fallback and how many entries matched nothing."""
    problems = []
    for request, exp, act in zip(requests, expected, actual, strict=True):
        signature = request.signature_name
        keys = request.row_keys()
        if act["movie_titles"].shape != (len(keys), k):
            problems.append(
                f"{model_name}/{signature}: output shape {act['movie_titles'].shape}, expected {(len(keys), k)}"
            )
            continue
        if request.twin is not None:  # a by-id request: the title-keyed answer, exactly (that one is checked below)
            if not _same_answer(act, actual[request.twin], tol):
                problems.append(
                    f"{model_name}/{signature} does not answer as "
                    f"{requests[request.twin].signature_name} does for the same movies' titles"
                )
            continue
        if id_of is not None:
            ids = act.get("movie_ids")
            owed = [[id_of.get(t, "") if t else "" for t in row] for row in act["movie_titles"].tolist()]
            if ids is None or np.asarray(ids).tolist() != owed:
                problems.append(f"{model_name}/{signature}: movie_ids are not the ids of the returned movie_titles")
        for row, key in enumerate(keys):
            why = _rows_differ(
                exp["movie_titles"][row], exp["scores"][row], act["movie_titles"][row], act["scores"][row], tol
            )
            if why:
                problems.append(f"{model_name}/{signature} for {key!r}: staged model differs from in-memory: {why}")
                break
        titles = act["movie_titles"]
        exclusions = request.inputs[request.excluded] if request.excluded else [None] * len(keys)
        for row, excluded in enumerate(exclusions):
            if (titles[row] != "").sum() < _titles_owed(k, catalogue, excluded):
                problems.append(f"{model_name}/{signature}: the row for {keys[row]!r} holds fewer than K={k} titles")
                break
        if request.excluded:
            for row, excluded in enumerate(exclusions):
                leaked = set(titles[row].tolist()) & (set(excluded) - {""})
                if leaked:
                    problems.append(
                        f"{model_name}/{signature} returned titles of the request {sorted(leaked)[:3]} "
                        f"for {keys[row]!r}"
                    )
                    break
        problems += _flag_problems(f"{model_name}/{signature}", request, exp, act, catalogue, query_keys)
        if not request.returns_query:
            for row, key in enumerate(keys):
                if key in set(titles[row].tolist()):
                    problems.append(f"{model_name} returned the query {key!r} in its own list")
                    break
    return problems


def _same_answer(answer: dict, twin: dict, tol: float) -> bool:
    """Titles, ids and flags equal and scores within ``tol``."""
    same_ids = np.asarray(answer.get("movie_ids", [])).tolist() == np.asarray(twin.get("movie_ids", [])).tolist()
    same_flags = all(
        np.asarray(answer.get(flag, [])).tolist() == np.asarray(twin.get(flag, [])).tolist() for flag in FLAGS
    )
    return (
        answer["movie_titles"].tolist() == twin["movie_titles"].tolist()
        and same_ids
        and same_flags
        and bool(np.allclose(answer["scores"], twin["scores"], atol=tol))
    )


def _flag_problems(where: str, request: Request, expected: dict, actual: dict, catalogue, query_keys) -> list[str]:
    """Where ``fallback`` / ``unmatched`` differ from the in-memory answer or from what the request's keys
    and entries owe (docs/contract.md): fallback for an unknown key or a history with no catalogue title."""
    for flag in FLAGS:
        if flag in expected and (
            flag not in actual or np.asarray(actual[flag]).tolist() != np.asarray(expected[flag]).tolist()
        ):
            return [f"{where}: staged model's {flag!r} differs from in-memory"]
    if catalogue is None or query_keys is None:
        return []
    inputs = request.inputs
    if request.query is None:  # histories
        owed = [not (set(row) & catalogue) for row in (inputs[request.excluded] if request.excluded else [])]
    else:
        owed = [key not in query_keys for key in inputs[request.query]]
    if np.asarray(actual.get("fallback", [])).tolist() != owed:
        return [f"{where}: 'fallback' is not true exactly for the unknown keys or histories"]
    if request.excluded and np.asarray(actual.get("unmatched", [])).tolist() != [
        sum(1 for t in row if t and t not in catalogue) for row in inputs[request.excluded]
    ]:
        return [f"{where}: 'unmatched' does not count the entries that are no catalogue title"]
    return []


def recall_at(vectors, keys: list[str], served_titles: np.ndarray, k: int, exclude_self: bool) -> float:
    """Mean |served top-k ∩ exact top-k| / k over the queries."""
    title_index = {t: i for i, t in enumerate(vectors.titles.tolist())}
    exclude = [{title_index[key]} if key in title_index else set() for key in keys] if exclude_self else None
    _, exact = exact_top_k(vectors.query_rows(keys), vectors.candidates, k, exclude)
    return _overlap(served_titles, vectors.titles[exact], k)


def history_recall(history_vectors, histories: list[list[str]], served_titles: np.ndarray, k: int) -> float:
    """Mean |served top-k ∩ exact top-k| / k of history queries, each history's own titles excluded."""
    title_index = {t: i for i, t in enumerate(history_vectors.titles.tolist())}
    rows = [[title_index[t] for t in history if t in title_index] for history in histories]
    _, exact = exact_top_k(history_vectors.queries(rows), history_vectors.candidates, k, [set(r) for r in rows])
    return _overlap(served_titles, history_vectors.titles[exact], k)


def _overlap(served_titles: np.ndarray, exact_titles: np.ndarray, k: int) -> float:
    """Mean share of each row's exact top-k found in its served top-k."""
    # strict=False: a served answer with the wrong number of rows is reported by compare(), not raised here.
    hits = [len(set(s[:k].tolist()) & set(e.tolist())) / k for s, e in zip(served_titles, exact_titles, strict=False)]
    return float(np.mean(hits)) if hits else 1.0
