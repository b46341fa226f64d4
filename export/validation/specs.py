"""One spec per served model (TFX InfraValidator's per-model request builder): it builds the model's servable
module (export/servable.py), the requests that validate it (export/validation/requests.py) and the recall of
each of its indexes against exact search (export/validation/checks.py).

    spec = RetrievalSpec(vectors, seen=seen, popular=popular, exclude_vectors=..., history_vectors=...)
    module = spec.module(layer, params, exclude=(layer, params), history=(layer, params), ids=ids, catalogue=...)
    requests = spec.requests(sample, rng, ids)
    recall = spec.recall(request, served_titles, k)    # None: the request measures no recall
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from export import servable
from export.validation import checks
from export.validation.requests import (
    RECALL_HISTORY,
    UNKNOWN_TITLE,
    UNKNOWN_USER,
    ById,
    Purpose,
    Request,
    history,
    pad,
    recall_keys,
    sample,
    with_ids,
)
from export.vectors import IndexVectors


@dataclasses.dataclass(frozen=True)
class RetrievalSpec:
    """``retrieval``: user -> movies (serving_default), with seen movies excluded (exclude_seen, on an index of
    its own when ``exclude_vectors`` are given), and for a history of titles (by_history, on the index of
    ``history_vectors``, export.history.HistoryVectors); each with its by-id twin."""

    vectors: IndexVectors  # serving_default's
    seen: Mapping[str, list[str]] = dataclasses.field(default_factory=dict)  # user -> training titles
    popular: list[str] = dataclasses.field(default_factory=list)  # the most popular titles, most first
    exclude_vectors: IndexVectors | None = None
    history_vectors: Any = None  # export.history.HistoryVectors

    name: ClassVar[str] = "retrieval"
    BY_ID: ClassVar[dict[str, ById]] = {
        "exclude_seen": ById("exclude_seen_by_id", "exclude_titles", "exclude_ids"),
        "by_history": ById("by_history_ids", "history_titles", "history_ids"),
    }

    def module(self, layer, params, *, exclude=None, history=None, ids=None, catalogue=None) -> servable.Retrieval:
        """The servable; ``exclude`` / ``history``: (layer, params) of exclude_seen's / by_history's own index."""
        return servable.Retrieval(
            self.vectors,
            layer,
            params,
            history=None if history is None else (self.history_vectors, *history),
            exclude=None if exclude is None else (self.exclude_vectors, *exclude),
            ids=ids,
            catalogue=catalogue,
        )

    def requests(self, size: int, rng: np.random.Generator, ids=None) -> list[Request]:
        """``size`` sampled users (and an unknown one) for each signature, every user (or a sample of
        RECALL_QUERIES) for each index's recall, and the by-id twins (``ids``: the catalogue id of each title;
        default: the titles)."""
        seen = self.seen
        users = self.vectors.query_keys.tolist()
        picked = sample(users, size, rng)
        recall_users = recall_keys(users, rng)
        heavy = max(users, key=lambda u: len(seen.get(u, [])))
        excl_users = [*picked[:8], heavy]
        exclusions = [sorted(set(seen.get(u, []))) for u in excl_users]
        # An unknown user gets the popular movies; excluding the top ones must still yield K others.
        excl_users.append(UNKNOWN_USER)
        exclusions.append(self.popular)
        exclusions[0] = [*exclusions[0], UNKNOWN_TITLE]  # an exclusion that matches nothing is counted
        # Histories: known users' (the heavy one's too), an empty one, an all-unknown one, a mixed one.
        histories = [history(seen, u) for u in excl_users[:-1]]
        histories += [[], [UNKNOWN_TITLE], [*histories[0][:3], UNKNOWN_TITLE]]
        recall_histories = pad([history(seen, u, RECALL_HISTORY) for u in recall_users])
        requests = [
            Request("serving_default", {"user_id": [*picked, UNKNOWN_USER]}, query="user_id"),
            _exclude_seen({"user_id": excl_users, "exclude_titles": pad(exclusions)}),
            _by_history({"history_titles": pad(histories)}),
            Request("serving_default", {"user_id": recall_users}, Purpose.RECALL, query="user_id"),
            _by_history({"history_titles": recall_histories}, Purpose.RECALL),
        ]
        if self.exclude_vectors is not None:  # exclude_seen's own index: its recall too, with nothing excluded
            nothing: list[list[str]] = [[""] for _ in recall_users]
            requests.append(_exclude_seen({"user_id": recall_users, "exclude_titles": nothing}, Purpose.RECALL))
        titles = self.vectors.titles.tolist()
        return with_ids(requests, self.BY_ID, titles, titles if ids is None else list(ids))

    def recall(self, request: Request, served_titles: np.ndarray, k: int) -> float | None:
        """Recall@k of a recall request's answer against exact search over its index's vectors; None for a
        compare request, or by_history's without ``history_vectors``."""
        if request.purpose is not Purpose.RECALL:
            return None
        if request.signature_name == "by_history":
            if self.history_vectors is None:
                return None
            return checks.history_recall(self.history_vectors, request.inputs["history_titles"], served_titles, k)
        against = self.exclude_vectors if request.signature_name == "exclude_seen" else self.vectors
        return checks.recall_at(against, request.inputs["user_id"], served_titles, k, exclude_self=False)


@dataclasses.dataclass(frozen=True)
class SimilarMoviesSpec:
    """``similar_movies``: movie -> movies (serving_default, by_id), the query never in its own list."""

    vectors: IndexVectors  # queries keyed by title

    name: ClassVar[str] = "similar_movies"
    BY_ID: ClassVar[dict[str, ById]] = {"serving_default": ById("by_id", "movie_title", "movie_id")}

    def module(self, layer, params, *, ids=None, catalogue=None) -> servable.SimilarMovies:
        return servable.SimilarMovies(self.vectors, layer, params, ids=ids, catalogue=catalogue)

    def requests(self, size: int, rng: np.random.Generator, ids=None) -> list[Request]:
        """``size`` sampled titles and an unknown one, every title (or a sample of RECALL_QUERIES) for recall,
        and the by-id twin (``ids``: the catalogue id of each title; default: the titles)."""
        titles = self.vectors.query_keys.tolist()
        picked = sample(titles, size, rng)
        recall_titles = recall_keys(titles, rng)
        requests = [
            Request(
                "serving_default", {"movie_title": [*picked, UNKNOWN_TITLE]}, query="movie_title", returns_query=False
            ),
            Request(
                "serving_default",
                {"movie_title": recall_titles},
                Purpose.RECALL,
                query="movie_title",
                returns_query=False,
            ),
        ]
        candidates = self.vectors.titles.tolist()
        return with_ids(requests, self.BY_ID, candidates, candidates if ids is None else list(ids))

    def recall(self, request: Request, served_titles: np.ndarray, k: int) -> float | None:
        if request.purpose is not Purpose.RECALL:
            return None
        return checks.recall_at(self.vectors, request.inputs["movie_title"], served_titles, k, exclude_self=True)


def _exclude_seen(inputs: dict[str, list], purpose: Purpose = Purpose.COMPARE) -> Request:
    """A request to exclude_seen: rows keyed by user, none holding a title of its ``exclude_titles``."""
    return Request("exclude_seen", inputs, purpose, query="user_id", excluded="exclude_titles")


def _by_history(inputs: dict[str, list], purpose: Purpose = Purpose.COMPARE) -> Request:
    """A request to by_history: each row a history, none holding a title of it."""
    return Request("by_history", inputs, purpose, query=None, excluded="history_titles")


ModelSpec = RetrievalSpec | SimilarMoviesSpec
