"""Training: ratings + split -> a fitted ``TwoTower`` and its embeddings as numpy arrays.

The input pipeline is the tutorial's (``train.shuffle(100_000).batch(8192).cache()`` for the seed preset,
the preset's buffer and batch otherwise). Keras shows its progress bar on a terminal; when stdout is not one
(a log, ``docker compose``), Keras prints one line per epoch and ``Progress`` adds a line every 30 s within
an epoch, so that a long epoch (minutes at ML-25M's size) is not silent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from export import distributed
from export.config import TrainConfig
from export.model import TwoTower, history_rows, make_optimizer, one_hot_table

logger = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30.0  # seconds between Progress lines within an epoch


@dataclasses.dataclass(frozen=True, eq=False)
class Trained:
    """A fitted model's embeddings. Row 0 of the user/movie arrays is the unknown id's."""

    config: TrainConfig
    user_ids: np.ndarray  # [U] str, the user vocabulary (sorted unique ids of all ratings)
    movie_titles: np.ndarray  # [M] str, the catalogue (sorted unique titles of the movies table)
    user_vectors: np.ndarray  # [U + 1, D] float32
    movie_vectors: np.ndarray  # [M + 1, D] float32
    movie_bias: np.ndarray  # [M + 1] float32 (zeros without a bias)
    history: dict
    seconds: float
    validation: dict | None = None  # with early stopping: metric, curve, best_epoch (see train())


def vocabularies(data, train_idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique user ids and titles (from the movies), as the tutorial builds them.

    Users come from the training ratings: a user with no training rating is an unknown user (row 0, the
    popular movies) rather than an untrained random vector. With the seed's random split every user has
    training ratings, so this is the tutorial's vocabulary; it matters for the time split."""
    coded = data.ratings.coded("user_id")
    codes = coded.codes if train_idx is None else coded.codes[train_idx]
    users = coded.vocabulary[np.flatnonzero(np.bincount(codes, minlength=len(coded.vocabulary)))]
    titles = np.unique(np.asarray(data.movies.movie_title).astype(str)).astype(object)
    return users, titles


def lookup_rows(data, column: str, vocabulary: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """What ``StringLookup(vocabulary, mask_token=None)`` gives the ratings' ``column`` (rows ``idx``): the
    position in ``vocabulary`` + 1, 0 for a value outside it; int32, computed on codes (no strings per row)."""
    coded = data.ratings.coded(column)
    if idx is not None:
        coded = coded[idx]
    index = {v: i + 1 for i, v in enumerate(vocabulary.tolist())}
    return coded.positions(index, 0).astype(np.int32)


def side_features(config: TrainConfig, data, users: np.ndarray, titles: np.ndarray):
    """Baked side-feature tables aligned with [unknown] + vocabulary, or None when the preset uses ids only."""
    user_side = None
    if config.user_features:
        ratings = data.ratings
        coded = ratings.coded("user_id")
        first = np.unique(coded.codes, return_index=True)[1]  # one rating per user: the features are per user
        parts = [
            one_hot_table(
                coded.vocabulary[coded.codes[first]], np.asarray(getattr(ratings, f))[first].astype(str), users
            )
            for f in config.user_features
        ]
        user_side = np.concatenate(parts, axis=1)
    movie_side = None
    if "movie_genres" in config.movie_features:
        multi_hot = np.asarray(data.movies.genre_multi_hot(), dtype=np.float32)
        first_of: dict[str, int] = {}
        for i, title in enumerate(np.asarray(data.movies.movie_title).tolist()):
            first_of.setdefault(title, i)
        movie_side = np.zeros((len(titles) + 1, multi_hot.shape[1]), dtype=np.float32)
        for row, title in enumerate(titles.tolist(), start=1):
            movie_side[row] = multi_hot[first_of[title]]
    return user_side, movie_side


def train_dataset(config: TrainConfig, data, train_idx: np.ndarray, users=None, titles=None) -> tf.data.Dataset:
    """The training ratings as the towers' lookup rows (int32), shuffled, batched and cached."""
    if users is None or titles is None:
        users, titles = vocabularies(data, train_idx)
    features = {
        "user_row": lookup_rows(data, "user_id", users, train_idx),
        "movie_row": lookup_rows(data, "movie_title", titles, train_idx),
    }
    ds = tf.data.Dataset.from_tensor_slices(features)
    return ds.shuffle(config.shuffle_buffer).batch(config.batch_size).cache()


def build_model(config: TrainConfig, data, train_idx: np.ndarray | None = None) -> TwoTower:
    users, titles = vocabularies(data, train_idx)
    user_side, movie_side = side_features(config, data, users, titles)
    history = probability = None
    if config.user_tower != "id" or config.log_q:
        item_rows = lookup_rows(data, "movie_title", titles, train_idx)
        if config.user_tower != "id":
            history = history_rows(lookup_rows(data, "user_id", users, train_idx), item_rows, len(users))
        if config.log_q:
            counts = np.bincount(item_rows, minlength=len(titles) + 1).astype(np.float64)
            probability = np.maximum(counts, 1.0) / max(counts.sum(), 1.0)  # unrated movies: as if rated once
    model = TwoTower(config, users, titles, user_side, movie_side, history, probability)
    model.compile(optimizer=make_optimizer(config))
    return model


class Ticker:
    """Reports ``line()`` every ``every_s`` seconds from a daemon thread until closed (nothing when it is None).

    What lets a long step say how it is going without a per-batch Keras hook: Keras waits for every step to finish
    before calling one (an epoch at ML-1M's size took 20 % longer with one). ``Progress`` ticks within an epoch;
    export/tune.py's search ticks over all its trials."""

    def __init__(self, line: Callable[[], str | None], every_s: float, report=print):
        self.line, self.every_s, self.report = line, every_s, report
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the thread (once; later calls do nothing)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._tick, name="export-progress", daemon=True)
            self.thread.start()

    def close(self) -> None:
        """Stops the thread and waits for it."""
        self._stop.set()
        if self.thread is not None:
            self.thread.join()

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            text = self.line()
            if text:
                self.report(text)


