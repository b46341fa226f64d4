"""Test metrics by the seed's definition, vectorised: is the true movie among the k best of the catalogue.

For every test rating (user, movie) the user's scores over the whole catalogue are computed as one matrix
product (chunks of test ratings x all titles). The true movie's rank is the number of titles scoring
higher, plus equal-scoring titles that come first in catalogue order (``tf.math.top_k``'s tie order);
a hit at k means rank < k. Rows:

- ``model``: the served scores (see export/vectors.py), all titles ranked;
- ``model_exclude_seen``: the same with the user's training movies removed (the true movie is never removed);
- ``popularity`` and ``popularity_exclude_seen``: the baseline "most rated in train first", same split;
- ``ease`` / ``ease_exclude_seen``: EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data",
  WWW 2019), the closed form B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1, over the binary
  user x title matrix X of the training part; a user's scores are X_u B;
- ``item_knn`` / ``item_knn_exclude_seen``: item-based kNN with cosine similarity over the columns of X
  (all neighbours, none trained); a user's scores are X_u S, S's diagonal zero.

Both baselines need a dense titles x titles matrix (EASE inverts one in float64), so they run only up to
``max_items`` titles (default 12,000, above ML-10M's 10.7k: about 3.5 GB while inverting), and while X^T X
costs at most ``ease.MAX_GRAM_FLOPS``; else they are skipped and ``metrics["baselines"]`` says why. Users
with no training history score popularity under both (a tie-break of 1e-6 x normalised popularity is added
to their scores). ``metrics["comparison"]`` says, for each baseline, whether the model beats it, ties with it
or is worse in the seen-excluded columns that users get (top-10 and top-100), each difference judged against
its 95 % confidence interval (``compare``). Above ``MAX_RATINGS``
test ratings a sample of test users is evaluated, with confidence intervals (``evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from export import ease
from export.data.records import positions

KS = (1, 5, 10, 50, 100)
BASELINES = ("popularity", "ease", "item_knn")
ROWS = tuple(f"{name}{suffix}" for name in ("model", *BASELINES) for suffix in ("", "_exclude_seen"))
EASE_LAMBDA = ease.LAMBDA
MAX_ITEMS = 12_000
MAX_RATINGS = 200_000  # test ratings evaluated; above, a random sample of test users (see evaluate)
MAX_SCORES = 2_000_000_000  # ... and at most this many ratings x titles scored (32k ratings at ML-25M's 62k titles)
COMPARED = ("top_10", "top_100")  # of the seen-excluded rows: what the comparison judges
_CHUNK_CELLS = 8_000_000  # test ratings x titles scored at once: a few float32 and bool matrices of this size
_TIE_BREAK = 1e-6


def item_knn_weights(history: np.ndarray | ease.Interactions, gram: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity between the titles' columns of a binary users x titles matrix (or from its
    ``gram`` X^T X), zero diagonal."""
    co = (ease.interactions(history).gram() if gram is None else gram).astype(np.float32)  # counts: exact
    norms = np.sqrt(np.diag(co)).copy()
    norms[norms == 0] = 1.0
    similarity = co / norms[:, None] / norms[None, :]
    similarity[np.diag_indices_from(similarity)] = 0.0
    return similarity


def _baseline(seen: ease.Interactions, weights: np.ndarray, tie_break: np.ndarray) -> Callable[..., Any]:
    """The scorer of an item-item baseline: each user's row of X times ``weights``, plus the tie-break."""
    return lambda r: _per_user(r, lambda users: seen.rows(users) @ weights + tie_break)


