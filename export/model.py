"""The two-tower retrieval model: a user tower and a movie tower whose dot product is the affinity.

Both towers take raw string ids (what the serving signatures receive). Side features (user age, gender,
occupation; movie genres) are optional: they are baked into the tower as a constant table looked up by id,
so serving still needs only the id. The ``seed`` preset uses ids only, exactly as the tutorial:
``StringLookup(vocabulary, mask_token=None)`` then ``Embedding(len(vocabulary) + 1, D)``.

Two losses:
- ``in_batch_softmax``: ``tfrs.tasks.Retrieval`` (the tutorial's), without the FactorizedTopK metrics
  during training (evaluation computes them; they make training about 4x slower).
- ``full_softmax``: a softmax over the whole catalogue plus a per-movie bias (1.7k movies: cheap), which
  does not over-penalise popular movies the way in-batch negatives do.
"""

from __future__ import annotations

import export  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from export.config import TrainConfig


def one_hot_table(keys: np.ndarray, values: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Rows aligned with ``[OOV] + vocabulary``: the one-hot encoding of each id's categorical value."""
    categories = sorted(set(values.tolist()))
    position = {c: i for i, c in enumerate(categories)}
    by_key = dict(zip(keys.tolist(), values.tolist()))
    table = np.zeros((len(vocabulary) + 1, len(categories)), dtype=np.float32)
    for row, key in enumerate(vocabulary.tolist(), start=1):
        if key in by_key:
            table[row, position[by_key[key]]] = 1.0
    return table


class Tower(tf.keras.Model):
    """String id -> embedding: ``StringLookup`` + ``Embedding``, plus optional baked side features.

    ``side`` is a float matrix with one row per lookup index (row 0 = unknown id), projected to the
    embedding dimension and added to the id embedding.
    """

    def __init__(self, vocabulary: np.ndarray, dimension: int, l2: float = 0.0,
                 side: np.ndarray | None = None, name: str | None = None):
        super().__init__(name=name)
        regularizer = tf.keras.regularizers.l2(l2) if l2 > 0 else None
        self.vocabulary = np.asarray(vocabulary, dtype=object)
        self.lookup = tf.keras.layers.StringLookup(vocabulary=list(self.vocabulary), mask_token=None)
        self.embedding = tf.keras.layers.Embedding(len(self.vocabulary) + 1, dimension,
                                                   embeddings_regularizer=regularizer)
        self.side = None
        if side is not None and side.shape[1] > 0:
            self.side = tf.constant(side, dtype=tf.float32)
            self.side_projection = tf.keras.layers.Dense(dimension, use_bias=False,
                                                         kernel_regularizer=regularizer)

    def embed_indices(self, indices: tf.Tensor) -> tf.Tensor:
        out = self.embedding(indices)
        if self.side is not None:
            out = out + self.side_projection(tf.gather(self.side, indices))
        return out

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return self.embed_indices(self.lookup(ids))

    def all_indices(self) -> tf.Tensor:
        """Lookup indices of the vocabulary rows (1..V; 0 is the unknown id)."""
        return tf.range(1, len(self.vocabulary) + 1)


class TwoTower(tfrs.Model):
    """User tower x movie tower, trained with the configured loss."""

    def __init__(self, config: TrainConfig, user_ids: np.ndarray, movie_titles: np.ndarray,
                 user_side: np.ndarray | None = None, movie_side: np.ndarray | None = None):
        super().__init__()
        self.config = config
        d = config.embedding_dimension
        self.user_model = Tower(user_ids, d, config.l2, user_side, name="user_model")
        self.movie_model = Tower(movie_titles, d, config.l2, movie_side, name="movie_model")
        self.movie_bias = None
        if config.movie_bias:
            self.movie_bias = tf.keras.layers.Embedding(len(movie_titles) + 1, 1, embeddings_initializer="zeros",
                                                        name="movie_bias")
        if config.loss == "in_batch_softmax":
            self.task = tfrs.tasks.Retrieval()
        else:
            self.task = None

    def bias_of(self, indices: tf.Tensor) -> tf.Tensor:
        if self.movie_bias is None:
            return tf.zeros(tf.shape(indices), dtype=tf.float32)
        return tf.squeeze(self.movie_bias(indices), axis=-1)

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        queries = self.user_model(features["user_id"])
        movie_rows = self.movie_model.lookup(features["movie_title"])
        if self.task is not None:
            candidates = self.movie_model.embed_indices(movie_rows)
            return self.task(queries, candidates, compute_metrics=False)
        # Full softmax over every catalogue row (row 0, the unknown title, is never a label).
        all_rows = tf.range(len(self.movie_model.vocabulary) + 1)
        logits = tf.matmul(queries, self.movie_model.embed_indices(all_rows), transpose_b=True)
        logits = logits + self.bias_of(all_rows)[tf.newaxis, :]
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=movie_rows, logits=logits)
        return tf.reduce_mean(losses)


def make_optimizer(config: TrainConfig) -> tf.keras.optimizers.Optimizer:
    if config.optimizer == "adagrad":
        return tf.keras.optimizers.Adagrad(learning_rate=config.learning_rate)
    return tf.keras.optimizers.Adam(learning_rate=config.learning_rate)
