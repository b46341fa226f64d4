"""The history query model behind ``retrieval/by_history``, chosen and measured on users it has never seen.

``by_history`` takes a row of titles instead of a user id. Its query is the MEAN over the row's known titles
of ``item_queries[title]`` (unknown titles and "" ignored; each occurrence counts), ``empty_query`` for a row
with no known title, scored by one dot product against ``candidates``; the row's own titles are removed and
the best K kept. ``HistoryVectors.queries`` is that formula in numpy: what the SavedModel must match.

The last column carries popularity (``export.vectors.popularity``): ``candidates[:, -1]`` is it,
``item_queries[:, -1]`` is 0 and ``empty_query`` is that column's one-hot, so an empty history gets the most
popular movies, as an unknown user does (export/vectors.py). The recipes (``Recipe``):

- ``ease``: EASE's fold-in (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): EASE
  has no user parameters, a user unseen at fitting time is scored x B. At full rank (up to
  ``FULL_RANK_TITLES``) ``item_queries`` = B and ``candidates`` = I, so the mean x B / |x| ranks exactly as
  x B; at rank r (``export.ease.fold_in_factors``) ``item_queries`` = B V, ``candidates`` = V, V the leading
  right singular vectors of the fitted users' scores X B, so x B V V^T ~ x B;
- ``towers``: the towers' movie vectors, ``item_queries`` = [movie_vector, 1, 0] and ``candidates`` = the
  retrieval candidates [movie_vector, movie_bias, popularity] of ``export.vectors.retrieval_vectors``: the
  mean of the history's movie embeddings is the user embedding (a bag-of-items user, as in YouTube's
  candidate generator, Covington et al., RecSys 2016). Always available; the only one when EASE does not fit
  (``ease.fits``).

The new-user protocol (``new_users``): a share of the training part's users (``HELD_OUT_SHARE``, at most
``MAX_HELD_OUT``, of those with >= 2 titles) is held out entirely; EASE, item-kNN and popularity are fitted on
the other users only; each held-out user gives ``GIVEN_SHARE`` of their titles (a random part for the random
split, the earliest for the time split) and the rest is scored, the given titles excluded (as ``by_history``
excludes them). One seeded permutation of the eligible users gives the test users (its first block) and the
validation users (the next): never the same user. ``choose`` picks the recipe on validation users by the mean
of the top-10 and top-100 hit rates (``export.selection``'s criterion for ``exclude_seen``): EASE's lambda at full
rank first (one inverse each, up to ``FULL_RANK_TITLES``), then the rank at the best lambda (one randomised SVD
at the largest rank, whose leading columns give the smaller ones); a recipe with fewer dimensions within the 95 %
half-width of the paired difference from the best wins over it; then it refits the winner on every training
user;
``evaluate_new_users`` measures it on the test users against EASE at full rank, item-kNN and popularity, each
fitted without them (``table`` prints it). The towers were trained on every training user, held-out ones
included: a small leak in their favour, which the records say.

Figures: hit rate at k per held-out rating (rank among the titles not given < k; ties by catalogue order,
as ``export.evaluate``); per held-out user recall@20 (hits in the top 20 / min(20, held-out titles)) and
NDCG@100 with binary relevance (Liang et al., "Variational Autoencoders for Collaborative Filtering",
WWW 2018). Each has a 95 % half-width 1.96 sd / sqrt(n) over its ratings or users (for the hit rates, the
normal approximation of a binomial, as ``export.evaluate``; it ignores that one user's ratings are
correlated, so it is somewhat narrow). The model is compared with a baseline by the paired differences on the
same ratings or users: it ``beats`` it when every judged column's difference is above its 95 % half-width,
is ``worse`` when one is below minus it, and ``ties`` otherwise (export.evaluate.VERDICTS words them).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from export import ease
from export import evaluate as evaluation
from export.data.records import Coded, factorize, positions

KS = evaluation.KS
RECALL_AT = 20
NDCG_AT = 100
HELD_OUT_SHARE = 0.2  # of the users with >= 2 titles, held out for validation, as many again for test
MAX_HELD_OUT = 2_000  # users per part at most (scoring costs users x titles^2 at full rank)
GIVEN_SHARE = 0.8  # of a held-out user's titles fed as history; the rest is scored
# Up to this catalogue EASE is offered at full rank (B itself: titles + 1 dimensions) and its lambda is searched (one
# titles x titles inverse each); above, the configured lambda only, at low rank.
FULL_RANK_TITLES = 2_048
LAMBDAS = (100.0, 300.0, 500.0, 1000.0)
RANKS = (64, 128, 256)
CRITERION = "mean_top_10_top_100"
JUDGED = ("top_10", "top_100", f"recall_{RECALL_AT}", f"ndcg_{NDCG_AT}")
ROWS = ("model", "ease", "item_knn", "popularity")
PARTS = ("test", "validation")
LEAK = (
    "the towers were trained on every training user, the held-out ones included (their held-out titles too): "
    "a small leak in the towers' favour"
)
_CHUNK_CELLS = 8_000_000  # scores held at once (held-out ratings x titles)

Scorer = Callable[[list[np.ndarray]], np.ndarray]  # given title lists -> float32 [len, titles] scores


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
        step = max(1, _CHUNK_CELLS // max(n, 1))
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


@dataclasses.dataclass(frozen=True, eq=False)
class Pairs:
    """The training part's distinct (user, title) pairs, sorted by user then time (each pair's first rating)."""

    users: np.ndarray  # int64 [P]: users numbered 0..n_users-1
    titles: np.ndarray  # int64 [P]: positions in the catalogue
    n_users: int
    n_titles: int

    @classmethod
    def of(cls, users: Any, titles: Any, catalogue: np.ndarray, timestamps: Any = None) -> Pairs:
        """From the training part's columns (str arrays or Coded columns, export/data/records.py); titles not in
        ``catalogue`` are dropped; without ``timestamps`` the rows' order is their time."""
        coded = users if isinstance(users, Coded) else factorize(np.asarray(users, dtype=object))
        _, user = np.unique(coded.codes, return_inverse=True)
        title = positions(titles, {t: i for i, t in enumerate(catalogue.tolist())}, -1)
        times = np.arange(len(title)) if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        order = order[title[order] >= 0]
        _, first = np.unique(user[order] * len(catalogue) + title[order], return_index=True)  # the earliest of each
        picked = order[np.sort(first)]  # still by time
        picked = picked[np.argsort(user[picked], kind="stable")]  # by user, then time
        n_users = int(user.max()) + 1 if len(user) else 0
        return cls(user[picked].astype(np.int64), title[picked], n_users, len(catalogue))

    def bounds(self) -> np.ndarray:
        """[n_users + 1]: user u's pairs are [bounds[u], bounds[u + 1])."""
        return np.searchsorted(self.users, np.arange(self.n_users + 1))

    def matrix(self, keep: np.ndarray | None = None) -> ease.Interactions:
        """The binary users x titles X of the pairs ``keep`` (all by default); other users' rows are empty."""
        keep = np.ones(len(self.users), dtype=bool) if keep is None else keep
        return ease.Interactions.of(self.users[keep], self.titles[keep], (self.n_users, self.n_titles))

    def popularity(self, keep: np.ndarray | None = None) -> np.ndarray:
        """Each title's count among the pairs ``keep``, over the largest (export.vectors.popularity's scale)."""
        titles = self.titles if keep is None else self.titles[keep]
        counts = np.bincount(titles, minlength=self.n_titles).astype(np.float64)
        top = counts.max() if len(counts) else 0.0
        return (counts / top if top > 0 else counts).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class NewUsers:
    """One part of the new-user protocol: who is held out, what each one gives and what is scored."""

    part: str  # "validation" or "test"
    users: np.ndarray  # int64 [H]: the held-out users' numbers (Pairs.users)
    fit: np.ndarray  # bool [P]: the pairs of every other user, what the baselines are fitted on
    given: list[np.ndarray]  # per held-out user: the title positions fed as history
    targets: list[np.ndarray]  # per held-out user: the title positions scored (never given)
    protocol: dict  # for the records


