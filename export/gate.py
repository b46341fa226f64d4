"""The gate before publish: a version reaches the store only if it is worth serving (TFX Evaluator's blessing).

TFX's Pusher pushes only a model its Evaluator blessed: the metrics clear their thresholds and the model is not
worse than the baseline, the model blessed before it, on the same evaluation data (``change_threshold``); its
InfraValidator's part is export/validation/. ``check`` runs after every model is staged and validated and before
any is published (export/pipeline.py); the version is published only if

(a) it beats popularity: the seen-excluded top-10 and top-100 hit rates of the export's test split
    (``metrics`` of export/evaluate.py: ``model_exclude_seen`` against ``popularity_exclude_seen``) are each above
    popularity's by more than the 95 % interval of the difference: export.evaluate.compare's "beats", with
    sqrt(ci_model² + ci_popularity²) of the rates' half-widths in ``metrics["ci95"]`` (it ignores that both rows
    score the same ratings, so it is wide: the gate errs towards refusing); and
(b) it is not worse than the version being served: the newest numeric version of ``retrieval`` in the store.
    The staged version and the served one, each loaded in a fresh process as validation loads it
    (``export.validation.runners.in_fresh_process``: export/validate_child.py, serving.bundle), answer ``exclude_seen``
    for the same test users (at most ``MAX_USERS``, a seeded sample above), each user's training titles
    excluded except their test titles (export/evaluate.py never removes the rating's own title); a test
    rating is a hit at k when its title is among the first k answered (export/evaluate.py's definition). The
    new version is worse when a paired difference new - served, at top-10 and top-100 (those within both
    versions' K; with K = 10, top-10 alone), is below minus the tolerance: by default its 95 % half-width,
    1.96 sd / sqrt(ratings), or ``--gate-tolerance``. Users and titles the served version does not know get
    its popularity fallback, as the server would answer them: nothing is special-cased.

The test split is the common ground, not the validation split: the final model is refit on the whole training
part, validation rows included (export/selection.py), so only test rows are unseen by the new version; on the
same data and split (the seed's split is fixed) the served version never saw them either (trained on other data
that holds some of them, it is favoured, and the gate errs towards keeping it). An export into a store with no
served version, or without ``retrieval``, is gated on (a) alone; a served version that cannot be loaded or
answer is not compared with (the record says why). ``--no-gate`` publishes without judging.

A refused version is not published: each staged model is kept for inspection as ``<base>/.refused-<UTC time>``
(non-numeric: TF Serving and export/publish.py's pruning and ``clean_stale`` never touch it; the newest
``KEEP_REFUSED`` are kept), its manifest's ``gate`` recording the verdict, and ``Refused`` is raised with one
line naming the figures and the override; ``python -m export`` exits ``EXIT_REFUSED`` (export/cli.py). A
published version's manifest records the verdict as well.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from export import evaluate as evaluation
from export import manifest, publish
from export.evaluate import COMPARED
from export.validation import ValidationError
from export.validation.requests import Request, pad
from export.validation.runners import in_fresh_process

EXIT_REFUSED = 3  # python -m export's exit code for a version the gate refused (1: failures, 2: bad flags)
REFUSED_PREFIX = ".refused-"
KEEP_REFUSED = 3  # refused versions kept per model for inspection; older ones are removed
MODEL = "retrieval"  # the model whose answers (b) compares
MAX_USERS = 2_000  # test users asked for (b); above, a seeded sample
BATCH_USERS = 128  # users per exclude_seen request (a request's size stays bounded)
_Z95 = 1.96


class Refused(Exception):
    """The gate refused the staged version: ``str()`` is the one line to print; ``serving`` says that the store
    still holds a version of every exported model (the one that keeps serving)."""

    def __init__(self, line: str, serving: bool):
        super().__init__(line)
        self.serving = serving


# ---------------------------------------------------------------- (a) against popularity


def against_popularity(metrics: Mapping[str, Any]) -> dict:
    """(a): per judged column (``COMPARED``) the model's and popularity's seen-excluded hit rates, the difference
    and its 95 % interval, as export.evaluate.compare judges them; ``passed`` when the model beats popularity
    (every difference above its interval)."""
    row = evaluation.compare(dict(metrics))["popularity"]
    columns = {}
    for c in COMPARED:
        model, theirs = row[f"{c}_exclude_seen"]
        columns[c] = {
            "model": round(model, 6),
            "popularity": round(theirs, 6),
            "difference": round(model - theirs, 6),
            "ci95": row["ci95_of_difference"][c],
        }
    return {"passed": row["beats"], "columns": columns}


# ---------------------------------------------------------------- (b) against the served version


def not_worse(new: Mapping[str, np.ndarray], served: Mapping[str, np.ndarray], tolerance: float | None) -> dict:
    """(b) from per-rating hits (0/1 arrays per column, the same ratings in the same order): per column both hit
    rates, the paired difference new - served, its 95 % half-width and the tolerance used (that half-width
    unless ``tolerance`` is given); ``passed`` unless a difference is below minus its tolerance."""
    columns = {}
    for c in new:
        diff = np.asarray(new[c], dtype=np.float64) - np.asarray(served[c], dtype=np.float64)
        width = _Z95 * float(np.std(diff)) / math.sqrt(max(len(diff), 1))
        columns[c] = {
            "new": round(float(np.mean(new[c])) if len(diff) else 0.0, 6),
            "served": round(float(np.mean(served[c])) if len(diff) else 0.0, 6),
            "difference": round(float(np.mean(diff)) if len(diff) else 0.0, 6),
            "ci95": round(width, 6),
            "tolerance": round(width if tolerance is None else tolerance, 6),
        }
    return {"passed": all(v["difference"] >= -v["tolerance"] for v in columns.values()), "columns": columns}


class TestRows:
    """The test ratings (b) scores: their users, each user's exclusions and each rating's title."""

    def __init__(self, users: list[str], exclusions: list[list[str]], rows: np.ndarray, targets: list[str]):
        self.users, self.exclusions = users, exclusions
        self.rows, self.targets = rows, targets  # per rating: its user's position in ``users``, its title

    @classmethod
    def of(
        cls,
        test_users: Any,
        test_titles: Any,
        seen: Mapping[str, list[str]],
        titles: np.ndarray,
        max_users: int = MAX_USERS,
        seed: int = 0,
    ) -> TestRows:
        """Test ratings (columns of str or export.data.records.Coded) whose title the new version ranks (as
        export/evaluate.py counts them), of at most ``max_users`` users; each user excludes their training titles
        (``seen``) but their test titles."""
        users_of = _strings(test_users)
        titles_of = _strings(test_titles)
        ranked = set(np.asarray(titles).tolist())
        keep = [i for i, t in enumerate(titles_of) if t in ranked]
        users = sorted({users_of[i] for i in keep})
        if len(users) > max_users:
            picked = np.random.default_rng(seed).choice(len(users), size=max_users, replace=False)
            users = [users[i] for i in sorted(picked.tolist())]
        position = {u: i for i, u in enumerate(users)}
        keep = [i for i in keep if users_of[i] in position]
        tested: dict[str, set[str]] = {}
        for i in keep:
            tested.setdefault(users_of[i], set()).add(titles_of[i])
        exclusions = [sorted(set(seen.get(u, [])) - tested[u]) for u in users]
        rows = np.array([position[users_of[i]] for i in keep], dtype=np.int64)
        return cls(users, exclusions, rows, [titles_of[i] for i in keep])

    def requests(self, batch: int = BATCH_USERS) -> list[Request]:
        """``exclude_seen`` requests, ``batch`` users each, exclusions padded with ``""`` (which excludes nothing)."""
        out = []
        for start in range(0, len(self.users), batch):
            inputs: dict[str, list] = {
                "user_id": self.users[start : start + batch],
                "exclude_titles": pad(self.exclusions[start : start + batch]),
            }
            out.append(Request("exclude_seen", inputs, query="user_id", excluded="exclude_titles"))
        return out

    def hits(self, answers: list[dict], cutoffs: list[int]) -> dict[str, np.ndarray]:
        """Per rating, 0/1 at each of ``cutoffs``: its title among the first k its user was answered."""
        answered = np.concatenate([np.asarray(a["movie_titles"], dtype=object) for a in answers])
        rank = np.full(len(self.targets), answered.shape[1], dtype=np.int64)
        for i, (row, target) in enumerate(zip(self.rows.tolist(), self.targets, strict=True)):
            found = np.flatnonzero(answered[row] == target)
            if len(found):
                rank[i] = found[0]
        return {f"top_{k}": (rank < k).astype(np.int8) for k in cutoffs}


def cutoffs(width: int) -> list[int]:
    """The cut-offs of ``COMPARED`` (top-10, top-100) that answers of ``width`` (K) titles hold, or K itself."""
    return [k for k in (int(c.split("_")[1]) for c in COMPARED) if k <= width] or [width]


def _strings(column: Any) -> list[str]:
    return (column.values() if hasattr(column, "values") and callable(column.values) else np.asarray(column)).tolist()


def against_served(staged: Path, served: Path, rows: TestRows, tolerance: float | None, timeout_s: float) -> dict:
    """(b): both versions answer ``rows``' requests in fresh processes (concurrently); ``not_worse`` at the
    cut-offs the narrower of their K holds, plus how many users and ratings were scored. A served version that
    cannot answer is not compared (``passed`` None, ``why``)."""
    if not rows.targets:
        return {"passed": None, "why": "no test rating of a title the new version ranks"}
    requests = rows.requests()
    with ThreadPoolExecutor(max_workers=2) as pool:
        new_job = pool.submit(in_fresh_process, staged, requests, timeout_s)
        served_job = pool.submit(in_fresh_process, served, requests, timeout_s)
        new_answers = new_job.result()
        try:
            served_answers = served_job.result()
        except ValidationError as exc:
            return {"passed": None, "why": f"it could not answer in a fresh process: {exc}"}
    at = cutoffs(min(np.asarray(a["movie_titles"]).shape[1] for a in (new_answers[0], served_answers[0])))
    verdict = not_worse(rows.hits(new_answers, at), rows.hits(served_answers, at), tolerance)
    return {**verdict, "users": len(rows.users), "ratings": len(rows.targets)}


# ---------------------------------------------------------------- the verdict


def _figures(columns: Mapping[str, Mapping[str, float]], mine: str, theirs: str, width: str) -> str:
    return ", ".join(
        f"{c.replace('_', '-')} {v[mine]:.4f} vs {v[theirs]:.4f} ({v['difference']:+.4f}, needs "
        f"{'>' if width == 'ci95' else '>='} {'+' if width == 'ci95' else '-'}{v[width]:.4f})"
        for c, v in columns.items()
    )


def line(record: Mapping[str, Any]) -> str:
    """The refusal's one line: the figures that failed and the flag that overrides the gate."""
    reasons = []
    popularity = record["popularity"]
    if not popularity["passed"]:
        reasons.append(
            "it does not beat popularity on the test split (seen excluded: "
            + _figures(popularity["columns"], "model", "popularity", "ci95")
            + ")"
        )
    served = record.get("served")
    if served and served.get("passed") is False:
        reasons.append(
            f"it is worse than the served version {served['version']} on {served['ratings']} test ratings "
            f"(seen excluded: {_figures(served['columns'], 'new', 'served', 'tolerance')})"
        )
    kept = sorted({Path(path).name for path in record.get("kept", [])})
    return (
        f"refused by the gate: {'; and '.join(reasons)}; nothing was published"
        + (f" (kept as {', '.join(kept)} beside each model's versions)" if kept else "")
        + "; --no-gate publishes it anyway"
    )


