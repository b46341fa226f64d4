"""The two-tower retrieval model: a user tower and a movie tower whose dot product is the affinity.

Both towers take raw string ids (what the serving signatures receive). Side features (user age, gender,
occupation; movie genres) are optional: they are baked into the tower as a constant table looked up by id,
so serving still needs only the id. The ``seed`` preset uses ids only, exactly as the tutorial:
``StringLookup(vocabulary, mask_token=None)`` then ``Embedding(len(vocabulary) + 1, D)``.

Two losses:
- ``in_batch_softmax``: ``tfrs.tasks.Retrieval`` (the tutorial's), without the FactorizedTopK metrics
  during training (evaluation computes them; they make training about 4x slower); with ``log_q`` each
  candidate's logit is corrected by log(its share of the training ratings), the sampling bias of in-batch
  negatives;
- ``full_softmax``: a softmax over the whole catalogue plus a per-movie bias (1.7k movies: cheap), which
  does not over-penalise popular movies the way in-batch negatives do.

Options that keep serving a dot product of baked vectors: a bag-of-items user tower (``user_tower``), cosine
similarity over a temperature (``temperature``: unit vectors, the user's scaled by 1/T), AdamW's weight decay.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from export.config import TrainConfig


def one_hot_table(keys: np.ndarray, values: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Rows aligned with ``[OOV] + vocabulary``: the one-hot encoding of each id's categorical value."""
    categories = sorted(set(values.tolist()))
    position = {c: i for i, c in enumerate(categories)}
    by_key = dict(zip(keys.tolist(), values.tolist(), strict=True))
    table = np.zeros((len(vocabulary) + 1, len(categories)), dtype=np.float32)
    for row, key in enumerate(vocabulary.tolist(), start=1):
        if key in by_key:
            table[row, position[by_key[key]]] = 1.0
    return table


def history_rows(user_rows: np.ndarray, item_rows: np.ndarray, users: int) -> tf.RaggedTensor:
    """Each lookup row's training items (lookup rows of the other tower), as a ragged [users + 1, None]."""
    order = np.argsort(user_rows, kind="stable")
    lengths = np.bincount(user_rows, minlength=users + 1)
    return tf.RaggedTensor.from_row_lengths(tf.constant(item_rows[order], tf.int32), tf.constant(lengths, tf.int64))


