"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) and its low-rank factors.

EASE is a closed-form item-item model: B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1, over the
binary user x title matrix X; a user's scores are X_u B. It is the evaluation's strongest baseline, and the
export can serve it as a dot product: the rank-r truncated SVD of the training users' scores X B ~ U S V^T
gives query vectors U S (per known user, baked into the query table like the towers' user vectors) and
candidate vectors V. A rank-64 factorisation keeps EASE's quality on MovieLens 100K.

Memory: B is titles x titles (float64 while inverting) and X B is users x titles, so both are bounded by the
caller (``fits``); the SVD is randomised (Halko, Martinsson and Tropp, 2011), so it never forms more than
users x (rank + 10) beside X B.
"""

from __future__ import annotations

import numpy as np

LAMBDA = 500.0
RANK = 64


def history(user_keys: np.ndarray, titles: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Binary [len(user_keys) + 1, len(titles)] matrix of who rated what (row 0, the unknown user, empty)."""
    from export.data.records import positions

    rows = positions(users, {u: i + 1 for i, u in enumerate(user_keys.tolist())}, -1)
    columns = positions(items, {t: i for i, t in enumerate(titles.tolist())}, -1)
    known = (rows >= 0) & (columns >= 0)
    out = np.zeros((len(user_keys) + 1, len(titles)), dtype=bool)
    out[rows[known], columns[known]] = True
    return out


def weights(history: np.ndarray, lam: float = LAMBDA) -> np.ndarray:
    """EASE's item-item weights B (titles x titles, zero diagonal) from a binary users x titles matrix."""
    x = history.astype(np.float64)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    out = p / (-np.diag(p))[None, :]
    out[np.diag_indices_from(out)] = 0.0
    return out.astype(np.float32)


def fits(users: int, titles: int, max_items: int, max_cells: int = 200_000_000) -> str | None:
    """None if EASE fits in memory for this catalogue, else the reason it is skipped (one line)."""
    if titles > max_items:
        return (
            f"{titles:,} titles > {max_items:,} (EASE and item-kNN need a {titles:,} x {titles:,} matrix; "
            f"EASE's inverse is {titles * titles * 8 / 2**30:.1f} GiB in float64)"
        )
    if users * titles > max_cells:
        return f"{users:,} users x {titles:,} titles > {max_cells:,} scores"
    return None


def factors(history: np.ndarray, lam: float = LAMBDA, rank: int = RANK, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(query factors [users, r], candidate factors [titles, r]) with query . candidate ~ EASE's scores."""
    scores = history.astype(np.float32) @ weights(history, lam)
    rank = max(1, min(rank, *scores.shape))
    u, s, vt = randomized_svd(scores, rank, seed=seed)
    return (u * s).astype(np.float32), vt.T.astype(np.float32)


def randomized_svd(
    matrix: np.ndarray, rank: int, oversample: int = 10, power_iterations: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``rank`` leading singular triplets of ``matrix`` (randomised range finder with power iterations)."""
    rng = np.random.default_rng(seed)
    width = min(rank + oversample, min(matrix.shape))
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], width)).astype(matrix.dtype))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(matrix.T @ q)
        q, _ = np.linalg.qr(matrix @ q)
    u_small, s, vt = np.linalg.svd(q.T @ matrix, full_matrices=False)
    return (q @ u_small)[:, :rank], s[:rank], vt[:rank]
