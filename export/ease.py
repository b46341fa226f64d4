"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) and its low-rank factors.

EASE is a closed-form item-item model: B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1, over the
binary user x title matrix X; a user's scores are X_u B. It is the evaluation's strongest baseline, and the
export can serve it as a dot product: the rank-r truncated SVD of the training users' scores X B ~ U S V^T
gives query vectors U S (per known user, baked into the query table like the towers' user vectors) and
candidate vectors V. A rank-64 factorisation keeps EASE's quality on MovieLens 100K. A user unseen when B was
fitted is scored x B too (EASE has no user parameters): ``fold_in_factors`` gives that at low rank, x (B V) V^T
(export/history.py serves it for histories), and ``with_users`` adds users to a fit's inverse (Woodbury)
instead of inverting again.

Memory: B is titles x titles (float64 while inverting), bounded by the caller (``fits``). X is kept as each
user's sorted titles (``Interactions``) and is dense only up to ``DENSE_CELLS`` users x titles (ML-1M's
size); above that (ML-10M's 70k users x 10.7k titles would be 3 GB as float32) it is made dense a block of
users at a time: for X^T X, for a user's scores X_u B, and inside the SVD, which then works on the product
X B without forming it. The SVD is randomised (Halko, Martinsson and Tropp, 2011), so it never forms more
than users x (rank + 10) beside X B.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

LAMBDA = 500.0
RANK = 64
DENSE_CELLS = 200_000_000  # users x titles up to which X is one dense matrix (the results as before)
BLOCK_ROWS = 4096  # users per dense block above it (4096 x 10.7k float32: 175 MB)
SPARSE_GRAM_SHARE = 20  # X^T X pair by pair when 20 x sum of |x_u|^2 < users x titles^2 (the dense product's cost)
MAX_GRAM_FLOPS = 1.5e13  # users x titles^2 of X^T X in blocks (ML-10M: 8e12; its evaluation took 154 s here)


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """The binary users x titles matrix X: ``dense`` while small, else each row's sorted columns (CSR)."""

    shape: tuple[int, int]
    dense: np.ndarray | None = None  # bool [users, titles]
    indptr: np.ndarray | None = None  # [users + 1]: row i's columns are columns[indptr[i]:indptr[i + 1]]
    columns: np.ndarray | None = None

    @classmethod
    def of(cls, rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> Interactions:
        if shape[0] * shape[1] <= DENSE_CELLS:
            dense = np.zeros(shape, dtype=bool)
            dense[rows, columns] = True
            return cls(shape, dense=dense)
        flat = np.unique(rows.astype(np.int64) * shape[1] + columns)  # sorted by row, then column; binary
        return cls(shape, indptr=np.searchsorted(flat // shape[1], np.arange(shape[0] + 1)), columns=flat % shape[1])

    def without_first_row(self) -> Interactions:
        shape = (self.shape[0] - 1, self.shape[1])
        if self.dense is not None:
            return Interactions(shape, dense=self.dense[1:])
        assert self.indptr is not None and self.columns is not None
        start = self.indptr[1]
        return Interactions(shape, indptr=self.indptr[1:] - start, columns=self.columns[start:])

    def rows(self, r: np.ndarray) -> np.ndarray:
        """float32 [len(r), titles]: the rows ``r`` of X."""
        if self.dense is not None:
            return self.dense[r].astype(np.float32)
        assert self.indptr is not None and self.columns is not None
        r = np.asarray(r, dtype=np.int64)
        starts, counts = self.indptr[r], self.indptr[r + 1] - self.indptr[r]
        out = np.zeros((len(r), self.shape[1]), dtype=np.float32)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        out[np.repeat(np.arange(len(r)), counts), self.columns[np.repeat(starts, counts) + offsets]] = 1.0
        return out

    def times(self, b: np.ndarray) -> np.ndarray:
        """X b (float32 [users, b's columns]) of a dense X: with sparse rows (SPARSE_GRAM_SHARE, as ``gram``) each
        row is the sum of b's rows at its titles (nonzeros x columns, not users x titles x columns)."""
        assert self.dense is not None
        if SPARSE_GRAM_SHARE * float(self.dense.sum()) >= float(self.shape[0]) * self.shape[1]:
            return self.rows(np.arange(self.shape[0])) @ b
        out = np.zeros((self.shape[0], b.shape[1]), dtype=np.float32)
        for i, row in enumerate(self.dense):
            out[i] = b[np.flatnonzero(row)].sum(axis=0, dtype=np.float32)
        return out

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        for start in range(0, self.shape[0], BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, self.shape[0])
            yield slice(start, stop), self.rows(np.arange(start, stop))

    def gram(self) -> np.ndarray:
        """X^T X (float64, titles x titles): co-occurrence counts, exact either way (float32 holds integers
        up to 2^24 exactly, and no count exceeds the number of users)."""
        if self.dense is not None:
            lengths = self.dense.sum(axis=1, dtype=np.int64)
            if SPARSE_GRAM_SHARE * float(np.sum(lengths**2)) < float(self.shape[0]) * self.shape[1] ** 2:
                # Sparse rows: each user's titles add one to every pair of them (sum of |x_u|^2 cells, not a
                # users x titles^2 product: at latest-small's 671 x 9,125, 0.3 s rather than 12 s here).
                out = np.zeros((self.shape[1], self.shape[1]), dtype=np.float64)
                for row in self.dense:
                    titles = np.flatnonzero(row)
                    out[np.ix_(titles, titles)] += 1.0
                return out
            x = self.dense.astype(np.float32)  # exact (counts), and twice as fast as float64
            return (x.T @ x).astype(np.float64)
        out = np.zeros((self.shape[1], self.shape[1]), dtype=np.float32)
        for _, block in self.blocks():
            out += block.T @ block
        return out.astype(np.float64)


def history(user_keys: np.ndarray, titles: np.ndarray, users: np.ndarray, items: np.ndarray) -> Interactions:
    """Binary [len(user_keys) + 1, len(titles)] X of who rated what (row 0, the unknown user, empty)."""
    from export.data.records import positions

    rows = positions(users, {u: i + 1 for i, u in enumerate(user_keys.tolist())}, -1)
    columns = positions(items, {t: i for i, t in enumerate(titles.tolist())}, -1)
    known = (rows >= 0) & (columns >= 0)
    return Interactions.of(rows[known], columns[known], (len(user_keys) + 1, len(titles)))


def interactions(history: np.ndarray | Interactions) -> Interactions:
    return history if isinstance(history, Interactions) else Interactions(history.shape, dense=history.astype(bool))


def weights(history: np.ndarray | Interactions, lam: float = LAMBDA, gram: np.ndarray | None = None) -> np.ndarray:
    """EASE's item-item weights B (titles x titles, zero diagonal) from a binary users x titles matrix, or
    from its ``gram`` X^T X when the caller has it (then overwritten: at 10.7k titles each copy is 0.9 GB)."""
    return weights_of(inverse(history, lam, gram), in_place=True)


def inverse(history: np.ndarray | Interactions, lam: float = LAMBDA, gram: np.ndarray | None = None) -> np.ndarray:
    """P = (X^T X + lambda I)^-1 (float64, titles x titles); ``gram`` as ``weights`` takes it (used up).

    With fewer users than titles (and X dense) P comes from the users' side instead, by the Woodbury identity
    P = (I - X^T (X X^T + lambda I)^-1 X) / lambda: a users x users inverse and a titles^2 x users product
    rather than a titles x titles inverse (``dual``); the same P up to rounding."""
    x = interactions(history)
    if x.dense is not None and x.shape[0] < x.shape[1]:
        return dual(x, lam)
    gram = x.gram() if gram is None else gram
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    del gram
    return p


def dual(history: np.ndarray | Interactions, lam: float = LAMBDA) -> np.ndarray:
    """P = (X^T X + lambda I)^-1 from the users' side: (I - X^T K X) / lambda with K = (X X^T + lambda I)^-1
    (Woodbury). At MovieLens latest-small's 671 users x 9,125 titles: a 671 x 671 inverse and one product,
    about 50 times fewer operations than a 9,125 x 9,125 inverse."""
    x = interactions(history)
    dense = x.rows(np.arange(x.shape[0])).astype(np.float64)
    kernel = dense @ dense.T
    kernel[np.diag_indices_from(kernel)] += lam
    p = dense.T @ np.linalg.solve(kernel, dense)
    p *= -1.0 / lam
    p[np.diag_indices_from(p)] += 1.0 / lam
    return p


def weights_of(p: np.ndarray, in_place: bool = False) -> np.ndarray:
    """EASE's B = I - P diagMat(1 / diag(P)) from P (``inverse``), float32; ``in_place`` overwrites P."""
    p = p if in_place else p.copy()
    p /= (-np.diag(p))[None, :]
    p[np.diag_indices_from(p)] = 0.0
    return p.astype(np.float32)


def with_users(p: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """P of X with the users ``rows`` (their rows of X, [users, titles]) added, without a new inverse: the
    Woodbury identity (A + R^T R)^-1 = P - P R^T (I + R P R^T)^-1 R P, A^-1 = P. Costs titles^2 x users, not
    titles^3: a refit on every user after a fit without a few thousand."""
    r = rows.astype(np.float64)
    pr = p @ r.T  # [titles, users]
    inner = np.eye(len(r)) + r @ pr
    return p - pr @ np.linalg.solve(inner, pr.T)


def fits(users: int, titles: int, max_items: int, max_flops: float = MAX_GRAM_FLOPS) -> str | None:
    """None if EASE and item-kNN fit in memory and time for this data, else the reason they are skipped."""
    if titles > max_items:
        return (
            f"{titles:,} titles > {max_items:,} (EASE and item-kNN need a {titles:,} x {titles:,} matrix; "
            f"EASE's inverse is {titles * titles * 8 / 2**30:.1f} GiB in float64)"
        )
    if users * titles > DENSE_CELLS and users * float(titles) ** 2 > max_flops:
        return f"{users:,} users x {titles:,}^2 titles > {max_flops:.2g} operations for X^T X"
    return None


def factors(
    history: np.ndarray | Interactions, lam: float = LAMBDA, rank: int = RANK, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(query factors [users, r], candidate factors [titles, r]) with query . candidate ~ EASE's scores."""
    x = interactions(history)
    if dual_scores_apply(x):
        u, s, vt = randomized_svd(scores(x, lam), max(1, min(rank, *x.shape)), seed=seed)
    else:
        u, s, vt = scores_svd(x, weights(x, lam), rank, seed)
    return (u * s).astype(np.float32), vt.T.astype(np.float32)


def dual_scores_apply(history: np.ndarray | Interactions) -> bool:
    """Whether ``scores`` takes the users' side: X dense, fewer users than titles."""
    x = interactions(history)
    return x.dense is not None and x.shape[0] < x.shape[1]


def scores(history: np.ndarray | Interactions, lam: float = LAMBDA) -> np.ndarray:
    """The users' EASE scores X B (float32 [users, titles]) without B: with K = (X X^T + lambda I)^-1, X P = K X
    (Woodbury, as ``dual``) and diag(P) = (1 - diag(X^T K X)) / lambda, so X B = X - (K X) diagMat(1 / diag(P)).
    A users x users inverse and users^2 x titles products: at 671 users x 9,125 titles no 9,125^2 matrix."""
    x = interactions(history)
    dense = x.rows(np.arange(x.shape[0])).astype(np.float64)
    kernel = dense @ dense.T
    kernel[np.diag_indices_from(kernel)] += lam
    kx = np.linalg.solve(kernel, dense)  # K X = X P
    diag = (1.0 - np.einsum("ui,ui->i", dense, kx)) / lam
    return (dense - kx / diag[None, :]).astype(np.float32)


def scores_svd(
    history: np.ndarray | Interactions, b: np.ndarray, rank: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U, s, V^T) of the rank-``rank`` truncated SVD of the users' EASE scores X B (X B never formed above
    ``DENSE_CELLS``; the rank is clamped to X's sizes)."""
    x = interactions(history)
    rank = max(1, min(rank, *x.shape))
    if x.dense is not None:
        return randomized_svd(x.times(b), rank, seed=seed)
    return randomized_svd(_Product(x, b), rank, seed=seed)


def fold_in_factors(
    history: np.ndarray | Interactions, b: np.ndarray, rank: int = RANK, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """EASE's fold-in at low rank: (item queries B V [titles, r], candidate factors V [titles, r]).

    A user unseen when B was fitted is scored x B (Steck 2019: EASE has no user parameters). With V the
    right singular vectors of the fitted users' scores X B (``scores_svd``), x B ~ x B V V^T = (x (B V)) V^T:
    the user's query is the sum of B V's rows over their titles, scored against V by a dot product."""
    _, _, vt = scores_svd(history, b, rank, seed)
    v = vt.T.astype(np.float32)
    return (b @ v).astype(np.float32), v


@dataclasses.dataclass(frozen=True)
class _Product:
    """X B as an operator (``product @ m``, ``a @ product``, ``product.T @ q``), never formed: a block of X at a
    time."""

    x: Interactions
    b: np.ndarray
    dtype: type = np.float32

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[0], self.b.shape[1]

    def __matmul__(self, m: np.ndarray) -> np.ndarray:  # (X B) m
        bm = self.b @ m
        out = np.empty((self.x.shape[0], m.shape[1]), dtype=np.float32)
        for rows, block in self.x.blocks():
            out[rows] = block @ bm
        return out

    __array_ufunc__ = None  # ``a @ product`` with an ndarray ``a`` comes to __rmatmul__

    def __rmatmul__(self, a: np.ndarray) -> np.ndarray:  # a (X B) = (X^T a^T)^T B
        xta = np.zeros((self.x.shape[1], a.shape[0]), dtype=np.float32)
        for rows, block in self.x.blocks():
            xta += block.T @ a[:, rows].T
        return xta.T @ self.b

    @property
    def T(self) -> _Transposed:  # numpy's name, so that randomized_svd takes either
        return _Transposed(self)


@dataclasses.dataclass(frozen=True)
class _Transposed:
    product: _Product

    def __matmul__(self, q: np.ndarray) -> np.ndarray:  # (X B)^T q = (q^T (X B))^T
        return (q.T @ self.product).T


def randomized_svd(
    matrix: np.ndarray | _Product, rank: int, oversample: int = 10, power_iterations: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``rank`` leading singular triplets of ``matrix`` (randomised range finder with power iterations; an
    exact SVD when the range finder would span the whole matrix anyway)."""
    width = min(rank + oversample, min(matrix.shape))
    if width >= min(matrix.shape) and isinstance(matrix, np.ndarray):  # the whole spectrum: an exact SVD is cheaper
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], width)).astype(matrix.dtype))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(matrix.T @ q)
        q, _ = np.linalg.qr(matrix @ q)
    u_small, s, vt = np.linalg.svd(q.T @ matrix, full_matrices=False)
    return (q @ u_small)[:, :rank], s[:rank], vt[:rank]
