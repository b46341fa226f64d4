"""Towers: side features baked in by id, and users without training ratings treated as unknown."""

from __future__ import annotations

import dataclasses

import numpy as np

import export  # noqa: F401

from export.config import DEFAULT
from export.data import load, split
from export.synthetic import SyntheticSpec
from export.train import side_features, train, vocabularies


def _data():
    return load("synthetic", synthetic=SyntheticSpec.tiny(5))


def test_side_feature_tables_align_with_the_vocabulary_and_leave_the_unknown_row_empty():
    data = _data()
    config = dataclasses.replace(DEFAULT, user_features=("user_gender", "user_occupation"),
                                 movie_features=("movie_genres",))
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
    train_idx, test_idx = split(data.ratings, kind="time")
    users, _ = vocabularies(data, train_idx)
    train_users = set(np.asarray(data.ratings.user_id)[train_idx].astype(str).tolist())
    assert set(users.tolist()) == train_users
    users_all, _ = vocabularies(data)
    assert set(users_all.tolist()) >= train_users
