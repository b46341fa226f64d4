"""train -> evaluate -> build indexes -> stage -> validate -> publish -> prune: one export run.

Every model is staged and validated before any is published, so a failure publishes nothing. Staging
folders are removed on any error; a crash leaves only non-numeric leftovers, cleaned on the next run.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from export import (
    distributed,
    gate,
    history_evaluation,
    history_selection,
    manifest,
    publish,
    selection,
    servable,
    warmup,
)
from export import evaluate as evaluation
from export import index as index_lib
from export import report as plots
from export.config import ExportConfig
from export.data.records import Coded
from export.validation.requests import warmup_inputs
from export.validation.specs import ModelSpec, RetrievalSpec, SimilarMoviesSpec
from export.validation.validator import validate
from export.vectors import popularity, retrieval_vectors, similar_vectors

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Result:
    root: Path  # the store: a model's version is at root / name / str(version)
    published: dict  # model name -> version
    metrics: dict
    recall: dict  # model name -> recall@10
    pruned: dict  # model name -> removed versions


def load_data(config: ExportConfig, seed: int = 0):
    from export.data import load

    if config.data == "synthetic":
        from export.data.synthetic import SyntheticSpec

        return load("synthetic", synthetic=SyntheticSpec.of_size(config.synthetic_size, seed))
    from export.data.own_files import Columns

    return load(config.data, columns=Columns(**config.data_columns))


class _Seen(Mapping):
    """User id -> the titles of their training ratings, looked up on the codes (no per-rating dict)."""

    def __init__(self, users: Coded, titles: Coded):
        order = np.argsort(users.codes, kind="stable")
        self._titles = titles[order]
        self._bounds = np.searchsorted(users.codes[order], np.arange(len(users.vocabulary) + 1))
        self._code = {u: i for i, u in enumerate(users.vocabulary.tolist())}
        self._present = np.diff(self._bounds) > 0

    def __getitem__(self, user: str) -> list[str]:
        code = self._code.get(user)
        if code is None or not self._present[code]:
            raise KeyError(user)
        return self._titles[self._bounds[code] : self._bounds[code + 1]].values().tolist()

    def __iter__(self):
        return (u for u, present in zip(self._code, self._present.tolist(), strict=True) if present)

    def __len__(self) -> int:
        return int(self._present.sum())


def _index(config: ExportConfig, candidates: np.ndarray, queries: np.ndarray, name: str, report=print):
    """(layer, effective parameters, tuning record) of one index over ``candidates``; ScaNN's search settings
    measured on ``queries`` if asked."""
    report(f"{name}: building a {config.index.kind} index over {len(candidates)} candidates")
    layer, params = index_lib.build(config.index, candidates, name=name)
    tuning: dict = {}
    if config.index.autotune and params.kind == "scann":
        params, tuning = index_lib.tune(layer, params, candidates, queries, config.recall_threshold)
        chosen = tuning["chosen"]
        report(
            f"{name}: search {params.num_leaves_to_search} of {params.num_leaves} leaves, re-order "
            f"{params.num_reordering_candidates} (recall@10 {chosen['recall_at_10']:.4f} on {tuning['queries']} "
            f"held-out queries, {len(tuning['tried'])} settings tried)"
        )
    return layer, params, tuning


def catalogue_of(movies, titles: np.ndarray) -> tuple[list, list]:
    """(ids, titles): every catalogue id whose title is served, with that title, in catalogue order; what the
    by-id signatures look up (every id of a title several ids share finds that title)."""
    served = set(titles.tolist())
    pairs = [
        (str(movie_id), title)
        for movie_id, title in zip(
            np.asarray(movies.movie_id).tolist(), np.asarray(movies.movie_title).tolist(), strict=True
        )
        if title in served
    ]
    return [i for i, _ in pairs], [t for _, t in pairs]


def title_ids(catalogue: tuple[list, list], titles: np.ndarray) -> np.ndarray:
    """The catalogue id of each of ``titles``: the first in catalogue order of the ids that show that title."""
    first: dict[str, str] = {}
    for movie_id, title in zip(*catalogue, strict=True):
        first.setdefault(title, movie_id)
    return np.array([first[t] for t in titles.tolist()], dtype=object)


def run(config: ExportConfig, *, data=None, synthetic_seed: int = 0, report=print) -> Result:
    root = Path(config.model_base_path)
    me = distributed.worker()
    helper = me is not None and not me.chief  # trains with the chief, never touches the store
    bases = {name: root / name for name in config.models}
    pinned = {}
    if not helper:
        publish.ensure_writable(root)
        pinned = {name: publish.pinned_versions(config.model_config_file, name) for name in config.models}
        for base in bases.values():
            publish.clean_stale(base)

    if data is None:
        report(f"loading {config.data}")
        data = load_data(config, synthetic_seed)
    from export.data import check_against_data

    check_against_data(config, data, disk=not helper)  # what can fail is refused before any training
    from export.data import split

    train_idx, test_idx = split(data.ratings, kind=config.split)
    ratings = data.ratings
    users_all, titles_all = ratings.coded("user_id"), ratings.coded("movie_title")
    report(
        f"data: {data.source.get('kind')} - {len(ratings)} ratings, {len(train_idx)} train / {len(test_idx)} "
        f"test ({config.split} split)"
    )

    start = time.perf_counter()
    fitted = selection.fit(config, data, train_idx, report)
    if helper:
        assert me is not None
        report(f"worker {me.index} of {me.count}: trained; worker 0 evaluates, validates and publishes")
        return Result(root, {}, {}, {}, {})
    trained = fitted.trained
    fit_seconds = time.perf_counter() - start
    pop = popularity(trained.movie_titles, titles_all[train_idx])
    vectors = {"retrieval": retrieval_vectors(trained, pop), "similar_movies": similar_vectors(trained, pop)}
    # exclude_seen's own vectors when validation chose a blend with EASE for it (export/selection.py)
    exclude_vectors = None if fitted.blend is None else retrieval_vectors(trained, pop, fitted.blend)

    report(f"evaluating on {len(test_idx)} test ratings (the model, popularity, EASE, item-kNN)")
    metrics = evaluation.evaluate(
        vectors["retrieval"],
        pop,
        users_all[train_idx],
        titles_all[train_idx],
        users_all[test_idx],
        titles_all[test_idx],
        ease_lambda=config.ease_lambda,
        max_items=config.baseline_max_items,
        exclude_vectors=exclude_vectors,
    )
    metrics["served"] = {"exclude_seen": (fitted.validation or {}).get("blends", {}).get("chosen")}
    report(evaluation.table(metrics))

    # by_history's query model (export/history.py): chosen on validation users held out of its fit
    # (export/history_selection.py), then measured on other held-out (test) users against EASE, item-kNN and
    # popularity fitted without them; known users' by_history of their training titles against exclude_seen on
    # the test ratings (export/history_evaluation.py).
    train_columns = (users_all[train_idx], titles_all[train_idx])
    timestamps = np.asarray(ratings.timestamp)[train_idx] if config.split == "time" else None
    history_vectors, history_record = history_selection.choose(
        *train_columns,
        trained,
        pop,
        timestamps=timestamps,
        lam=config.ease_lambda,
        max_items=config.baseline_max_items,
        split=config.split,
        report=report,
    )
    metrics["new_users"] = history_evaluation.evaluate_new_users(
        *train_columns, trained, history_record, timestamps=timestamps, report=report
    )
    report(history_evaluation.table(metrics["new_users"]))
    known = history_evaluation.known_users(
        history_vectors,
        vectors["retrieval"],
        pop,
        *train_columns,
        users_all[test_idx],
        titles_all[test_idx],
        exclude_vectors,
        measured=metrics,
    )
    metrics["new_users"]["known_users"] = known
    report(
        "known users, by_history of their training titles vs exclude_seen (seen-excluded top-10 / top-100): "
        + " vs ".join(f"{known[n]['top_10']:.4f} / {known[n]['top_100']:.4f}" for n in ("by_history", "exclude_seen"))
    )

    seen = _Seen(users_all[train_idx], titles_all[train_idx])
    catalogue = catalogue_of(data.movies, trained.movie_titles)  # what the by-id signatures take
    ids = title_ids(catalogue, trained.movie_titles)  # what movie_ids answers for each candidate title
    popular = vectors["retrieval"].titles[np.argsort(-pop, kind="stable")[:20]].tolist()
    counts = {
        "users": len(trained.user_ids),
        "movies": len(data.movies),
        "titles": len(trained.movie_titles),
        "ratings": len(ratings),
        "train": len(train_idx),
        "test": len(test_idx),
    }
    rng = np.random.default_rng(0)

    staged: dict[str, Path] = {}
    manifests: dict[str, dict] = {}
    recall: dict[str, float] = {}
    try:
        for name in config.models:
            vec = vectors[name]
            start = time.perf_counter()
            layer, params, tuning = _index(config, vec.candidates, vec.queries[1:], f"{name}_index", report)
            extra = excl_tuning = history = None
            if name == "retrieval":
                if exclude_vectors is not None:
                    excl_layer, excl_params, excl_tuning = _index(
                        config,
                        exclude_vectors.candidates,
                        exclude_vectors.queries[1:],
                        "retrieval_exclude_seen_index",
                        report,
                    )
                    extra = (exclude_vectors, excl_layer, excl_params)
                history_layer, history_params, history_tuning = _index(
                    config,
                    history_vectors.candidates,
                    history_vectors.queries(history_vectors.positions([seen[u] for u in itertools.islice(seen, 1000)])),
                    "retrieval_history_index",
                    report,
                )
                history = (history_vectors, history_layer, history_params)
                retrieval = RetrievalSpec(
                    vec, seen=seen, popular=popular, exclude_vectors=exclude_vectors, history_vectors=history_vectors
                )
                module = retrieval.module(
                    layer,
                    params,
                    exclude=None if extra is None else extra[1:],
                    history=(history_layer, history_params),
                    ids=ids,
                    catalogue=catalogue,
                )
                spec: ModelSpec = retrieval
            else:
                similar = SimilarMoviesSpec(vec)
                module = similar.module(layer, params, ids=ids, catalogue=catalogue)
                spec = similar
            requests = spec.requests(config.validation_users, rng, ids.tolist())
            path = publish.staging_dir(bases[name])
            staged[name] = path
            servable.save(module, path)
            warmup.write(path, warmup.requests(name, module.signatures(), warmup_inputs(requests)))
            index_seconds = time.perf_counter() - start
            report(f"{name}: validating the staged SavedModel in a fresh process, as TF Serving loads it")
            checks = validate(
                spec,
                path,
                module,
                requests,
                k=config.index.k,
                recall_threshold=config.recall_threshold,
                tolerance=config.score_tolerance,
                timeout_s=config.validation_timeout_s,
            )
            recall[name] = checks["recall_at_10"]
            manifests[name] = manifest.build(
                model_name=name,
                version=None,
                source=data.source,
                counts=counts,
                split=config.split,
                train_config=trained.config,  # the refit's: tuned settings, best epoch count
                training={
                    "seconds": round(trained.seconds, 2),
                    "history": trained.history,
                    "total_seconds": round(fit_seconds, 2),
                    "validation": fitted.validation,
                    "history_model": history_record,
                },
                metrics=metrics,
                index={
                    **dataclasses.asdict(params),
                    "requested": config.index.as_dict(),
                    "build_and_save_seconds": round(index_seconds, 2),
                    "recall_k": checks["recall_k"],
                    "recall_by_signature": checks["recall_by_signature"],
                    **({"tuning": tuning} if tuning else {}),
                    **(
                        {
                            "exclude_seen": {
                                **dataclasses.asdict(extra[2]),
                                **({"tuning": excl_tuning} if excl_tuning else {}),
                            }
                        }
                        if extra
                        else {}
                    ),
                    **(
                        {
                            "by_history": {
                                **dataclasses.asdict(history[2]),
                                **({"tuning": history_tuning} if history_tuning else {}),
                            }
                        }
                        if history
                        else {}
                    ),
                },
                recall_at_10=checks["recall_at_10"],
                k=config.index.k,
            )
            manifest.write(path, manifests[name])
            plots.write(path, name, metrics, fitted.validation, tuning)
            report(f"{name}: staged and validated (recall@{checks['recall_k']} vs exact: {recall[name]:.4f})")

        # export/gate.py: publish only what beats popularity and is not worse than the served version (else raise)
        test = (users_all[test_idx], titles_all[test_idx])
        gate.check(config, metrics, staged, manifests, bases, test, seen, trained.movie_titles, report)
        published, pruned = {}, {}
        for name in config.models:
            before = publish.versions(bases[name])

            def stamp(version, name=name):
                manifests[name]["version"] = version
                manifest.write(staged[name], manifests[name])

            version = publish.publish(staged[name], bases[name], publish.next_version(bases[name]), stamp)
            del staged[name]
            published[name] = version
            protected = set(pinned[name]) | ({before[-1]} if before else set())
            pruned[name] = publish.prune(bases[name], config.keep, protected)
            report(
                f"{name}: published version {version} at {bases[name] / str(version)}"
                + (f" (pruned {pruned[name]})" if pruned[name] else "")
            )
            report(f"{name}: report {bases[name] / str(version) / 'assets.extra' / plots.REPORT_FILE}")
    finally:
        for path in staged.values():
            shutil.rmtree(path, ignore_errors=True)
    for line in evaluation.verdict(metrics):  # the run's last lines: how the published model compares
        report(line)
    return Result(root, published, metrics, recall, pruned)
