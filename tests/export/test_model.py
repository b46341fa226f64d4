"""Towers: side features baked in by id, and users without training ratings treated as unknown."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from export.config import DEFAULT
from export.data import load, split
from export.data.synthetic import SyntheticSpec
from export.train import side_features, train, vocabularies


def _data():
    return load("synthetic", synthetic=SyntheticSpec.tiny(5))


def test_side_feature_tables_align_with_the_vocabulary_and_leave_the_unknown_row_empty():
    data = _data()
    config = dataclasses.replace(
        DEFAULT, user_features=("user_gender", "user_occupation"), movie_features=("movie_genres",)
    )
    users, titles = vocabularies(data)
    user_side, movie_side = side_features(config, data, users, titles)
    assert user_side.shape[0] == len(users) + 1 and movie_side.shape == (len(titles) + 1, 19)
    assert not user_side[0].any() and not movie_side[0].any()
    ratings = data.ratings
    row = 1 + list(users).index(str(ratings.user_id[0]))
    assert user_side[row].sum() == 2  # one gender, one occupation
    first = list(np.asarray(data.movies.movie_title)).index(titles[0])
    assert set(np.flatnonzero(movie_side[1])) == set(data.movies.movie_genres[first])


def test_a_tower_with_side_features_adds_their_projection_to_the_id_embedding():
    import tensorflow as tf

    from export.train import build_model

    data = _data()
    train_idx, _ = split(data.ratings)
    config = dataclasses.replace(DEFAULT, epochs=1, movie_features=("movie_genres",), user_features=("user_age",))
    model = build_model(config, data, train_idx)
    tower = model.movie_model
    rows = tf.constant([0, 1, 2])
    ids_only = tower.embedding(rows).numpy()
    with_side = tower.embed_indices(rows).numpy()
    projected = tower.side_projection(tf.gather(tower.side, rows)).numpy()
    np.testing.assert_allclose(with_side, ids_only + projected, rtol=1e-5, atol=1e-6)
    assert not projected[0].any() and projected[1].any()  # the unknown title has no genres
    trained = train(config, data, train_idx, verbose=0)
    assert np.isfinite(trained.user_vectors).all() and np.isfinite(trained.movie_vectors).all()


def test_users_without_training_ratings_are_unknown_users():
    data = _data()
    train_idx, _test_idx = split(data.ratings, kind="time")
    users, _ = vocabularies(data, train_idx)
    train_users = set(np.asarray(data.ratings.user_id)[train_idx].astype(str).tolist())
    assert set(users.tolist()) == train_users
    users_all, _ = vocabularies(data)
    assert set(users_all.tolist()) >= train_users


@pytest.mark.slow
def test_a_bag_of_items_user_tower_averages_the_training_items_and_leaves_the_target_out():
    import tensorflow as tf

    from export.train import build_model

    data = _data()
    train_idx, _ = split(data.ratings)
    config = dataclasses.replace(DEFAULT, epochs=1, user_tower="id+history")
    model = build_model(config, data, train_idx)
    tower = model.user_model
    users = np.asarray(data.ratings.user_id)[train_idx].astype(str)
    titles = np.asarray(data.ratings.movie_title)[train_idx].astype(str)
    row = 1 + list(tower.vocabulary).index(users[0])
    mine = sorted(1 + list(model.movie_model.vocabulary).index(t) for t in titles[users == users[0]])
    assert sorted(tower.history[row].numpy().tolist()) == mine  # exactly the user's training titles
    assert tower.history[0].shape[0] == 0  # the unknown user has none
    bag = tower.history_embedding(tf.constant(mine)).numpy()
    own = tower.embedding(tf.constant([row])).numpy()[0]
    served = tower.embed_indices(tf.constant([row, 0])).numpy()
    np.testing.assert_allclose(served[0], own + bag.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served[1], tower.embedding(tf.constant([0])).numpy()[0], rtol=1e-6)
    target = mine[0]
    trained_on = tower.embed_indices(tf.constant([row]), leave_out=tf.constant([target])).numpy()[0]
    np.testing.assert_allclose(trained_on, own + bag[1:].mean(axis=0), rtol=1e-5, atol=1e-6)
    # "history" alone: no id embedding, and the trained vectors are what is served.
    only = build_model(dataclasses.replace(config, user_tower="history"), data, train_idx).user_model
    np.testing.assert_allclose(
        only.embed_indices(tf.constant([row])).numpy()[0],
        only.history_embedding(tf.constant(mine)).numpy().mean(axis=0),
        rtol=1e-5,
        atol=1e-6,
    )
    trained = train(config, data, train_idx, verbose=0)
    assert trained.user_vectors.shape == (len(trained.user_ids) + 1, config.embedding_dimension)


def test_a_temperature_serves_unit_movie_vectors_and_user_vectors_of_norm_one_over_it():
    data = _data()
    train_idx, _ = split(data.ratings)
    trained = train(dataclasses.replace(DEFAULT, epochs=1, temperature=0.2), data, train_idx, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(trained.movie_vectors[1:], axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(trained.user_vectors[1:], axis=1), 5.0, rtol=1e-4)


@pytest.mark.slow
def test_log_q_correction_uses_each_movies_share_of_the_training_ratings():
    from export.train import build_model

    data = _data()
    train_idx, _ = split(data.ratings)
    config = dataclasses.replace(DEFAULT, loss="in_batch_softmax", log_q=True, epochs=1)
    model = build_model(config, data, train_idx)
    probability = model.candidate_probability.numpy()
    titles = np.asarray(data.ratings.movie_title)[train_idx].astype(str)
    vocabulary = list(model.movie_model.vocabulary)
    title = titles[0]
    assert probability[1 + vocabulary.index(title)] == np.float32((titles == title).sum() / len(titles))
    assert build_model(dataclasses.replace(config, log_q=False), data, train_idx).candidate_probability is None
    corrected = train(config, data, train_idx, verbose=0)
    plain = train(dataclasses.replace(config, log_q=False), data, train_idx, verbose=0)
    assert corrected.history["loss"] != plain.history["loss"]  # the correction changes the logits


def test_weight_decay_uses_adamw():
    import tensorflow as tf

    from export.model import make_optimizer

    assert isinstance(make_optimizer(dataclasses.replace(DEFAULT, weight_decay=0.01)), tf.keras.optimizers.AdamW)
    assert not isinstance(make_optimizer(DEFAULT), tf.keras.optimizers.AdamW)


def test_l2_falls_on_the_rows_a_batch_looks_up_for_users_and_on_the_whole_table_for_a_full_softmax():
    import tensorflow as tf

    from export.train import build_model

    data = _data()
    train_idx, _ = split(data.ratings)
    model = build_model(dataclasses.replace(DEFAULT, epochs=1), data, train_idx)
    users = model.user_model
    rows = tf.constant([1, 1, 3])
    users.embedding(rows), model.movie_model.embedding(rows)  # built: their weights (and penalties) exist
    expected = DEFAULT.l2 * float(tf.reduce_sum(tf.square(users.embedding(rows))))
    assert float(users.penalty(rows)) == pytest.approx(expected, rel=1e-5) and expected > 0
    assert not users.embedding.losses  # no whole-table penalty on the users
    assert model.movie_model.embedding.losses and float(model.movie_model.penalty(rows)) == 0.0
    in_batch = build_model(dataclasses.replace(DEFAULT, loss="in_batch_softmax", epochs=1), data, train_idx)
    in_batch.movie_model.embedding(rows)
    assert not in_batch.movie_model.embedding.losses and float(in_batch.movie_model.penalty(rows)) > 0
    seed = build_model(dataclasses.replace(DEFAULT, l2=0.0, epochs=1), data, train_idx)
    assert float(seed.user_model.penalty(rows)) == 0.0


def test_lazy_adam_moves_only_the_rows_a_batch_looked_up_and_moves_them_as_adam_does():
    import tensorflow as tf

    from export.model import LazyAdam

    start = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    rows = tf.constant([1, 4, 1])  # a repeated row: its gradients are summed, as Adam sums them
    lazy, dense = tf.Variable(start), tf.Variable(start)
    lazy_opt, dense_opt = LazyAdam(learning_rate=0.1), tf.keras.optimizers.legacy.Adam(learning_rate=0.1)
    for _step in range(3):
        for var, opt in ((lazy, lazy_opt), (dense, dense_opt)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(tf.gather(var, rows) - 1.0))
            opt.apply_gradients([(tape.gradient(loss, var), var)])
        untouched = [0, 2, 3, 5]
        assert np.array_equal(lazy.numpy()[untouched], start[untouched])  # never looked up: never moved
        # Rows looked up at every step get Adam's update exactly (the dense Adam also leaves the others alone
        # here: their gradient and moments are zero).
        np.testing.assert_allclose(lazy.numpy(), dense.numpy(), rtol=1e-6, atol=1e-7)
    # A row missing from a batch stays where it is under LazyAdam; Adam moves it on its momentum.
    lazy_before, dense_before = lazy.numpy()[1].copy(), dense.numpy()[1].copy()
    for var, opt in ((lazy, lazy_opt), (dense, dense_opt)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.gather(var, tf.constant([4])) - 1.0))
        opt.apply_gradients([(tape.gradient(loss, var), var)])
    assert np.array_equal(lazy.numpy()[1], lazy_before)
    assert not np.allclose(dense.numpy()[1], dense_before)


def test_large_data_gets_lazy_adam_a_short_patience_and_a_bounded_number_of_epochs():
    from export import tune

    lines: list[str] = []
    small = tune.affordable(DEFAULT, 3_706, lines.append, ratings=800_000, users=6_040)
    assert small == DEFAULT and not lines  # ML-1M's size: the preset as it is
    large = tune.affordable(DEFAULT, 62_423, lines.append, ratings=20_000_000, users=162_541)
    assert (large.loss, large.optimizer, large.patience) == ("in_batch_softmax", "lazy_adam", 1)
    assert large.epochs == 2 == max(2, tune.RATING_PASSES // 20_000_000)
    assert [line.split(":")[0] for line in lines] == ["loss", "optimizer", "epochs"]
    assert tune.affordable(DEFAULT, 10_677, lambda line: None, ratings=7_000_000, users=69_878).epochs == 7
