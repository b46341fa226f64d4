"""Test metrics by the seed's definition, vectorised: is the true movie among the k best of the catalogue.

For every test rating (user, movie) the user's scores over the whole catalogue are computed as one matrix
product (chunks of test ratings x all titles). The true movie's rank is the number of titles scoring
higher, plus equal-scoring titles that come first in catalogue order (``tf.math.top_k``'s tie order);
a hit at k means rank < k. Rows:

- ``model``: the served scores (see export/vectors.py), all titles ranked;
- ``model_exclude_seen``: the same with the user's training movies removed (the true movie is never removed);
- ``popularity`` and ``popularity_exclude_seen``: the baseline "most rated in train first", same split.
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10, 50, 100)
ROWS = ("model", "model_exclude_seen", "popularity", "popularity_exclude_seen")
_CHUNK = 2048


def _ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    rows = np.arange(len(targets))
    positive = scores[rows, targets][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    higher = (scores > positive).sum(axis=1)
    tied_before = ((scores == positive) & (columns < targets[:, None])).sum(axis=1)
    return higher + tied_before


def evaluate(vectors, pop: np.ndarray, train_users: np.ndarray, train_titles: np.ndarray,
             test_users: np.ndarray, test_titles: np.ndarray, ks=KS) -> dict:
    """Hit rates for each row of ``ROWS`` and each k, plus the number of test ratings counted."""
    title_index = {t: i for i, t in enumerate(vectors.titles.tolist())}
    user_row = {u: i + 1 for i, u in enumerate(vectors.query_keys.tolist())}
    n = len(vectors.titles)

    seen = np.zeros((len(vectors.query_keys) + 1, n), dtype=bool)
    for u, t in zip(train_users.tolist(), train_titles.tolist()):
        if t in title_index:
            seen[user_row.get(u, 0), title_index[t]] = True
    seen[0] = False  # unknown users have no history

    keep = np.array([t in title_index for t in test_titles.tolist()], dtype=bool)
    targets = np.array([title_index[t] for t in np.asarray(test_titles)[keep].tolist()], dtype=np.int64)
    rows = np.array([user_row.get(u, 0) for u in np.asarray(test_users)[keep].tolist()], dtype=np.int64)

    ranks = {name: np.empty(len(targets), dtype=np.int64) for name in ROWS}
    pop_scores = pop.astype(np.float32)[None, :]
    for start in range(0, len(targets), _CHUNK):
        sl = slice(start, start + _CHUNK)
        t, r = targets[sl], rows[sl]
        mask = seen[r].copy()
        mask[np.arange(len(t)), t] = False
        model_scores = vectors.queries[r] @ vectors.candidates.T
        ranks["model"][sl] = _ranks(model_scores, t)
        ranks["model_exclude_seen"][sl] = _ranks(np.where(mask, -np.inf, model_scores), t)
        popular = np.broadcast_to(pop_scores, model_scores.shape)
        ranks["popularity"][sl] = _ranks(popular, t)
        ranks["popularity_exclude_seen"][sl] = _ranks(np.where(mask, -np.inf, popular), t)

    metrics = {name: {f"top_{k}": float(np.mean(ranks[name] < k)) if len(targets) else 0.0 for k in ks}
               for name in ROWS}
    metrics["test_ratings"] = int(len(targets))
    return metrics


def table(metrics: dict, ks=KS) -> str:
    """The evaluation as a fixed-width text table."""
    header = f"{'test top-k accuracy':<26}" + "".join(f"{'top-' + str(k):>9}" for k in ks)
    lines = [header, "-" * len(header)]
    for name in ROWS:
        lines.append(f"{name:<26}" + "".join(f"{metrics[name][f'top_{k}']:>9.4f}" for k in ks))
    lines.append(f"({metrics['test_ratings']} test ratings)")
    return "\n".join(lines)
