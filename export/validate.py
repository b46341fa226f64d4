"""Validation before publish (TFX InfraValidator-style).

The staged SavedModel is loaded in a fresh ``sys.executable`` process under a deadline, through
``serving.bundle`` (tag ``serve``, warmup replayed, signatures called by tensor name). Requests built from
the model's own signatures are answered there and compared with the in-memory module:

- identical top-K titles (ties within ``score_tolerance`` may swap) and scores within the tolerance;
- every row holds K titles (an ``exclude_seen`` row fewer only when its exclusions leave fewer than K of
  the catalogue: the servable's documented "" slots); ``exclude_seen`` never returns an excluded title;
  ``similar_movies`` never returns the query; unknown keys get an answer;
- ``by_history`` never returns a title of the row's history, and answers histories of known users, an
  empty one, an all-unknown one and a mixed one;
- ``fallback`` is true exactly for the rows of unknown keys and histories without a known title, and
  ``unmatched`` counts the exclusion or history entries that are no title of the catalogue;
- the by-id signatures (``exclude_seen_by_id``, ``by_id``, ``by_history_ids``), asked with the catalogue ids
  of the titles in the title-keyed requests, answer exactly as those do;
- recall@10 of the served top-K against exact search over the same vectors >= the threshold, for each index
  (``by_history``'s: its queries computed from the histories as export/history.py does).

Any failure raises ``ValidationError`` whose message says what differed; the child's stderr is logged.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from export.vectors import exact_top_k

logger = logging.getLogger(__name__)

UNKNOWN_USER = "__unknown_user__"
UNKNOWN_TITLE = "__unknown_title__ (1900)"
UNKNOWN_ID = "__unknown_id__"
_RECALL_QUERIES = 1000
_MAX_HISTORY = 200  # titles of a history in the compare requests
_RECALL_HISTORY = 50  # ... and in the recall requests (1,000 rows)
_ROOT = Path(__file__).resolve().parent.parent


_FLAGS = ("fallback", "unmatched")  # per-row outputs beside the ranked ones (docs/contract.md)
_EXCLUDED_BY = {"exclude_seen": "exclude_titles", "by_history": "history_titles"}  # titles never returned


class ValidationError(RuntimeError):
    """The staged version does not answer as the in-memory model does (nothing is published)."""


# ---------------------------------------------------------------- requests built from the data


def _pad(rows: list[list[str]]) -> list[list[str]]:
    width = max([len(r) for r in rows] + [1])
    return [r + [""] * (width - len(r)) for r in rows]


def _history(seen: Mapping[str, list[str]], user: str, limit: int = _MAX_HISTORY) -> list[str]:
    """A user's distinct training titles, at most ``limit`` of them (a request's width stays bounded)."""
    return sorted(set(seen.get(user, [])))[:limit]


def retrieval_requests(
    vectors,
    seen: Mapping[str, list[str]],
    sample: int,
    rng: np.random.Generator,
    popular: list[str],
    exclude_index: bool = False,
) -> list[dict]:
    """The requests that check a staged retrieval model; ``exclude_index``: exclude_seen has an index of its
    own, whose recall is checked too (with nothing excluded)."""
    users = vectors.query_keys.tolist()
    picked = [users[i] for i in sorted(rng.choice(len(users), size=min(sample, len(users)), replace=False))]
    recall_users = (
        users
        if len(users) <= _RECALL_QUERIES
        else [users[i] for i in sorted(rng.choice(len(users), size=_RECALL_QUERIES, replace=False))]
    )
    heavy = max(users, key=lambda u: len(seen.get(u, [])))
    excl_users = [*picked[:8], heavy]
    exclusions = [sorted(set(seen.get(u, []))) for u in excl_users]
    # An unknown user gets the popular movies; excluding the top ones must still yield K others.
    excl_users.append(UNKNOWN_USER)
    exclusions.append(popular)
    exclusions[0] = [*exclusions[0], UNKNOWN_TITLE]  # an exclusion that matches nothing is counted
    # Histories: known users' (the heavy one's too), an empty one, an all-unknown one, a mixed one.
    histories = [_history(seen, u) for u in excl_users[:-1]]
    histories += [[], [UNKNOWN_TITLE], [*histories[0][:3], UNKNOWN_TITLE]]
    return [
        {"signature_name": "serving_default", "inputs": {"user_id": [*picked, UNKNOWN_USER]}, "purpose": "compare"},
        {
            "signature_name": "exclude_seen",
            "inputs": {"user_id": excl_users, "exclude_titles": _pad(exclusions)},
            "purpose": "compare",
        },
        {"signature_name": "by_history", "inputs": {"history_titles": _pad(histories)}, "purpose": "compare"},
        {"signature_name": "serving_default", "inputs": {"user_id": recall_users}, "purpose": "recall"},
        {
            "signature_name": "by_history",
            "inputs": {"history_titles": _pad([_history(seen, u, _RECALL_HISTORY) for u in recall_users])},
            "purpose": "recall_history",
        },
    ] + (
        [
            {
                "signature_name": "exclude_seen",
                "inputs": {"user_id": recall_users, "exclude_titles": [[""] for _ in recall_users]},
                "purpose": "recall_exclude_seen",
            }
        ]
        if exclude_index
        else []
    )


def similar_requests(vectors, sample: int, rng: np.random.Generator) -> list[dict]:
    titles = vectors.query_keys.tolist()
    picked = [titles[i] for i in sorted(rng.choice(len(titles), size=min(sample, len(titles)), replace=False))]
    recall_titles = (
        titles
        if len(titles) <= _RECALL_QUERIES
        else [titles[i] for i in sorted(rng.choice(len(titles), size=_RECALL_QUERIES, replace=False))]
    )
    return [
        {
            "signature_name": "serving_default",
            "inputs": {"movie_title": [*picked, UNKNOWN_TITLE]},
            "purpose": "compare",
        },
        {"signature_name": "serving_default", "inputs": {"movie_title": recall_titles}, "purpose": "recall"},
    ]


def with_ids(model_name: str, requests: list[dict], titles, ids) -> list[dict]:
    """``requests`` and, for each title-keyed compare request, its twin on the by-id signature: the same
    rows with each title replaced by its catalogue id (``ids[i]`` of ``titles[i]``; an unknown title by an
    unknown id), which must answer exactly as its twin does."""
    id_of = dict(zip(list(titles), list(ids), strict=True))
    twins = []
    for position, request in enumerate(requests):
        if request["purpose"] != "compare":
            continue
        if model_name == "similar_movies":
            signature, field, by = "by_id", "movie_title", "movie_id"
            values = [id_of.get(t, UNKNOWN_ID) for t in request["inputs"][field]]
        elif request["signature_name"] in ("exclude_seen", "by_history"):
            signature, field, by = {
                "exclude_seen": ("exclude_seen_by_id", "exclude_titles", "exclude_ids"),
                "by_history": ("by_history_ids", "history_titles", "history_ids"),
            }[request["signature_name"]]
            values = [[id_of.get(t, UNKNOWN_ID) if t else "" for t in row] for row in request["inputs"][field]]
        else:
            continue
        inputs = {name: value for name, value in request["inputs"].items() if name != field}
        twins.append(
            {"signature_name": signature, "inputs": {**inputs, by: values}, "purpose": "compare", "twin": position}
        )
    return requests + twins


def warmup_inputs(requests: list[dict], per_signature: int = 3) -> dict[str, list[dict]]:
    """A few rows of each compare request, as {signature: [{input: array}]} for export/warmup.py."""
    out: dict[str, list[dict]] = {}
    for request in requests:
        if request["purpose"] != "compare":
            continue
        inputs = {
            name: np.array(value[:per_signature] + value[-1:], dtype=object)
            for name, value in request["inputs"].items()
        }
        out.setdefault(request["signature_name"], []).append(inputs)
    return out


# ---------------------------------------------------------------- answers


def in_memory(module, requests: list[dict]) -> list[dict]:
    import tensorflow as tf

    signatures = module.signatures()
    answers = []
    for request in requests:
        inputs = {k: tf.constant(np.array(v, dtype=object).astype(str)) for k, v in request["inputs"].items()}
        out = signatures[request["signature_name"]](**inputs)
        answers.append(
            {
                "movie_titles": np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(out["movie_titles"].numpy()),
                "scores": out["scores"].numpy(),
                **{flag: out[flag].numpy() for flag in _FLAGS if flag in out},
            }
        )
    return answers


def in_fresh_process(saved_model: Path, requests: list[dict], timeout_s: float) -> list[dict]:
    """Answers of the staged SavedModel loaded by serving.bundle in a fresh Python process."""
    with tempfile.TemporaryDirectory(prefix="export-validate-") as tmp:
        req_path, out_path = Path(tmp) / "requests.json", Path(tmp) / "answers.json"
        req_path.write_text(
            json.dumps([{k: r[k] for k in ("signature_name", "inputs")} for r in requests]), encoding="utf-8"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["EXPORT_VALIDATE_PARENT_PID"] = str(os.getpid())  # the child exits if this process dies
        # Absolute: the child runs in the package root, not in the caller's working directory.
        cmd = [
            sys.executable,
            "-m",
            "export.validate_child",
            str(Path(saved_model).resolve()),
            str(req_path),
            str(out_path),
        ]
        try:
            proc = subprocess.run(cmd, cwd=str(_ROOT), env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            _dump(exc.stderr)
            raise ValidationError(f"loading {saved_model.name} in a fresh process took over {timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            _dump(proc.stderr)
            last = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
            raise ValidationError(
                f"the staged SavedModel failed to load or answer in a fresh process: "
                f"{last[-1] if last else 'exit code ' + str(proc.returncode)}"
            )
        raw = json.loads(out_path.read_text(encoding="utf-8"))
    return [
        {
            "movie_titles": np.array(a["movie_titles"], dtype=object),
            "scores": np.array(a["scores"], dtype=np.float32),
            **({"movie_ids": np.array(a["movie_ids"], dtype=object)} if "movie_ids" in a else {}),
            **({"fallback": np.array(a["fallback"], dtype=bool)} if "fallback" in a else {}),
            **({"unmatched": np.array(a["unmatched"], dtype=np.int64)} if "unmatched" in a else {}),
        }
        for a in raw
    ]


def _dump(stderr) -> None:
    if stderr:
        text = stderr if isinstance(stderr, str) else stderr.decode("utf-8", "replace")
        logger.error("validation subprocess stderr:\n%s", text[-20000:])


# ---------------------------------------------------------------- checks


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
    requests,
    expected,
    actual,
    k: int,
    tol: float,
    catalogue: frozenset[str] | None = None,
    id_of: dict[str, str] | None = None,
    query_keys: frozenset[str] | None = None,
) -> list[str]:
    """What differs between the staged (``actual``) and in-memory (``expected``) answers, and where the
    staged answers break the contract. ``catalogue`` (all candidate titles) lets ``exclude_seen`` and
    ``by_history`` rows that exclude all but fewer than K titles hold "" slots; without it every row must hold
    K titles. ``id_of`` (title -> catalogue id): each ``movie_ids`` entry must be its title's id ("" for an
    empty slot). ``catalogue`` and ``query_keys`` (the keys with a query of their own) given, ``fallback`` and
    ``unmatched`` must say which rows are the popularity fallback and how many entries matched nothing."""
    problems = []
    for request, exp, act in zip(requests, expected, actual, strict=True):
        signature = request["signature_name"]
        keys = next(iter(request["inputs"].values()))
        if signature in _EXCLUDED_BY:  # a row's key, as messages name it: its user, or its history
            keys = request["inputs"].get("user_id", [f"history {i}" for i in range(len(keys))])
        if act["movie_titles"].shape != (len(keys), k):
            problems.append(
                f"{model_name}/{signature}: output shape {act['movie_titles'].shape}, expected {(len(keys), k)}"
            )
            continue
        if "twin" in request:  # a by-id request: the title-keyed answer, exactly (that one is checked below)
            twin = actual[request["twin"]]
            same_ids = np.asarray(act.get("movie_ids", [])).tolist() == np.asarray(twin.get("movie_ids", [])).tolist()
            same_flags = all(
                np.asarray(act.get(flag, [])).tolist() == np.asarray(twin.get(flag, [])).tolist() for flag in _FLAGS
            )
            if (
                act["movie_titles"].tolist() != twin["movie_titles"].tolist()
                or not same_ids
                or not same_flags
                or not np.allclose(act["scores"], twin["scores"], atol=tol)
            ):
                problems.append(
                    f"{model_name}/{signature} does not answer as "
                    f"{requests[request['twin']]['signature_name']} does for the same movies' titles"
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
        field = _EXCLUDED_BY.get(signature)
        exclusions = request["inputs"][field] if field else [None] * len(keys)
        for row, excluded in enumerate(exclusions):
            if (titles[row] != "").sum() < _titles_owed(k, catalogue, excluded):
                problems.append(f"{model_name}/{signature}: the row for {keys[row]!r} holds fewer than K={k} titles")
                break
        if field:
            for row, excluded in enumerate(exclusions):
                leaked = set(titles[row].tolist()) & (set(excluded) - {""})
                if leaked:
                    problems.append(
                        f"{model_name}/{signature} returned titles of the request {sorted(leaked)[:3]} "
                        f"for {keys[row]!r}"
                    )
                    break
        problems += _flag_problems(model_name, request, exp, act, catalogue, query_keys)
        if model_name == "similar_movies":
            for row, key in enumerate(keys):
                if key in set(titles[row].tolist()):
                    problems.append(f"similar_movies returned the query {key!r} in its own list")
                    break
    return problems


def _flag_problems(model_name: str, request: dict, expected: dict, actual: dict, catalogue, query_keys) -> list[str]:
    """Where ``fallback`` / ``unmatched`` differ from the in-memory answer or from what the request's keys
    and entries owe (docs/contract.md): fallback for an unknown key or a history with no catalogue title."""
    signature, inputs = request["signature_name"], request["inputs"]
    where = f"{model_name}/{signature}"
    for flag in _FLAGS:
        if flag in expected and (
            flag not in actual or np.asarray(actual[flag]).tolist() != np.asarray(expected[flag]).tolist()
        ):
            return [f"{where}: staged model's {flag!r} differs from in-memory"]
    if catalogue is None or query_keys is None:
        return []
    field = _EXCLUDED_BY.get(signature)
    if signature == "by_history":
        owed = [not (set(row) & catalogue) for row in inputs[field]]
    else:
        owed = [key not in query_keys for key in next(iter(inputs.values()))]
    if np.asarray(actual.get("fallback", [])).tolist() != owed:
        return [f"{where}: 'fallback' is not true exactly for the unknown keys or histories"]
    if field and np.asarray(actual.get("unmatched", [])).tolist() != [
        sum(1 for t in row if t and t not in catalogue) for row in inputs[field]
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


def validate(
    model_name: str,
    staged: Path,
    module,
    vectors,
    requests: list[dict],
    *,
    k: int,
    recall_threshold: float,
    tolerance: float,
    timeout_s: float,
    exclude_vectors=None,
    history_vectors=None,
) -> dict:
    """Run every check; return {"recall_at_10": ...} or raise ValidationError naming what differed.
    ``exclude_vectors``: those of exclude_seen's own index (its recall is checked against them);
    ``history_vectors``: the by_history signatures' (export.history.HistoryVectors)."""
    logger.info("validating %s in a fresh process", model_name)
    expected = in_memory(module, requests)
    actual = in_fresh_process(staged, requests, timeout_s)
    decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])
    id_of = dict(zip(decode(module.titles.numpy()).tolist(), decode(module.ids.numpy()).tolist(), strict=True))
    problems = compare(
        model_name,
        requests,
        expected,
        actual,
        k,
        tolerance,
        catalogue=frozenset(vectors.titles.tolist()),
        id_of=id_of,
        query_keys=frozenset(vectors.query_keys.tolist()),
    )
    recall_k = min(10, k)
    recalls = {}
    for request, act in zip(requests, actual, strict=True):
        if request["purpose"] == "recall_history" and history_vectors is not None:
            recalls["by_history"] = history_recall(
                history_vectors, request["inputs"]["history_titles"], act["movie_titles"], recall_k
            )
        elif request["purpose"] in ("recall", "recall_exclude_seen"):
            keys = request["inputs"]["user_id" if "user_id" in request["inputs"] else "movie_title"]
            against = exclude_vectors if request["purpose"] == "recall_exclude_seen" else vectors
            recalls[request["signature_name"]] = recall_at(
                against, keys, act["movie_titles"], recall_k, model_name == "similar_movies"
            )
    for signature, value in recalls.items():
        if value < recall_threshold:
            where = "" if signature == "serving_default" else f" ({signature}'s index)"
            problems.append(
                f"{model_name}: recall@{recall_k} against exact search is {value:.4f} < threshold "
                f"{recall_threshold}{where} (raise --scann-leaves-to-search or --scann-reorder, or "
                f"use --index brute_force)"
            )
    recall = min(recalls.values()) if recalls else None
    if problems:
        raise ValidationError("; ".join(problems))
    logger.info("%s validated: recall@%d = %.4f", model_name, recall_k, recall if recall is not None else float("nan"))
    return {
        "recall_at_10": recall,
        "recall_k": recall_k,
        "recall_by_signature": {name: round(value, 6) for name, value in recalls.items()},
    }