def new_users(
    pairs: Pairs,
    part: str,
    split: str = "random",
    seed: int = 0,
    share: float = HELD_OUT_SHARE,
    cap: int = MAX_HELD_OUT,
    given_share: float = GIVEN_SHARE,
) -> NewUsers:
    """The held-out users of ``part`` (see the module doc); the "test" and "validation" parts of one seed are
    disjoint. ``split`` "time" gives each user's earliest titles, "random" a random part of them."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; use one of {', '.join(PARTS)}")
    if split not in ("random", "time"):
        raise ValueError(f"unknown split {split!r}; use random or time")
    counts = np.bincount(pairs.users, minlength=pairs.n_users)
    eligible = np.flatnonzero(counts >= 2)
    per_part = min(cap, int(len(eligible) * share), len(eligible) // 2)
    if per_part < 1:
        raise ValueError(f"{len(eligible)} users with >= 2 titles: too few to hold out new users")
    order = np.random.default_rng(seed).permutation(eligible)
    held = np.sort(order[:per_part] if part == "test" else order[per_part : 2 * per_part])
    rng = np.random.default_rng([seed, PARTS.index(part)])
    bounds = pairs.bounds()
    given, targets = [], []
    for user in held.tolist():
        titles = pairs.titles[bounds[user] : bounds[user + 1]]  # by time
        n = len(titles)
        g = min(n - 1, max(1, int(given_share * n + 0.5)))
        if split == "random":
            titles = titles[rng.permutation(n)]
        given.append(np.sort(titles[:g]))
        targets.append(np.sort(titles[g:]))
    protocol = {
        "part": part,
        "users": len(held),
        "of_users": pairs.n_users,
        "ratings": int(sum(len(t) for t in targets)),
        "given": f"{'a random' if split == 'random' else 'the earliest'} {given_share:.0%} of each user's titles",
        "split": split,
        "seed": seed,
        "share": share,
        "cap": cap,
        "fit": "EASE, item-kNN and popularity fitted on the other training users only",
    }
    return NewUsers(part, held, ~np.isin(pairs.users, held), given, targets, protocol)


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


def _ease_recipe(
    recipe: Recipe, x: ease.Interactions, b: np.ndarray, titles: np.ndarray, pop: np.ndarray, seed: int
) -> HistoryVectors:
    """The vectors of one EASE recipe from its weights ``b`` fitted on ``x`` (an SVD at its own rank)."""
    return dict(ease_vectors(x, b, float(recipe.lam or 0.0), titles, pop, [recipe.rank], seed))[recipe]


def _cost(trial: dict) -> int:
    return int(trial["dimensions"])


def _winner(trials: list[dict], per_rating: list[np.ndarray]) -> tuple[int, str]:
    """(index, why) of the chosen trial: the best CRITERION, unless a trial with fewer dimensions is not worse
    beyond the 95 % half-width of the paired difference (then the one with the fewest dimensions of those)."""
    order = sorted(range(len(trials)), key=lambda i: _cost(trials[i]))  # the cheapest first: it wins a tie
    best = max(order, key=lambda i: trials[i][CRITERION])
    why = f"the best {CRITERION} on validation new users, {trials[best][CRITERION]:.4f}"
    for i in order:
        if _cost(trials[i]) >= _cost(trials[best]):
            break
        diff = per_rating[best] - per_rating[i]
        if float(np.mean(diff)) <= _ci95(diff):
            why = (
                f"{trials[i][CRITERION]:.4f} on validation new users, within the 95% CI of the best "
                f"({Recipe.of(trials[best]).name}: {trials[best][CRITERION]:.4f}, paired difference "
                f"{float(np.mean(diff)):+.4f} ± {_ci95(diff):.4f}) with fewer dimensions "
                f"({_cost(trials[i])} against {_cost(trials[best])})"
            )
            return i, why
    others = [t for i, t in enumerate(trials) if i != best]
    if others:
        runner_up = max(others, key=lambda t: t[CRITERION])
        why += f" (next: {Recipe.of(runner_up).name} {runner_up[CRITERION]:.4f})"
    return best, why


def _fits(pairs: Pairs, max_items: int) -> str | None:
    return ease.fits(pairs.n_users, pairs.n_titles, max_items)


def _offered(n_titles: int, lam: float, lambdas: Sequence[float], ranks: Sequence[int]):
    """(lambdas, low ranks) searched for this catalogue: every lambda (at full rank) up to FULL_RANK_TITLES, else
    the configured one; the ranks below the catalogue's size."""
    searched = tuple(lambdas) if n_titles <= FULL_RANK_TITLES else (lam,)
    return searched, tuple(r for r in sorted(ranks) if r < n_titles)