class Tower(tf.keras.Model):
    """String id -> embedding: ``StringLookup`` + ``Embedding``, plus optional baked side features and history.

    ``side`` is a float matrix with one row per lookup index (row 0 = unknown id), projected to the
    embedding dimension and added to the id embedding. ``history`` (user tower only: ``history_rows``) adds
    the mean of an embedding of the user's training items, a bag of items as in SVD++ (Koren, KDD 2008) or
    YouTube's candidate generator (Covington et al., RecSys 2016). The vectors are computed per user at
    export and baked into the query table, so serving still takes only the id.
    """

    def __init__(
        self,
        vocabulary: np.ndarray,
        dimension: int,
        l2: float = 0.0,
        side: np.ndarray | None = None,
        name: str | None = None,
        history: tf.RaggedTensor | None = None,
        history_items: int = 0,
        ids: bool = True,
        lazy_l2: bool = False,
        init_seed: int | None = None,
    ):
        super().__init__(name=name)

        # init_seed: initial weights drawn from their own seeds (init_seed, +1, +2), the same in every process
        # and under a distribution strategy (export/distributed.py); None: Keras' defaults under the global
        # seed (the tutorial's way).
        def init(default: str, offset: int):
            if init_seed is None:
                return default
            if default == "glorot_uniform":
                return tf.keras.initializers.GlorotUniform(seed=init_seed + offset)
            return tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=init_seed + offset)  # Keras' "uniform"

        regularizer = tf.keras.regularizers.l2(l2) if l2 > 0 else None
        self.vocabulary = np.asarray(vocabulary, dtype=object)
        self.lookup = tf.keras.layers.StringLookup(vocabulary=list(self.vocabulary), mask_token=None)
        # lazy_l2: the id embedding's L2 penalty falls on the rows a batch looks up (``penalty``), not on the
        # whole table at every step. With Adam a whole-table penalty moves every row towards zero at the
        # learning rate on every step, while a row's data gradient comes only in the batches it is in: on a
        # synthetic 1M-rating set (6,040 users, each in 1 of ~6 batches) the user vectors collapsed and the
        # validation hit rate stayed at popularity's from the first epoch.
        self.l2, self.lazy_l2 = l2, lazy_l2
        self.embedding = tf.keras.layers.Embedding(
            len(self.vocabulary) + 1,
            dimension,
            embeddings_initializer=init("uniform", 0),
            embeddings_regularizer=None if lazy_l2 else regularizer,
        )
        self.side = None
        if side is not None and side.shape[1] > 0:
            self.side = tf.constant(side, dtype=tf.float32)
            self.side_projection = tf.keras.layers.Dense(
                dimension, use_bias=False, kernel_initializer=init("glorot_uniform", 1), kernel_regularizer=regularizer
            )
        self.history, self.ids = history, ids
        if history is not None:
            self.history_embedding = tf.keras.layers.Embedding(
                history_items + 1,
                dimension,
                embeddings_initializer=init("uniform", 2),
                embeddings_regularizer=regularizer,
            )
            self.history_embedding.build((None,))  # its table is read directly below

    def embed_indices(self, indices: tf.Tensor, leave_out: tf.Tensor | None = None) -> tf.Tensor:
        """Vectors of lookup rows ``indices``; ``leave_out`` (training: the target item of each row) is left out
        of the bag of items, so that the model cannot learn to predict an item from itself."""
        out = self.embedding(indices) if self.ids else 0.0
        if self.side is not None:
            out = out + self.side_projection(tf.gather(self.side, indices))
        if self.history is not None:
            items = tf.gather(self.history, indices)
            count = tf.cast(items.row_lengths(), tf.float32)
            # A sparse lookup-and-sum: 4x faster than summing a ragged lookup here (forward and gradient).
            total = tf.nn.embedding_lookup_sparse(
                self.history_embedding.embeddings, items.to_sparse(), None, combiner="sum"
            )
            total = tf.pad(total, [[0, tf.shape(indices)[0] - tf.shape(total)[0]], [0, 0]])
            if leave_out is not None:
                # Only items really in the bag are left out: a target is always in its user's training items.
                total = total - self.history_embedding(leave_out)
                count = count - 1.0
            out = out + total / tf.maximum(count, 1.0)[:, tf.newaxis]
        return out

    def penalty(self, indices: tf.Tensor) -> tf.Tensor:
        """With ``lazy_l2``: L2 times the squared norms of the id embedding's rows ``indices`` (0 otherwise)."""
        if not (self.lazy_l2 and self.l2 > 0):
            return tf.constant(0.0)
        return self.l2 * tf.reduce_sum(tf.square(self.embedding(indices)))

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return self.embed_indices(self.lookup(ids))

    def all_indices(self) -> tf.Tensor:
        """Lookup indices of the vocabulary rows (1..V; 0 is the unknown id)."""
        return tf.range(1, len(self.vocabulary) + 1)