def steps_per_epoch(config: TrainConfig, ratings: int) -> int:
    """Batches in an epoch over ``ratings`` training ratings."""
    return -(-ratings // config.batch_size)


class Progress(tf.keras.callbacks.Callback):
    """A line every ``every_s`` seconds within an epoch: batches done of ``steps`` and the time left.

    A timer thread (``Ticker``) reads the optimizer's step counter; no per-batch hook. With ``every_s`` None
    there is no thread of its own: someone else's ticker reads ``line()`` / ``done()`` (export/tune.py)."""

    def __init__(self, steps: int, epochs: int, every_s: float | None, report=print, clock=time.monotonic):
        super().__init__()
        self.steps, self.epochs, self.every_s, self.report, self.clock = steps, epochs, every_s, report, clock
        self.epoch, self.start, self.first = 0, 0.0, 0
        self.started = False  # an epoch has begun (the model is there to read)
        self._ticker = Ticker(self.line, every_s, report) if every_s is not None else None

    @property
    def _thread(self) -> threading.Thread | None:
        return None if self._ticker is None else self._ticker.thread

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch, self.start, self.first = epoch, self.clock(), self._iterations()
        self.started = True
        if self._ticker is not None:
            self._ticker.start()

    def on_train_end(self, logs=None) -> None:
        self.close()

    def close(self) -> None:
        """Stops the timer thread (also when fit raised)."""
        if self._ticker is not None:
            self._ticker.close()

    def _iterations(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def done(self) -> int:
        """Batches done in the current epoch (0 before the first epoch began)."""
        return self._iterations() - self.first if self.started else 0

    def line(self) -> str | None:
        """The progress of the epoch now, or None before its first batch and after its last."""
        if not self.started:
            return None
        done, elapsed = self.done(), self.clock() - self.start
        if not 0 < done < self.steps:
            return None
        left = (self.steps - done) * elapsed / done
        return (
            f"epoch {self.epoch + 1}/{self.epochs}: batch {done:,} of {self.steps:,} ({done / self.steps:.0%}), "
            f"{elapsed:.0f} s, about {left:.0f} s left"
        )


class EarlyStopping(tf.keras.callbacks.Callback):
    """After each epoch, ``score(embeddings)`` on the validation part; keeps the best epoch's weights, stops
    after ``patience`` epochs without improvement (Keras' ``EarlyStopping(restore_best_weights=True)`` on a score
    Keras cannot compute) or, with ``time_limit_s``, at the first epoch end past that many seconds (what bounds a
    tuning trial, export/tune.py), and restores the best weights at the end."""

    def __init__(
        self,
        score: Callable[[Trained], float],
        config: TrainConfig,
        metric: str,
        report=print,
        time_limit_s: float | None = None,
        clock=time.monotonic,
    ):
        super().__init__()
        self.score, self.config, self.metric, self.report = score, config, metric, report
        self.curve: list[float] = []
        self.best_epoch, self.best_weights = 0, None
        self.clock = clock
        self.deadline = None if time_limit_s is None else clock() + time_limit_s
        self.stopped_by = "epochs"  # what ended training: "epochs", "patience" or "time"

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        value = float(self.score(embeddings(self.model, self.config)))
        self.curve.append(value)
        if self.best_epoch == 0 or value > self.curve[self.best_epoch - 1]:
            self.best_epoch, self.best_weights = epoch + 1, self.model.get_weights()
        self.report(f"epoch {epoch + 1}: validation {self.metric} {value:.4f} (best: epoch {self.best_epoch})")
        if epoch + 1 - self.best_epoch >= self.config.patience:
            self.model.stop_training, self.stopped_by = True, "patience"
        elif self.deadline is not None and self.clock() >= self.deadline and epoch + 1 < self.config.epochs:
            self.model.stop_training, self.stopped_by = True, "time"

    def on_train_end(self, logs=None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def summary(self) -> dict:
        return {
            "metric": self.metric,
            "curve": [round(v, 6) for v in self.curve],
            "best_epoch": self.best_epoch,
            "best": round(self.curve[self.best_epoch - 1], 6) if self.curve else None,
            "patience": self.config.patience,
            "max_epochs": self.config.epochs,
            "stopped_by": self.stopped_by,
        }


def train(
    config: TrainConfig,
    data,
    train_idx: np.ndarray,
    verbose: int | None = None,
    validation: Callable[[Trained], float] | None = None,
    metric: str = "",
    report=print,
    progress: Progress | None = None,
    time_limit_s: float | None = None,
) -> Trained:
    """Fit the preset's model on ``train_idx``; the global seed is set first (``tf.random.set_seed``).

    With ``validation`` (a score of the embeddings on held-out ratings, higher is better), training stops
    early on it (``config.patience``) and the best epoch's weights are kept; ``Trained.validation`` records
    the curve; ``time_limit_s`` also stops it at the first epoch end past that many seconds. ``progress`` is a
    ``Progress`` without a thread of its own that someone else's ticker reads
    (export/tune.py); without it, a log (``verbose`` 2) gets one that reports every ``PROGRESS_EVERY_S``."""
    tf.random.set_seed(config.seed)
    strategy = distributed.strategy()  # across workers, the variables are mirrored on each (export/distributed.py)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(config, data, train_idx)
    dataset = train_dataset(config, data, train_idx, model.user_model.vocabulary, model.movie_model.vocabulary)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    logger.info("training preset %s: %d ratings, %d epochs", config.preset, len(train_idx), config.epochs)
    stopper = EarlyStopping(validation, config, metric, report, time_limit_s) if validation is not None else None
    callbacks: list[tf.keras.callbacks.Callback] = [stopper] if stopper is not None else []
    if progress is None and verbose == 2:  # one line per epoch from Keras: say how a long epoch is going
        steps = steps_per_epoch(config, len(train_idx))
        progress = Progress(steps, config.epochs, every_s=PROGRESS_EVERY_S, report=report)
    if progress is not None:
        callbacks.append(progress)
    start = time.perf_counter()
    try:
        history = model.fit(dataset, epochs=config.epochs, verbose=verbose, callbacks=callbacks or None)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - start
    trained = embeddings(model, config, history.history, seconds)
    if stopper is not None:
        trained = dataclasses.replace(trained, validation=stopper.summary())
    return trained


def embeddings(model: TwoTower, config: TrainConfig, history: dict | None = None, seconds: float = 0.0) -> Trained:
    users = model.user_model.vocabulary
    titles = model.movie_model.vocabulary
    user_vectors = model.query_vectors(tf.range(len(users) + 1)).numpy().astype(np.float32)
    movie_rows = tf.range(len(titles) + 1)
    movie_vectors = model.candidate_vectors(movie_rows).numpy().astype(np.float32)
    movie_bias = model.bias_of(movie_rows).numpy().astype(np.float32)
    return Trained(
        config=config,
        user_ids=users,
        movie_titles=titles,
        user_vectors=user_vectors,
        movie_vectors=movie_vectors,
        movie_bias=movie_bias,
        history={k: [float(x) for x in v] for k, v in (history or {}).items()},
        seconds=seconds,
    )
