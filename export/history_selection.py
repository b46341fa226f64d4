"""Which recipe serves ``by_history`` (export/history.py): chosen on validation new users, then refitted.

``choose`` holds out the validation users of the new-user protocol (export/history_evaluation.py) and picks
the recipe by the mean of their top-10 and top-100 hit rates (``export.selection``'s criterion for
``exclude_seen``): EASE's lambda at full rank first (one inverse each, up to ``FULL_RANK_TITLES``), then the
rank at the best lambda (one randomised SVD at the largest rank, whose leading columns give the smaller ones);
a recipe with fewer dimensions within the 95 % half-width of the paired difference from the best wins over
it; then it refits the winner on every training user (EASE's fold-in, Steck, WWW 2019; the towers' item
vectors otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from export import ease, history_evaluation
from export import evaluate as evaluation
from export.history import HistoryVectors, Recipe, ease_vectors, recipe_vectors, towers_vectors

# Up to this catalogue EASE is offered at full rank (B itself: titles + 1 dimensions) and its lambda is searched (one
# titles x titles inverse each); above, the configured lambda only, at low rank.
FULL_RANK_TITLES = 2_048
LAMBDAS = (100.0, 300.0, 500.0, 1000.0)
RANKS = (64, 128, 256)
CRITERION = "mean_top_10_top_100"


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
        if float(np.mean(diff)) <= history_evaluation.ci95(diff):
            why = (
                f"{trials[i][CRITERION]:.4f} on validation new users, within the 95% CI of the best "
                f"({Recipe.of(trials[best]).name}: {trials[best][CRITERION]:.4f}, paired difference "
                f"{float(np.mean(diff)):+.4f} ± {history_evaluation.ci95(diff):.4f}) with fewer dimensions "
                f"({_cost(trials[i])} against {_cost(trials[best])})"
            )
            return i, why
    others = [t for i, t in enumerate(trials) if i != best]
    if others:
        runner_up = max(others, key=lambda t: t[CRITERION])
        why += f" (next: {Recipe.of(runner_up).name} {runner_up[CRITERION]:.4f})"
    return best, why


def _offered(n_titles: int, lam: float, lambdas: Sequence[float], ranks: Sequence[int]):
    """(lambdas, low ranks) searched for this catalogue: every lambda (at full rank) up to FULL_RANK_TITLES, else
    the configured one; the ranks below the catalogue's size."""
    searched = tuple(lambdas) if n_titles <= FULL_RANK_TITLES else (lam,)
    return searched, tuple(r for r in sorted(ranks) if r < n_titles)


def _criterion(means: dict) -> float:
    return (means["top_10"] + means["top_100"]) / 2


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
    pairs = history_evaluation.Pairs.of(users, titles, catalogue, timestamps)
    val = history_evaluation.new_users(pairs, "validation", split, seed)
    fit_pop = pairs.popularity(val.fit)
    searched: tuple[float, ...] = ()
    best_p: np.ndarray | None = None
    best_lam = lam
    low: tuple[int, ...] = ()
    full = pairs.n_titles <= FULL_RANK_TITLES
    skipped = history_evaluation.ease_fits(pairs, max_items)
    report(
        f"history: validation on {len(val.users)} new users ({val.protocol['ratings']} held-out ratings; "
        f"{val.protocol['given']} given), fitted on the other {pairs.n_users - len(val.users)}"
    )

    per_rating: list[np.ndarray] = []  # each trial's CRITERION per held-out rating, for paired comparisons

    def measured(recipe: Recipe, vectors: HistoryVectors, seconds: float) -> dict:
        observed = history_evaluation.observe(
            history_evaluation.rating_ranks(history_evaluation.history_scorer(vectors), val, pairs.n_titles), val
        )
        per_rating.append((observed["top_10"] + observed["top_100"]) / 2)
        means, ci = history_evaluation.figures(observed)
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
        vectors = recipe_vectors(chosen, x, b, catalogue, pop, seed)
    record = {
        "protocol": val.protocol,
        "criterion": CRITERION,
        "candidates": trials,
        "chosen": chosen.as_dict(),
        "why": why,
        "refit": "on every training user",
        "leak": history_evaluation.LEAK,
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