def _ranks(score: Scorer, new: NewUsers, n_titles: int) -> np.ndarray:
    """Each held-out rating's rank among the titles its user did not give (ties by catalogue order), in the
    order of ``new.targets`` concatenated."""
    lengths = np.array([len(t) for t in new.targets], dtype=np.int64)
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    per_chunk = max(1, _CHUNK_CELLS // max(n_titles, 1))
    ends = np.cumsum(lengths)
    start = 0
    while start < len(lengths):
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] - lengths[start] + per_chunk, side="right")))
        given = new.given[start:stop]
        scores = np.array(score(given), dtype=np.float32)
        rows = np.repeat(np.arange(len(given)), [len(g) for g in given])
        scores[rows, np.concatenate(given)] = -np.inf
        counts = lengths[start:stop]
        targets = np.concatenate(new.targets[start:stop])
        begin = int(ends[start] - lengths[start])
        out[begin : begin + len(targets)] = evaluation._ranks(scores[np.repeat(np.arange(len(given)), counts)], targets)
        start = stop
    return out


def _observations(ranks: np.ndarray, new: NewUsers) -> dict[str, np.ndarray]:
    """Per column, what its mean is over: hits per held-out rating, recall@20 and NDCG@100 per held-out user."""
    lengths = np.array([len(t) for t in new.targets], dtype=np.int64)
    user = np.repeat(np.arange(len(lengths)), lengths)
    out = {f"top_{k}": (ranks < k).astype(np.float64) for k in KS}
    hits = np.bincount(user, weights=(ranks < RECALL_AT).astype(np.float64), minlength=len(lengths))
    out[f"recall_{RECALL_AT}"] = hits / np.minimum(RECALL_AT, lengths)
    gains = np.where(ranks < NDCG_AT, 1.0 / np.log2(ranks + 2.0), 0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(NDCG_AT) + 2.0))[np.minimum(NDCG_AT, lengths) - 1]
    out[f"ndcg_{NDCG_AT}"] = np.bincount(user, weights=gains, minlength=len(lengths)) / ideal
    return out