def check(
    config: Any,
    metrics: Mapping[str, Any],
    staged: dict[str, Path],
    manifests: dict[str, dict],
    bases: Mapping[str, Path],
    test: tuple[Any, Any],
    seen: Mapping[str, list[str]],
    titles: np.ndarray,
    report: Callable[[str], Any] = print,
) -> dict:
    """Judge the staged versions (``staged``: model name -> staging folder, validated) and record the verdict as
    each manifest's ``gate`` (in ``manifests`` and on disk). ``test``: the test split's user and title columns;
    ``seen``: each user's training titles; ``titles``: those the new version ranks. Returns the record when the
    versions may be published; else keeps them aside (removing them from ``staged``) and raises ``Refused``."""
    popularity = against_popularity(metrics)
    record: dict[str, Any] = {"popularity": popularity, "served": None}
    if not config.gate:
        record["decision"] = "published without the gate (--no-gate)"
        report(f"gate: {summary(record)}")
        return _record(record, staged, manifests)
    before = publish.versions(bases[MODEL]) if MODEL in staged else []
    if before:
        version = before[-1]
        report(f"gate: scoring the staged {MODEL} and the served version {version} on the test split, seen excluded")
        start = time.perf_counter()
        rows = TestRows.of(*test, seen, titles)
        served = against_served(
            staged[MODEL], bases[MODEL] / str(version), rows, config.gate_tolerance, config.validation_timeout_s
        )
        record["served"] = {"version": version, **served, "seconds": round(time.perf_counter() - start, 2)}
    passed = popularity["passed"] and (record["served"] is None or record["served"]["passed"] is not False)
    record["decision"] = "published" if passed else "refused"
    report(f"gate: {summary(record)}")
    if passed:
        return _record(record, staged, manifests)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record["kept"] = [str(bases[name] / f"{REFUSED_PREFIX}{stamp}-{os.getpid()}") for name in staged]
    _record(record, staged, manifests)
    for name, kept in zip(list(staged), record["kept"], strict=True):
        os.rename(staged.pop(name), kept)
        _prune_refused(bases[name])
    serving = all(publish.versions(bases[name]) for name in manifests)
    raise Refused(line(record), serving)


