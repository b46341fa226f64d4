"""Training the `seed` preset vs the seed tutorial's own code, same data, same machine, same run.

    python benchmarks/export_training.py [--ratings 100000] [--epochs 3]

Both train on the same synthetic MovieLens-100K-shaped data with the seed's split. The tutorial's model
("Recommending movies: retrieval", https://www.tensorflow.org/recommenders/examples/basic_retrieval)
computes ``tfrs.metrics.FactorizedTopK`` over the whole catalogue on every batch; the
export's `seed` preset does not (evaluation computes the metrics once, vectorised). Target: ours takes at
most 1/3 of the tutorial's time. Prints both times (model construction + fit) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def tutorial(ratings_arrays: dict, movie_titles: np.ndarray, train_idx: np.ndarray, epochs: int) -> float:
    """The tutorial's code, verbatim apart from reading the same arrays instead of tfds."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    start = time.perf_counter()
    ratings = tf.data.Dataset.from_tensor_slices({k: v[train_idx] for k, v in ratings_arrays.items()})
    movies = tf.data.Dataset.from_tensor_slices(movie_titles)
    unique_movie_titles = np.unique(np.concatenate(list(movies.batch(1_000))))
    unique_user_ids = np.unique(ratings_arrays["user_id"])
    embedding_dimension = 32
    user_model = tf.keras.Sequential(
        [
            tf.keras.layers.StringLookup(vocabulary=unique_user_ids, mask_token=None),
            tf.keras.layers.Embedding(len(unique_user_ids) + 1, embedding_dimension),
        ]
    )
    movie_model = tf.keras.Sequential(
        [
            tf.keras.layers.StringLookup(vocabulary=unique_movie_titles, mask_token=None),
            tf.keras.layers.Embedding(len(unique_movie_titles) + 1, embedding_dimension),
        ]
    )
    metrics = tfrs.metrics.FactorizedTopK(candidates=movies.batch(128).map(movie_model))
    task = tfrs.tasks.Retrieval(metrics=metrics)

    class MovielensModel(tfrs.Model):
        def __init__(self, user_model, movie_model):
            super().__init__()
            self.movie_model = movie_model
            self.user_model = user_model
            self.task = task

        def compute_loss(self, features, training=False):
            user_embeddings = self.user_model(features["user_id"])
            positive_movie_embeddings = self.movie_model(features["movie_title"])
            return self.task(user_embeddings, positive_movie_embeddings)

    model = MovielensModel(user_model, movie_model)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    cached_train = ratings.shuffle(100_000).batch(8192).cache()
    model.fit(cached_train, epochs=epochs, verbose=2)
    return time.perf_counter() - start


def ours(data, train_idx: np.ndarray, epochs: int) -> float:
    import dataclasses

    from export.config import SEED
    from export.train import train

    start = time.perf_counter()
    train(dataclasses.replace(SEED, epochs=epochs), data, train_idx, verbose=2)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import tensorflow as tf

    from export.data import load, split
    from export.data.synthetic import SyntheticSpec

    data = load("synthetic", synthetic=SyntheticSpec(ratings=args.ratings))
    train_idx, _ = split(data.ratings)
    arrays = {
        "user_id": np.asarray(data.ratings.user_id).astype(str),
        "movie_title": np.asarray(data.ratings.movie_title).astype(str),
    }
    titles = np.asarray(data.movies.movie_title).astype(str)

    tf.random.set_seed(42)
    seed_seconds = tutorial(arrays, titles, train_idx, args.epochs)
    our_seconds = ours(data, train_idx, args.epochs)
    ratio = our_seconds / seed_seconds
    print(f"\n{len(train_idx)} training ratings, {args.epochs} epochs, {os.cpu_count()} CPUs")
    print(f"seed tutorial code (FactorizedTopK every batch): {seed_seconds:7.2f} s")
    print(f"export `seed` preset:                            {our_seconds:7.2f} s")
    print(f"ratio ours / tutorial: {ratio:.3f} (target <= 0.333) -> {'OK' if ratio <= 1 / 3 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
