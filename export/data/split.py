"""Train/test splits of the ratings, as row indices into the source order.

"random" is the seed tutorial's split, reproduced with the same tf.data ops so the indices are identical:

    tf.random.set_seed(42)
    shuffled = ratings.shuffle(100_000, seed=42, reshuffle_each_iteration=False)
    train = shuffled.take(80_000); test = shuffled.skip(80_000).take(20_000)

The shuffle order depends only on the seeds and the buffer size, never on the elements, so shuffling the
row numbers gives the rows the tutorial's ``take``/``skip`` yield. Like the tutorial, it leaves the global
seed set to ``seed``. Above ``TF_SHUFFLE_UP_TO`` rows (ML-10M and up) numpy draws the order instead
(``shuffled_order``).

"time" is the production-style split: the earliest ``train_fraction`` of ratings by timestamp train,
the rest test; equal timestamps keep source order (a stable sort).
"""

from __future__ import annotations

import logging

import numpy as np

from export import environment
from export.data.records import DataError, Ratings

logger = logging.getLogger(__name__)

KINDS = ("random", "time")


def train_size(n: int, train_fraction: float) -> int:
    """How many of ``n`` rows go to train: round(n * train_fraction) (80,000 of 100,000)."""
    return round(n * train_fraction)


def split(
    ratings: Ratings, kind: str = "random", seed: int = 42, train_fraction: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): int64 row indices into ``ratings``, disjoint, together every row once."""
    if kind not in KINDS:
        raise DataError(f"unknown split kind {kind!r}; use one of {', '.join(KINDS)}")
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1) (got {train_fraction})")
    n = len(ratings)
    if n == 0:
        raise DataError("cannot split zero ratings")
    n_train = train_size(n, train_fraction)
    if kind == "random":
        order = shuffled_order(n, seed)
    else:
        order = np.argsort(np.asarray(ratings.timestamp), kind="stable").astype(np.int64)
    logger.debug("split %s: %d train, %d test", kind, n_train, n - n_train)
    return order[:n_train], order[n_train:]


TF_SHUFFLE_UP_TO = 2_000_000  # rows; above, numpy's permutation (see shuffled_order)


def shuffled_order(n: int, seed: int) -> np.ndarray:
    """Row numbers 0..n-1 in the order ``shuffle(n, seed=seed, reshuffle_each_iteration=False)`` yields
    them after ``tf.random.set_seed(seed)``, up to ``TF_SHUFFLE_UP_TO`` rows (the tutorial's 100K, ML-1M).

    Above, ``np.random.default_rng(seed).permutation(n)``: an equally random order, but not tf.data's, whose
    shuffle buffer holds every row as a tensor (at 10M rows: 2 GiB more peak memory and over a minute here).
    """
    if n > TF_SHUFFLE_UP_TO:
        return np.random.default_rng(seed).permutation(n).astype(np.int64)
    environment.configure()  # a library caller that did not (export/environment.py)
    import tensorflow as tf  # deferred: the synthetic and GroupLens loaders need no TensorFlow

    tf.random.set_seed(seed)
    rows = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=False)
    return rows.batch(n).get_single_element().numpy().astype(np.int64)


def validation_split(
    ratings: Ratings, train_idx: np.ndarray, kind: str = "random", fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(fit_idx, validation_idx): a validation part carved out of ``train_idx`` (never out of the test part).

    "random" (with the seed's random split): a random ``fraction`` of the training ratings. "time": each
    user's latest training ratings, ``floor(fraction * count)`` of them (a user with too few keeps all), as a
    time split holds out the latest interactions. Raises DataError, before any training, if that leaves no
    validation or no fitting ratings.
    """
    if kind not in KINDS:
        raise DataError(f"unknown split kind {kind!r}; use one of {', '.join(KINDS)}")
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--validation-fraction must be in (0, 1), or 0 to train without validation (got {fraction})")
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if kind == "random":
        order = np.random.default_rng(seed).permutation(len(train_idx))
        held = np.zeros(len(train_idx), dtype=bool)
        held[order[: int(len(train_idx) * fraction)]] = True
    else:
        users = ratings.coded("user_id").codes[train_idx]
        times = np.asarray(ratings.timestamp)[train_idx]
        # By user, then time (stable: equal timestamps keep source order); the last rows of each user are held.
        order = np.lexsort((times, users))
        sorted_users = users[order]
        starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
        counts = np.diff(np.r_[starts, len(order)])
        held = np.zeros(len(train_idx), dtype=bool)
        for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
            take = int(count * fraction)
            if take:
                held[order[start + count - take : start + count]] = True
    fit_idx, validation_idx = train_idx[~held], train_idx[held]
    if len(validation_idx) == 0 or len(fit_idx) == 0:
        raise DataError(
            f"--validation-fraction {fraction} of {len(train_idx)} training ratings ({kind} split) "
            f"leaves {len(validation_idx)} for validation and {len(fit_idx)} to fit: raise it, "
            f"or use 0 to train without validation"
        )
    return fit_idx, validation_idx