def _ci95(values: np.ndarray) -> float:
    return round(1.96 * float(np.std(values)) / float(np.sqrt(max(len(values), 1))), 6)


def _figures(observations: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(means, 95 % half-widths) per column."""
    means = {c: float(np.mean(v)) if len(v) else 0.0 for c, v in observations.items()}
    return means, {c: _ci95(v) for c, v in observations.items()}


def _criterion(means: dict) -> float:
    return (means["top_10"] + means["top_100"]) / 2


def _compare(model: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict:
    """The paired differences model - baseline in each judged column, their 95 % half-widths and the verdict."""
    columns = {}
    for c in JUDGED:
        diff = model[c] - theirs[c]
        columns[c] = {"difference": round(float(np.mean(diff)), 6), "ci95": _ci95(diff)}
    if all(v["difference"] > v["ci95"] for v in columns.values()):
        verdict = "beats"
    elif any(v["difference"] < -v["ci95"] for v in columns.values()):
        verdict = "worse"
    else:
        verdict = "ties"
    return {"verdict": verdict, "columns": columns}


def _dense(given: list[np.ndarray], n_titles: int) -> np.ndarray:
    x = np.zeros((len(given), n_titles), dtype=np.float32)
    x[np.repeat(np.arange(len(given)), [len(g) for g in given]), np.concatenate(given)] = 1.0
    return x


def _history_scorer(vectors: HistoryVectors) -> Scorer:
    return lambda given: vectors.queries(given) @ vectors.candidates.T


def _weights_scorer(weights: np.ndarray, pop: np.ndarray) -> Scorer:
    """x W, plus export.evaluate's popularity tie-break (as its EASE and item-kNN rows)."""
    tie_break = evaluation._TIE_BREAK * pop.astype(np.float32)[None, :]
    return lambda given: _dense(given, len(pop)) @ weights + tie_break


def _popularity_scorer(pop: np.ndarray) -> Scorer:
    return lambda given: np.broadcast_to(pop.astype(np.float32)[None, :], (len(given), len(pop)))


def choose(
    users: Any,
    titles: Any,
    trained: Any,
    pop: np.ndarray,
    *,
    timestamps: Any = None,
    lam: float = ease.LAMBDA,
    max_items: int = evaluation.MAX_ITEMS,
    split: str = "random",
    seed: int = 0,
    lambdas: Sequence[float] = LAMBDAS,
    ranks: Sequence[int] = RANKS,
    report: Callable[[str], Any] = print,
) -> tuple[HistoryVectors, dict]:
    """The history model for ``by_history``, chosen on validation users with the new-user protocol.

    ``users``, ``titles`` (and ``timestamps``, needed for the time split): the training part's columns (str or
    Coded); ``trained``: the towers (``movie_titles`` [N], ``movie_vectors`` [N + 1, d] and ``movie_bias``
    [N + 1], row 0 unknown); ``pop``: the served popularity over ``trained.movie_titles`` (export/vectors.py).
    Offers the towers' recipe and, where ``ease.fits`` (``max_items``), EASE's fold-in: up to FULL_RANK_TITLES
    titles at full rank for each of ``lambdas``, then at each of ``ranks`` below the catalogue's size with the
    best of them (one SVD); above, at those ranks with ``lam``. Each is fitted without the validation users and
    scored on them; the best mean of the top-10 and top-100 hit rates wins, unless one with fewer dimensions is
    within the 95 % half-width of the paired difference (the cheapest such one then: a smaller index, faster
    queries), and is refitted on every training user. Returns (its vectors, the record for the manifest: ``protocol``,
    ``candidates`` with every one's figures, ``chosen``, ``why``, the towers' ``leak``, ``ease`` and
    ``seconds``); ``evaluate_new_users`` takes that record."""
    start = time.perf_counter()
    if split == "time" and timestamps is None:
        raise ValueError("the time split's new users give their earliest titles: timestamps are needed")
    catalogue = trained.movie_titles
    pairs = Pairs.of(users, titles, catalogue, timestamps)
    val = new_users(pairs, "validation", split, seed)
    fit_pop = pairs.popularity(val.fit)
    searched: tuple[float, ...] = ()
    best_p: np.ndarray | None = None
    best_lam = lam
    low: tuple[int, ...] = ()
    full = pairs.n_titles <= FULL_RANK_TITLES
    skipped = _fits(pairs, max_items)
    report(
        f"history: validation on {len(val.users)} new users ({val.protocol['ratings']} held-out ratings; "
        f"{val.protocol['given']} given), fitted on the other {pairs.n_users - len(val.users)}"
    )

    per_rating: list[np.ndarray] = []  # each trial's CRITERION per held-out rating, for paired comparisons

    def measured(recipe: Recipe, vectors: HistoryVectors, seconds: float) -> dict:
        observed = _observations(_ranks(_history_scorer(vectors), val, pairs.n_titles), val)
        per_rating.append((observed["top_10"] + observed["top_100"]) / 2)
        means, ci = _figures(observed)
        return {
            **recipe.as_dict(),
            "dimensions": int(vectors.candidates.shape[1]),
            **{c: round(v, 6) for c, v in means.items()},
            CRITERION: round(_criterion(means), 6),
            "ci95": ci,
            "seconds": round(seconds, 2),
        }

    trials = [measured(Recipe("towers"), towers_vectors(trained, fit_pop), 0.0)]
    if skipped is None:
        searched, low = _offered(pairs.n_titles, lam, lambdas, ranks)
        x = pairs.matrix(val.fit)
        gram = x.gram()
        best_p, best_lam, best = None, lam, -1.0  # P = (X^T X + lambda I)^-1 of the best lambda, for the refit
        if full:  # 1. lambda, at full rank: EASE's exact fold-in
            for value in searched:
                began = time.perf_counter()
                p = ease.inverse(x, value, gram.copy())
                (recipe, vectors), *_ = ease_vectors(x, ease.weights_of(p), value, catalogue, fit_pop, [None])
                trials.append(measured(recipe, vectors, time.perf_counter() - began))
                if trials[-1][CRITERION] > best:
                    best_p, best_lam, best = p, value, trials[-1][CRITERION]
                del p, vectors
        if best_p is None:
            best_p = ease.inverse(x, lam, gram)
        del gram
        began = time.perf_counter()  # 2. rank, at the best lambda: one SVD at the largest rank
        for recipe, vectors in ease_vectors(x, ease.weights_of(best_p), best_lam, catalogue, fit_pop, low, seed):
            trials.append(measured(recipe, vectors, time.perf_counter() - began))
            began = time.perf_counter()
    else:
        report(f"history: EASE's fold-in skipped: {skipped}")
    best_i, why = _winner(trials, per_rating)
    chosen = Recipe.of(trials[best_i])
    report(
        "history: validation top-10 / top-100 of new users: "
        + ", ".join(f"{Recipe.of(t).name} {t['top_10']:.4f} / {t['top_100']:.4f}" for t in trials)
        + f" -> {chosen.name}"
    )
    if chosen.kind == "towers":
        vectors = towers_vectors(trained, pop)
    else:
        assert chosen.lam is not None
        x = pairs.matrix()
        if chosen.lam == best_lam and best_p is not None:  # the validation users added to the fit: no inverse
            b = ease.weights_of(ease.with_users(best_p, x.rows(val.users)), in_place=True)
        else:
            b = ease.weights(x, chosen.lam)
        vectors = _ease_recipe(chosen, x, b, catalogue, pop, seed)
    record = {
        "protocol": val.protocol,
        "criterion": CRITERION,
        "candidates": trials,
        "chosen": chosen.as_dict(),
        "why": why,
        "refit": "on every training user",
        "leak": LEAK,
        "ease": {"skipped": skipped}
        if skipped
        else {"lambda": lam, "lambdas": list(searched), "ranks": [*low, *(["full"] if full else [])]},
        "max_items": max_items,
        "known_users": "not measured by choose (it has no exclude_seen vectors): known_users() compares by_history "
        "of each user's training history with exclude_seen on held-out ratings the caller gives",
        "seconds": round(time.perf_counter() - start, 2),
    }
    report(f"history: {chosen.name} serves by_history ({record['seconds']:.1f} s)")
    return vectors, record


def evaluate_new_users(
    users: Any,
    titles: Any,
    trained: Any,
    record: dict,
    *,
    timestamps: Any = None,
    report: Callable[[str], Any] = print,
) -> dict:
    """``metrics.new_users``: the chosen history model (``record`` from ``choose``, same training columns) on the
    held-out TEST users, against EASE at full rank (the record's configured lambda; where ``ease.fits``),
    item-kNN (export.evaluate.item_knn_weights) and popularity, each fitted on the other training users.

    Rows ``model``, ``ease``, ``item_knn``, ``popularity``: hit rates ``top_<k>`` per held-out rating,
    ``recall_20`` and ``ndcg_100`` per held-out user; ``ci95`` their half-widths; ``comparison`` per baseline
    the paired differences and the verdict (``beats``, ``ties``, ``worse``; ``serves_ease`` when
    the model is EASE's fold-in); ``protocol``, ``model_recipe``, ``baselines``, ``seconds``."""
    start = time.perf_counter()
    protocol = record["protocol"]
    pairs = Pairs.of(users, titles, trained.movie_titles, timestamps)
    seed = protocol["seed"]
    test = new_users(pairs, "test", protocol["split"], seed, protocol["share"], protocol["cap"])
    fit_pop = pairs.popularity(test.fit)
    recipe = Recipe.of(record["chosen"])
    n = pairs.n_titles
    scorers: dict[str, Scorer] = {}
    baselines: dict = {"popularity": {"scores": "training count of the other users"}}
    skipped = _fits(pairs, record.get("max_items", evaluation.MAX_ITEMS))
    lam = float(record["ease"].get("lambda", ease.LAMBDA))
    if recipe.kind == "towers":
        scorers["model"] = _history_scorer(towers_vectors(trained, fit_pop))
    if skipped is None:
        x = pairs.matrix(test.fit)
        gram = x.gram()
        knn = evaluation.item_knn_weights(x, gram)
        model_b = None
        if recipe.kind == "ease" and recipe.lam != lam:
            model_b = ease.weights(x, float(recipe.lam or 0.0), gram.copy())
        b = ease.weights(x, lam, gram)  # gram is used up
        del gram
        if recipe.kind == "ease":
            model = _ease_recipe(recipe, x, b if model_b is None else model_b, trained.movie_titles, fit_pop, seed)
            scorers["model"] = _history_scorer(model)
            del model_b
        scorers["ease"] = _weights_scorer(b, fit_pop)
        scorers["item_knn"] = _weights_scorer(knn, fit_pop)
        baselines["ease"] = {"lambda": lam, "rank": "full"}
        baselines["item_knn"] = {"similarity": "cosine", "neighbours": "all"}
    else:
        baselines["ease"] = baselines["item_knn"] = {"skipped": f"skipped: {skipped}"}
    if "model" not in scorers:
        raise ValueError(f"the record's {recipe.name} cannot be refitted here: {skipped}")
    scorers["popularity"] = _popularity_scorer(fit_pop)

    observations = {name: _observations(_ranks(score, test, n), test) for name, score in scorers.items()}
    metrics: dict = {}
    ci: dict = {}
    for name in ROWS:
        if name in observations:
            means, ci[name] = _figures(observations[name])
            metrics[name] = {c: round(v, 6) for c, v in means.items()}
    comparison = {}
    for name in ROWS[1:]:
        if name in observations:
            comparison[name] = _compare(observations["model"], observations[name])
            if name == "ease" and recipe.kind == "ease":
                comparison[name]["serves_ease"] = True  # the model is EASE's fold-in: no win over EASE to claim
    metrics.update(
        ci95=ci,
        comparison=comparison,
        protocol=test.protocol,
        test_users=len(test.users),
        test_ratings=test.protocol["ratings"],
        model_recipe={**recipe.as_dict(), "name": recipe.name, **({"leak": LEAK} if recipe.kind == "towers" else {})},
        baselines=baselines,
        seconds=round(time.perf_counter() - start, 2),
    )
    report(f"history: new-user test on {len(test.users)} held-out users ({metrics['seconds']:.1f} s)")
    return metrics


def table(metrics: dict) -> str:
    """``evaluate_new_users``' figures as a fixed-width text table (``export.evaluate.table``'s look)."""
    columns = [f"top_{k}" for k in KS] + [f"recall_{RECALL_AT}", f"ndcg_{NDCG_AT}"]
    heads = [f"top-{k}" for k in KS] + [f"recall@{RECALL_AT}", f"ndcg@{NDCG_AT}"]
    header = f"{'new users, history excl.':<26}" + "".join(f"{h:>10}" for h in heads)
    lines = [header, "-" * len(header)]
    for name in ROWS:
        if name in metrics:
            lines.append(f"{name:<26}" + "".join(f"{metrics[name][c]:>10.4f}" for c in columns))
    widest = max((w for row in metrics.get("ci95", {}).values() for w in row.values()), default=0.0)
    protocol = metrics["protocol"]
    lines.append(
        f"({metrics['test_users']} held-out test users, {metrics['test_ratings']} held-out ratings, "
        f"{protocol['given']} given; 95% confidence interval of each figure: within ±{widest:.4f})"
    )
    recipe = metrics["model_recipe"]
    lines.append(f"model: {recipe['name']}" + (f" ({recipe['leak']})" if "leak" in recipe else ""))
    for name in ROWS[1:]:
        if name in metrics["comparison"]:
            row = metrics["comparison"][name]
            figures = ", ".join(
                f"{c.replace('_', '@' if c.startswith(('recall', 'ndcg')) else '-')} "
                f"{v['difference']:+.4f} ± {v['ci95']:.4f}"
                for c, v in row["columns"].items()
            )
            verdict = evaluation.VERDICTS[row["verdict"]]
            if row.get("serves_ease"):
                verdict = f"serves EASE's factors ({verdict})"
            lines.append(f"new users: model vs {name}: {verdict} (paired differences: {figures})")
        elif "skipped" in metrics.get("baselines", {}).get(name, {}):
            lines.append(f"new users: model vs {name}: {metrics['baselines'][name]['skipped']}")
    return "\n".join(lines)


def known_users(
    vectors: HistoryVectors,
    served: Any,
    pop: np.ndarray,
    train_users: Any,
    train_titles: Any,
    test_users: Any,
    test_titles: Any,
    exclude_vectors: Any = None,
    measured: dict | None = None,
) -> dict:
    """Known users: ``by_history`` fed each user's whole training history against ``exclude_seen`` (``served``,
    or ``exclude_vectors`` when that signature has its own, export.vectors.IndexVectors), both with the
    training titles excluded, on the held-out ratings ``test_*`` of the same users (export.evaluate, baselines
    off). ``measured``: export.evaluate's metrics of those ratings, whose ``model_exclude_seen`` row is then
    ``exclude_seen``'s (not evaluated again). Returns ``by_history`` and ``exclude_seen`` hit rates, their
    ``ci95`` and ``test_ratings``."""
    index = {t: i for i, t in enumerate(vectors.titles.tolist())}
    row = {u: i for i, u in enumerate(served.query_keys.tolist())}
    user = positions(train_users, row, -1)
    title = positions(train_titles, index, -1)
    keep = (user >= 0) & (title >= 0)
    order = np.argsort(user[keep], kind="stable")
    bounds = np.searchsorted(user[keep][order], np.arange(len(row) + 1))
    flat = title[keep][order]
    histories = [flat[bounds[i] : bounds[i + 1]] for i in range(len(row))]
    queries = np.concatenate([vectors.empty_query[None, :], vectors.queries(histories)])
    from export.vectors import IndexVectors

    by_history = IndexVectors(served.query_keys, queries, vectors.titles, vectors.candidates)
    got: dict = {}
    for name, vec in (
        ("by_history", by_history),
        ("exclude_seen", served if exclude_vectors is None else exclude_vectors),
    ):
        metrics = (
            measured
            if name == "exclude_seen" and measured is not None
            else evaluation.evaluate(vec, pop, train_users, train_titles, test_users, test_titles, max_items=0)
        )
        got[name] = metrics["model_exclude_seen"]
        got.setdefault("ci95", {})[name] = metrics["ci95"]["model_exclude_seen"]
        got["test_ratings"] = metrics["test_ratings"]
    return got