def _per_user(rows: np.ndarray, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``score`` of each distinct row once (titles x titles work per user, not per rating), one row per rating."""
    users, inverse = np.unique(rows, return_inverse=True)
    return score(users)[inverse]


def _ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    rows = np.arange(len(targets))
    positive = scores[rows, targets][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    higher = (scores > positive).sum(axis=1)
    tied_before = ((scores == positive) & (columns < targets[:, None])).sum(axis=1)
    return higher + tied_before


def _lookups(vectors, test_users, test_titles):
    """The title -> position and user -> query row maps (row 0: an unknown user's fallback query), and the
    test ratings whose title is in the catalogue as (target positions, query rows)."""
    title_index = {t: i for i, t in enumerate(vectors.titles.tolist())}
    user_row = {u: i + 1 for i, u in enumerate(vectors.query_keys.tolist())}
    targets = positions(test_titles, title_index, -1)
    keep = targets >= 0
    return title_index, user_row, targets[keep], positions(test_users, user_row, 0)[keep]


def evaluate(
    vectors,
    pop: np.ndarray,
    train_users: np.ndarray,
    train_titles: np.ndarray,
    test_users: np.ndarray,
    test_titles: np.ndarray,
    ks=KS,
    *,
    ease_lambda: float = EASE_LAMBDA,
    max_items: int = MAX_ITEMS,
    exclude_vectors=None,
    max_ratings: int = MAX_RATINGS,
    seed: int = 0,
) -> dict:
    """Hit rates for each row of ``ROWS`` and each k, the number of test ratings counted, what the baselines
    were (or why they were skipped) and how the model compares with each. ``exclude_vectors`` (same users and
    titles) score ``model_exclude_seen`` when the served ``exclude_seen`` signature has vectors of its own.
    The users and titles are arrays of str or Coded columns (export/data/records.py: fast at tens of millions).

    Above ``max_ratings`` test ratings (or ``MAX_SCORES`` / titles, if fewer), a random sample of test users is
    evaluated (all their test ratings, until that many is reached); ``metrics["sample"]`` says how many, and
    ``metrics["ci95"]`` gives each rate's 95 % confidence half-width (normal approximation of a binomial over
    the counted ratings)."""
    title_index, user_row, targets, rows = _lookups(vectors, test_users, test_titles)
    n = len(vectors.titles)
    # Scoring costs ratings x titles (three times: model, seen-excluded, popularity): bound it.
    max_ratings = min(max_ratings, max(1_000, MAX_SCORES // max(n, 1)))
    sample = {
        "ratings": len(targets),
        "of_ratings": len(targets),
        "users": len(np.unique(rows)),
        "of_users": len(np.unique(rows)),
    }
    if len(targets) > max_ratings:
        order = np.random.default_rng(seed).permutation(np.unique(rows))
        counts = np.bincount(rows, minlength=len(vectors.query_keys) + 1)[order]
        chosen = order[: int(np.searchsorted(np.cumsum(counts), max_ratings)) + 1]
        picked = np.isin(rows, chosen)
        targets, rows = targets[picked], rows[picked]
        sample.update(ratings=len(targets), users=len(chosen))

    # Each query row's training titles, as sorted index arrays (never a users x titles matrix).
    pairs_rows, pairs_titles = positions(train_users, user_row, 0), positions(train_titles, title_index, -1)
    known = (pairs_rows > 0) & (pairs_titles >= 0)  # unknown users have no history
    pairs_rows, pairs_titles = pairs_rows[known], pairs_titles[known]
    by_row = np.argsort(pairs_rows, kind="stable")
    pairs_rows, pairs_titles = pairs_rows[by_row], pairs_titles[by_row]
    bounds = np.searchsorted(pairs_rows, np.arange(len(vectors.query_keys) + 2))

    def seen_mask(r: np.ndarray) -> np.ndarray:
        mask = np.zeros((len(r), n), dtype=bool)
        for i, row in enumerate(r.tolist()):
            mask[i, pairs_titles[bounds[row] : bounds[row + 1]]] = True
        return mask

    pop_scores = pop.astype(np.float32)[None, :]
    scorers: dict[str, Callable[..., Any]] = {
        "model": lambda r: vectors.queries[r] @ vectors.candidates.T,
        "popularity": lambda r: np.broadcast_to(pop_scores, (len(r), n)),
    }
    excluding = {}  # scorers whose seen-excluded row scores with other vectors
    if exclude_vectors is not None:
        excluding["model"] = lambda r: exclude_vectors.queries[r] @ exclude_vectors.candidates.T
    baselines: dict = {"popularity": {"scores": "training count"}}
    skipped = ease.fits(len(vectors.query_keys) + 1, n, max_items)
    if skipped is None:
        tie_break = (_TIE_BREAK * pop_scores / max(float(pop.max()), 1.0)) if n else pop_scores
        seen = ease.history(vectors.query_keys, vectors.titles, train_users, train_titles)
        gram = seen.gram()
        knn = item_knn_weights(seen, gram)
        if ease.dual_scores_apply(seen):  # every query row's EASE scores at once, from the users' side
            del gram
            user_scores = ease.scores(seen, ease_lambda)
            scorers["ease"] = lambda r: user_scores[r] + tie_break
        else:
            scorers["ease"] = _baseline(seen, ease.weights(seen, ease_lambda, gram), tie_break)  # gram is used up
            del gram
        scorers["item_knn"] = _baseline(seen, knn, tie_break)
        baselines["ease"] = {"lambda": float(ease_lambda)}
        baselines["item_knn"] = {"similarity": "cosine", "neighbours": "all"}
    else:
        baselines["ease"] = baselines["item_knn"] = {"skipped": f"skipped: {skipped}"}

    ranks = {
        f"{name}{suffix}": np.empty(len(targets), dtype=np.int64)
        for name in scorers
        for suffix in ("", "_exclude_seen")
    }
    # By user, so that a chunk holds few users: the baselines score each user once (a rating's row is its
    # user's; the rates are means over the ratings, in any order).
    by_user = np.argsort(rows, kind="stable")
    targets, rows = targets[by_user], rows[by_user]
    chunk = max(1, _CHUNK_CELLS // max(n, 1))  # 2048 rows cost 0.5 GB a matrix at ML-25M's 62k titles
    for start in range(0, len(targets), chunk):
        sl = slice(start, start + chunk)
        t, r = targets[sl], rows[sl]
        mask = seen_mask(r)
        mask[np.arange(len(t)), t] = False
        for name, score in scorers.items():
            scores = score(r)
            ranks[name][sl] = _ranks(scores, t)
            if name in excluding:
                scores = excluding[name](r)
            ranks[f"{name}_exclude_seen"][sl] = _ranks(np.where(mask, -np.inf, scores), t)

    metrics: dict = {
        name: {f"top_{k}": float(np.mean(ranks[name] < k)) if len(targets) else 0.0 for k in ks}
        for name in ROWS
        if name in ranks
    }
    counted = max(len(targets), 1)
    metrics["ci95"] = {
        name: {key: round(1.96 * float(np.sqrt(p * (1 - p) / counted)), 6) for key, p in metrics[name].items()}
        for name in ROWS
        if name in ranks
    }
    metrics["test_ratings"] = len(targets)
    metrics["sample"] = sample
    metrics["baselines"] = baselines
    metrics["comparison"] = compare(metrics)
    return metrics


def exclude_seen_rates(
    vectors, train_users: np.ndarray, train_titles: np.ndarray, test_users: np.ndarray, test_titles: np.ndarray, ks=KS
) -> dict:
    """``evaluate``'s ``model_exclude_seen`` row alone (same ranks, same tie order), scored per user rather than
    per rating: each test user's scores are computed and sorted once, and each of their test titles is ranked by a
    binary search among the titles they have not seen. What validation scores every epoch and every candidate
    with (export/selection.py): at 9k titles a user's dozen validation ratings cost one row of scores, not a dozen."""
    title_index, user_row, targets, rows = _lookups(vectors, test_users, test_titles)
    n = len(vectors.titles)
    seen_rows, seen_titles = positions(train_users, user_row, 0), positions(train_titles, title_index, -1)
    known = (seen_rows > 0) & (seen_titles >= 0)
    order = np.argsort(seen_rows[known], kind="stable")
    seen_rows, seen_titles = seen_rows[known][order], seen_titles[known][order]
    bounds = np.searchsorted(seen_rows, np.arange(len(vectors.query_keys) + 2))
    users, inverse = np.unique(rows, return_inverse=True)
    ranks = np.empty(len(targets), dtype=np.int64)
    by_user = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[by_user], np.arange(len(users) + 1))
    step = max(1, _CHUNK_CELLS // max(n, 1))
    columns = np.arange(n)
    for first in range(0, len(users), step):
        chunk = users[first : first + step]
        scores = vectors.queries[chunk] @ vectors.candidates.T
        for i, row in enumerate(chunk.tolist()):
            mine = by_user[starts[first + i] : starts[first + i + 1]]
            t = targets[mine]
            own = scores[i, t]
            masked = scores[i].copy()
            masked[seen_titles[bounds[row] : bounds[row + 1]]] = -np.inf  # a target's own score is ``own``
            ordered = np.sort(masked)
            right = np.searchsorted(ordered, own, side="right")
            rank = n - right
            for j in np.flatnonzero(right - np.searchsorted(ordered, own, side="left") > (masked[t] == own)):
                rank[j] += int(np.count_nonzero((masked == own[j]) & (columns < t[j])))  # ties: catalogue order
            ranks[mine] = rank
    return {f"top_{k}": float(np.mean(ranks < k)) if len(targets) else 0.0 for k in ks}


VERDICTS = {"beats": "beats it", "ties": "ties with it", "worse": "DOES NOT BEAT IT"}


def compare(metrics: dict) -> dict:
    """For each evaluated baseline: the model's and its seen-excluded hit rates in each column of ``COMPARED``
    (``[model, baseline]``), the 95 % confidence half-width of each difference, and the verdict:

    - ``"beats"``: the model is above the baseline by more than the difference's half-width in every column;
    - ``"worse"``: it is below by more than that in some column;
    - ``"ties"``: otherwise (every difference that is not within the interval is in the model's favour, but
      not all are outside it).

    ``beats`` is True for "beats" only. The difference's half-width is sqrt(a^2 + b^2) of the two rates'
    half-widths in ``metrics["ci95"]`` (0 where absent), the rule for independent samples; both rates are
    measured on the same test ratings, whose paired difference usually varies less, so the rule errs towards
    "ties", never towards "beats"."""
    out = {}
    model = metrics["model_exclude_seen"]
    widths = metrics.get("ci95", {})
    for name in BASELINES:
        theirs = metrics.get(f"{name}_exclude_seen")
        if theirs is None or any(c not in model for c in COMPARED):
            continue
        margin = {
            c: round(
                float(
                    np.hypot(
                        widths.get("model_exclude_seen", {}).get(c, 0.0),
                        widths.get(f"{name}_exclude_seen", {}).get(c, 0.0),
                    )
                ),
                6,
            )
            for c in COMPARED
        }
        above = [model[c] - theirs[c] > margin[c] for c in COMPARED]
        below = [theirs[c] - model[c] > margin[c] for c in COMPARED]
        outcome = "worse" if any(below) else "beats" if all(above) else "ties"
        out[name] = {
            "beats": outcome == "beats",
            "verdict": outcome,
            **{f"{c}_exclude_seen": [model[c], theirs[c]] for c in COMPARED},
            "ci95_of_difference": margin,
        }
    return out


def _serves_ease_alone(metrics: dict) -> bool:
    """Whether ``exclude_seen`` serves EASE's factors alone (``metrics["served"]["exclude_seen"]``, the blend
    validation chose: ``{"tower": weight, "ease": weight}``, when the caller records it)."""
    chosen = metrics.get("served", {}).get("exclude_seen") or {}
    return bool(chosen.get("ease")) and not chosen.get("tower")


def verdict(metrics: dict) -> list:
    """One line per baseline: whether the exported model beats it, ties with it or does not beat it (seen
    excluded; ``compare`` says when each holds), with the figures and the interval of their difference; or
    why the baseline was not evaluated. Against EASE, when ``exclude_seen`` serves EASE's own factors, it says
    so rather than claim a win over EASE."""
    lines = []
    for name in BASELINES:
        if name in metrics.get("comparison", {}):
            row = metrics["comparison"][name]
            margins = row.get("ci95_of_difference", {})
            figures = ", ".join(
                f"{c.replace('_', '-')} {row[c + '_exclude_seen'][0]:.4f} vs {row[c + '_exclude_seen'][1]:.4f}"
                + (f" ±{margins[c]:.4f}" if c in margins else "")
                for c in COMPARED
            )
            outcome = row.get("verdict", "beats" if row["beats"] else "worse")
            said = VERDICTS[outcome]
            if name == "ease" and _serves_ease_alone(metrics):
                said = f"serves EASE's factors ({VERDICTS[outcome]})"
            lines.append(f"model vs {name}: {said} (seen excluded: {figures})")
        elif "skipped" in metrics.get("baselines", {}).get(name, {}):
            lines.append(f"model vs {name}: {metrics['baselines'][name]['skipped']}")
    return lines


def table(metrics: dict, ks=KS) -> str:
    """The evaluation as a fixed-width text table. The comparison with the baselines is not in it: ``verdict``'s
    lines say it once, as the run's last lines."""
    header = f"{'test top-k accuracy':<26}" + "".join(f"{'top-' + str(k):>9}" for k in ks)
    lines = [header, "-" * len(header)]
    for name in ROWS:
        if name in metrics:
            lines.append(f"{name:<26}" + "".join(f"{metrics[name][f'top_{k}']:>9.4f}" for k in ks))
    sample = metrics.get("sample", {})
    widest = max((w for row in metrics.get("ci95", {}).values() for w in row.values()), default=0.0)
    of = (
        f", a random sample of {sample['users']:,} of {sample['of_users']:,} test users"
        if sample and sample["ratings"] < sample["of_ratings"]
        else ""
    )
    lines.append(
        f"({metrics['test_ratings']} test ratings{of}; 95% confidence interval of each rate: within ±{widest:.4f})"
    )
    return "\n".join(lines)