class TwoTower(tfrs.Model):
    """User tower x movie tower, trained with the configured loss."""

    def __init__(
        self,
        config: TrainConfig,
        user_ids: np.ndarray,
        movie_titles: np.ndarray,
        user_side: np.ndarray | None = None,
        movie_side: np.ndarray | None = None,
        history: tf.RaggedTensor | None = None,
        candidate_probability: np.ndarray | None = None,
    ):
        super().__init__()
        self.config = config
        # log-Q correction of in-batch negatives (Yi et al., "Sampling-bias-corrected neural modeling for large
        # corpus item recommendations", RecSys 2019): each movie's share of the training ratings, per lookup row.
        self.candidate_probability = None
        if config.log_q and candidate_probability is not None:
            self.candidate_probability = tf.constant(candidate_probability, tf.float32)
        d = config.embedding_dimension
        # Users: L2 on the batch's rows. Movies: on the whole table for the full softmax (every row is in every
        # step's logits), on the batch's rows for the in-batch softmax.
        self.user_model = Tower(
            user_ids,
            d,
            config.l2,
            user_side,
            name="user_model",
            history=history,
            history_items=len(movie_titles),
            ids=config.user_tower != "history",
            lazy_l2=True,
            init_seed=None if not config.seeded_init else 1000 * config.seed,
        )
        self.movie_model = Tower(
            movie_titles,
            d,
            config.l2,
            movie_side,
            name="movie_model",
            lazy_l2=config.loss == "in_batch_softmax",
            init_seed=None if not config.seeded_init else 1000 * config.seed + 10,
        )
        self.movie_bias = None
        if config.movie_bias:
            self.movie_bias = tf.keras.layers.Embedding(
                len(movie_titles) + 1, 1, embeddings_initializer="zeros", name="movie_bias"
            )
        if config.loss == "in_batch_softmax":
            self.task = tfrs.tasks.Retrieval()
        else:
            self.task = None

    def bias_of(self, indices: tf.Tensor) -> tf.Tensor:
        if self.movie_bias is None:
            return tf.zeros(tf.shape(indices), dtype=tf.float32)
        return tf.squeeze(self.movie_bias(indices), axis=-1)

    def query_vectors(self, user_rows: tf.Tensor, leave_out: tf.Tensor | None = None) -> tf.Tensor:
        """What is served as the user's query: with a temperature, the unit vector over the temperature."""
        vectors = self.user_model.embed_indices(user_rows, leave_out=leave_out)
        if self.config.temperature > 0:
            vectors = tf.math.l2_normalize(vectors, axis=-1) / self.config.temperature
        return vectors

    def candidate_vectors(self, movie_rows: tf.Tensor) -> tf.Tensor:
        vectors = self.movie_model.embed_indices(movie_rows)
        if self.config.temperature > 0:
            vectors = tf.math.l2_normalize(vectors, axis=-1)
        return vectors

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        """The loss of a batch: of lookup rows (``user_row``, ``movie_row``: what export/train.py feeds) or of
        raw ids (``user_id``, ``movie_title``)."""
        if "movie_row" in features:
            movie_rows, user_rows = features["movie_row"], features["user_row"]
        else:
            movie_rows = self.movie_model.lookup(features["movie_title"])
            user_rows = self.user_model.lookup(features["user_id"])
        queries = self.query_vectors(user_rows, leave_out=movie_rows)
        penalty = self.user_model.penalty(user_rows) + self.movie_model.penalty(movie_rows)
        if self.task is not None:
            candidates = self.candidate_vectors(movie_rows)
            probability = None
            if self.candidate_probability is not None:
                probability = tf.gather(self.candidate_probability, movie_rows)
            return (
                self.task(queries, candidates, candidate_sampling_probability=probability, compute_metrics=False)
                + penalty
            )
        # Full softmax over every catalogue row (row 0, the unknown title, is never a label).
        all_rows = tf.range(len(self.movie_model.vocabulary) + 1)
        logits = tf.matmul(queries, self.candidate_vectors(all_rows), transpose_b=True)
        logits = logits + self.bias_of(all_rows)[tf.newaxis, :]
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=movie_rows, logits=logits)
        # Across workers (export/distributed.py) the gradients are summed: each worker's share of the mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return tf.reduce_mean(losses) / replicas + penalty


class LazyAdam(tf.keras.optimizers.legacy.Adam):
    """Adam whose sparse updates (the embedding tables') touch only the rows a batch looked up: their moments
    and their values, as TensorFlow Addons' LazyAdam did (Addons has ended and has no build for this
    TensorFlow). Keras' Adams decay every row's moments and move every row at every step. A step here (batch
    1,024, in-batch softmax, D = 64): at ML-10M's sizes (70k users, 10.7k titles) 103 ms with Adam, 45 ms
    with the legacy Adam, 26 ms with LazyAdam; at ML-25M's (162k, 62k) 103 ms with the legacy Adam, 27 ms with
    LazyAdam. Dense variables (side-feature projections) get Adam's usual update."""

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        device, dtype = var.device, var.dtype.base_dtype
        c = (apply_state or {}).get((device, dtype)) or self._fallback_apply_state(device, dtype)
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        # Indices arrive de-duplicated (the legacy optimizer sums repeated rows first).
        m_rows = c["beta_1_t"] * tf.gather(m, indices) + c["one_minus_beta_1_t"] * grad
        v_rows = c["beta_2_t"] * tf.gather(v, indices) + c["one_minus_beta_2_t"] * tf.square(grad)
        return tf.group(
            m.scatter_update(tf.IndexedSlices(m_rows, indices)),
            v.scatter_update(tf.IndexedSlices(v_rows, indices)),
            var.scatter_sub(tf.IndexedSlices(c["lr"] * m_rows / (tf.sqrt(v_rows) + c["epsilon"]), indices)),
        )


def make_optimizer(config: TrainConfig) -> tf.keras.optimizers.Optimizer:
    if config.optimizer == "adagrad":
        return tf.keras.optimizers.Adagrad(learning_rate=config.learning_rate)
    if config.optimizer == "lazy_adam":
        return LazyAdam(learning_rate=config.learning_rate)
    if config.weight_decay > 0:  # decoupled weight decay (Loshchilov & Hutter, ICLR 2019) instead of an L2 loss
        return tf.keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
    return tf.keras.optimizers.Adam(learning_rate=config.learning_rate)
