"""The new-user protocol of ``by_history``'s model: users held out of its fit, and the figures it is measured by.

The protocol (``new_users``): a share of the training part's users (``HELD_OUT_SHARE``, at most
``MAX_HELD_OUT``, of those with >= 2 titles) is held out entirely; EASE, item-kNN and popularity are fitted on
the other users only; each held-out user gives ``GIVEN_SHARE`` of their titles (a random part for the random
split, the earliest for the time split) and the rest is scored, the given titles excluded (as ``by_history``
excludes them). One seeded permutation of the eligible users gives the test users (its first block) and the
validation users (the next): never the same user. export/history_selection.py chooses the served recipe
(export/history.py) on the validation users; ``evaluate_new_users`` measures it on the test users against
EASE at full rank, item-kNN and popularity, each fitted without them (``table`` prints it). The towers were
trained on every training user, held-out ones included: a small leak in their favour, which the records say.
``known_users`` compares ``by_history`` fed a known user's training history with ``exclude_seen``.

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
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from export import ease
from export import evaluate as evaluation
from export.data.records import Coded, factorize, positions
from export.history import CHUNK_CELLS, HistoryVectors, Recipe, recipe_vectors, towers_vectors

KS = evaluation.KS
RECALL_AT = 20
NDCG_AT = 100
HELD_OUT_SHARE = 0.2  # of the users with >= 2 titles, held out for validation, as many again for test
MAX_HELD_OUT = 2_000  # users per part at most (scoring costs users x titles^2 at full rank)
GIVEN_SHARE = 0.8  # of a held-out user's titles fed as history; the rest is scored
JUDGED = ("top_10", "top_100", f"recall_{RECALL_AT}", f"ndcg_{NDCG_AT}")
ROWS = ("model", "ease", "item_knn", "popularity")
PARTS = ("test", "validation")
LEAK = (
    "the towers were trained on every training user, the held-out ones included (their held-out titles too): "
    "a small leak in the towers' favour"
)

Scorer = Callable[[list[np.ndarray]], np.ndarray]  # given title lists -> float32 [len, titles] scores


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


def ease_fits(pairs: Pairs, max_items: int) -> str | None:
    """Why EASE cannot be fitted on these pairs (``ease.fits``), None when it can."""
    return ease.fits(pairs.n_users, pairs.n_titles, max_items)


def rating_ranks(score: Scorer, new: NewUsers, n_titles: int) -> np.ndarray:
    """Each held-out rating's rank among the titles its user did not give (ties by catalogue order), in the
    order of ``new.targets`` concatenated."""
    lengths = np.array([len(t) for t in new.targets], dtype=np.int64)
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    per_chunk = max(1, CHUNK_CELLS // max(n_titles, 1))
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


def observe(ranks: np.ndarray, new: NewUsers) -> dict[str, np.ndarray]:
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


def ci95(values: np.ndarray) -> float:
    """The 95 % half-width of the mean of ``values``: 1.96 sd / sqrt(n)."""
    return round(1.96 * float(np.std(values)) / float(np.sqrt(max(len(values), 1))), 6)


def figures(observations: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(means, 95 % half-widths) per column."""
    means = {c: float(np.mean(v)) if len(v) else 0.0 for c, v in observations.items()}
    return means, {c: ci95(v) for c, v in observations.items()}


def _compare(model: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict:
    """The paired differences model - baseline in each judged column, their 95 % half-widths and the verdict."""
    columns = {}
    for c in JUDGED:
        diff = model[c] - theirs[c]
        columns[c] = {"difference": round(float(np.mean(diff)), 6), "ci95": ci95(diff)}
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


def history_scorer(vectors: HistoryVectors) -> Scorer:
    """Scores as ``by_history`` computes them: each history's query against every candidate."""
    return lambda given: vectors.queries(given) @ vectors.candidates.T


def _weights_scorer(weights: np.ndarray, pop: np.ndarray) -> Scorer:
    """x W, plus export.evaluate's popularity tie-break (as its EASE and item-kNN rows)."""
    tie_break = evaluation._TIE_BREAK * pop.astype(np.float32)[None, :]
    return lambda given: _dense(given, len(pop)) @ weights + tie_break


def _popularity_scorer(pop: np.ndarray) -> Scorer:
    return lambda given: np.broadcast_to(pop.astype(np.float32)[None, :], (len(given), len(pop)))


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
    skipped = ease_fits(pairs, record.get("max_items", evaluation.MAX_ITEMS))
    lam = float(record["ease"].get("lambda", ease.LAMBDA))
    if recipe.kind == "towers":
        scorers["model"] = history_scorer(towers_vectors(trained, fit_pop))
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
            model = recipe_vectors(recipe, x, b if model_b is None else model_b, trained.movie_titles, fit_pop, seed)
            scorers["model"] = history_scorer(model)
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

    observations = {name: observe(rating_ranks(score, test, n), test) for name, score in scorers.items()}
    metrics: dict = {}
    ci: dict = {}
    for name in ROWS:
        if name in observations:
            means, ci[name] = figures(observations[name])
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
