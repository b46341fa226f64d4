"""The history query model behind ``retrieval/by_history``: a history's query is the mean of its titles' rows.

``by_history`` takes a row of titles instead of a user id. Its query is the MEAN over the row's known titles
of ``item_queries[title]`` (unknown titles and "" ignored; each occurrence counts), ``empty_query`` for a row
with no known title, scored by one dot product against ``candidates``; the row's own titles are removed and
the best K kept. ``HistoryVectors.queries`` is that formula in numpy: what the SavedModel must match.

The last column carries popularity (``export.vectors.popularity``): ``candidates[:, -1]`` is it,
``item_queries[:, -1]`` is 0 and ``empty_query`` is that column's one-hot, so an empty history gets the most
popular movies, as an unknown user does (export/vectors.py). The recipes (``Recipe``):

- ``ease``: EASE's fold-in (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): EASE
  has no user parameters, a user unseen at fitting time is scored x B. At full rank
  (``export.history_selection.FULL_RANK_TITLES`` titles at most) ``item_queries`` = B and ``candidates`` = I,
  so the mean x B / |x| ranks exactly as x B; at rank r (``export.ease.fold_in_factors``) ``item_queries`` =
  B V, ``candidates`` = V, V the leading right singular vectors of the fitted users' scores X B, so
  x B V V^T ~ x B;
- ``towers``: the towers' movie vectors, ``item_queries`` = [movie_vector, 1, 0] and ``candidates`` = the
  retrieval candidates [movie_vector, movie_bias, popularity] of ``export.vectors.retrieval_vectors``: the
  mean of the history's movie embeddings is the user embedding (a bag-of-items user, as in YouTube's
  candidate generator, Covington et al., RecSys 2016). Always available; the only one when EASE does not fit
  (``ease.fits``).

Which recipe serves is chosen on held-out new users (export/history_selection.py) and measured on others
(export/history_evaluation.py).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from export import ease

CHUNK_CELLS = 8_000_000  # scores held at once (histories or held-out ratings x titles)


@dataclasses.dataclass(frozen=True, eq=False)
class HistoryVectors:
    """What ``by_history`` serves (see the module doc): a history's query is the mean of its titles' rows."""

    titles: np.ndarray  # [N] str, exactly the retrieval candidates' titles in their order (trained.movie_titles)
    item_queries: np.ndarray  # [N, d] float32: row i is title i's contribution; a history's query = mean of its rows
    empty_query: np.ndarray  # [d] float32: the query of a history with no known title (-> most popular movies)
    candidates: np.ndarray  # [N, d] float32

    def queries(self, histories: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """[B, d] float32: per history (title positions; a position outside [0, N), e.g. -1 for an unknown
        title or "", is ignored) the mean of its titles' ``item_queries`` rows, ``empty_query`` if none."""
        n, d = self.item_queries.shape
        out = np.empty((len(histories), d), dtype=np.float32)
        step = max(1, CHUNK_CELLS // max(n, 1))
        for start in range(0, len(histories), step):
            part = histories[start : start + step]
            lengths = np.fromiter((len(h) for h in part), np.int64, len(part))
            flat = np.fromiter(itertools.chain.from_iterable(part), np.int64, int(lengths.sum()))
            rows = np.repeat(np.arange(len(part)), lengths)
            known = (flat >= 0) & (flat < n)
            counts = np.zeros((len(part), n), dtype=np.float32)  # how often each title occurs in each row
            np.add.at(counts, (rows[known], flat[known]), 1.0)
            sizes = counts.sum(axis=1)
            means = (counts / np.maximum(sizes, 1.0)[:, None]) @ self.item_queries
            means[sizes == 0] = self.empty_query
            out[start : start + len(part)] = means
        return out

    def top_k(self, histories: Sequence[Sequence[int] | np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """What ``by_history`` answers, exactly: (scores, title positions) [B, k] of the k best candidates per
        history, its own titles removed (export.vectors.exact_top_k: best first, ties by lower position)."""
        from export.vectors import exact_top_k

        n = len(self.titles)
        exclude = [{int(t) for t in h if 0 <= t < n} for h in histories]
        return exact_top_k(self.queries(histories), self.candidates, k, exclude)

    def positions(self, rows: Sequence[Sequence[str]]) -> list[list[int]]:
        """Rows of titles as the title positions ``queries`` takes (-1: unknown or "")."""
        index = {t: i for i, t in enumerate(self.titles.tolist())}
        return [[index.get(t, -1) for t in row] for row in rows]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One candidate history model: ``towers``, or ``ease`` with its lambda and rank (None: full rank)."""

    kind: str
    lam: float | None = None
    rank: int | None = None

    @property
    def name(self) -> str:
        if self.kind == "towers":
            return "towers' item vectors"
        return f"EASE lambda={self.lam:g} " + ("full rank" if self.rank is None else f"rank {self.rank}")

    def as_dict(self) -> dict:
        if self.kind == "towers":
            return {"recipe": "towers"}
        return {"recipe": "ease", "lambda": self.lam, "rank": "full" if self.rank is None else self.rank}

    @classmethod
    def of(cls, record: dict) -> Recipe:
        if record["recipe"] == "towers":
            return cls("towers")
        rank = record["rank"]
        return cls("ease", float(record["lambda"]), None if rank == "full" else int(rank))


def with_popularity(
    titles: np.ndarray, item_queries: np.ndarray, candidates: np.ndarray, pop: np.ndarray
) -> HistoryVectors:
    """HistoryVectors from a recipe's rows, plus the popularity column (0 in item queries, 1 in the empty one)."""
    n, d = item_queries.shape
    queries = np.zeros((n, d + 1), dtype=np.float32)
    queries[:, :d] = item_queries
    empty = np.zeros(d + 1, dtype=np.float32)
    empty[d] = 1.0
    cands = np.concatenate([candidates, pop.astype(np.float32)[:, None]], axis=1).astype(np.float32)
    return HistoryVectors(titles, queries, empty, cands)


def towers_vectors(trained: Any, pop: np.ndarray) -> HistoryVectors:
    """The towers' recipe: [movie_vector, 1, 0] per title against [movie_vector, movie_bias, popularity]."""
    movies = trained.movie_vectors[1:].astype(np.float32)
    ones = np.ones((len(movies), 1), dtype=np.float32)
    candidates = np.concatenate([movies, trained.movie_bias[1:, None].astype(np.float32)], axis=1)
    return with_popularity(trained.movie_titles, np.concatenate([movies, ones], axis=1), candidates, pop)


def ease_vectors(
    x: ease.Interactions,
    b: np.ndarray,
    lam: float,
    titles: np.ndarray,
    pop: np.ndarray,
    ranks: Sequence[int | None],
    seed: int = 0,
) -> Iterator[tuple[Recipe, HistoryVectors]]:
    """EASE's fold-in vectors from its weights ``b`` (lambda ``lam``, fitted on ``x``) for each of ``ranks``
    (None: full rank), from one randomised SVD at the largest rank (a smaller rank is its leading columns)."""
    low = sorted(r for r in ranks if r is not None)
    if low:
        queries, factors = ease.fold_in_factors(x, b, low[-1], seed)
        for r in low:
            yield Recipe("ease", lam, r), with_popularity(titles, queries[:, :r], factors[:, :r], pop)
    if None in ranks:
        yield Recipe("ease", lam, None), with_popularity(titles, b, np.eye(len(titles), dtype=np.float32), pop)


def recipe_vectors(
    recipe: Recipe, x: ease.Interactions, b: np.ndarray, titles: np.ndarray, pop: np.ndarray, seed: int
) -> HistoryVectors:
    """The vectors of one EASE recipe from its weights ``b`` fitted on ``x`` (an SVD at its own rank)."""
    return dict(ease_vectors(x, b, float(recipe.lam or 0.0), titles, pop, [recipe.rank], seed))[recipe]