def summary(record: Mapping[str, Any]) -> str:
    """One line per judgement for the export's output: the decision and each figure."""
    popularity = record["popularity"]
    parts = [
        f"vs popularity {'beats it' if popularity['passed'] else 'does NOT beat it'} ("
        + _figures(popularity["columns"], "model", "popularity", "ci95")
        + ")"
    ]
    served = record.get("served")
    if served is None:
        parts.append("no served version to compare with")
    elif served.get("passed") is None:
        parts.append(f"vs served version {served['version']}: not compared ({served['why']})")
    else:
        parts.append(
            f"vs served version {served['version']} {'not worse' if served['passed'] else 'WORSE'} ("
            + _figures(served["columns"], "new", "served", "tolerance")
            + f", {served['ratings']} test ratings)"
        )
    return f"{record['decision']}: " + "; ".join(parts)


def _record(record: dict, staged: Mapping[str, Path], manifests: dict[str, dict]) -> dict:
    for name, path in staged.items():
        manifests[name]["gate"] = record
        manifest.write(path, manifests[name])
    return record


def _prune_refused(base: Path, keep: int = KEEP_REFUSED) -> None:
    """Remove all but the newest ``keep`` refused versions under ``base`` (their names sort by time)."""
    refused = sorted(p for p in Path(base).iterdir() if p.name.startswith(REFUSED_PREFIX))
    for path in refused[: max(len(refused) - keep, 0)]:
        shutil.rmtree(path, ignore_errors=True)
