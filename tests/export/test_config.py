"""Presets: ``seed`` is exactly the TFRS tutorial "Recommending movies: retrieval"
(https://www.tensorflow.org/recommenders/examples/basic_retrieval); settings are validated on construction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from export.config import DEFAULT, SEED, ConfigError, ExportConfig, IndexConfig, TrainConfig, preset


def test_seed_preset_hyperparameters_are_the_tutorials():
    assert preset("seed") is SEED
    assert (SEED.embedding_dimension, SEED.loss, SEED.movie_bias, SEED.l2) == (32, "in_batch_softmax", False, 0.0)
    assert (SEED.optimizer, SEED.learning_rate) == ("adagrad", 0.1)
    assert (SEED.shuffle_buffer, SEED.batch_size, SEED.epochs, SEED.seed) == (100_000, 8192, 3, 42)
    assert SEED.user_features == () and SEED.movie_features == ()


def test_seed_model_is_stringlookup_embedding_towers_with_tfrs_retrieval_and_adagrad():
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from export.data import load
    from export.data.synthetic import SyntheticSpec
    from export.train import build_model

    data = load("synthetic", synthetic=SyntheticSpec(users=30, movies=80, ratings=900, seed=2))
    model = build_model(SEED, data)
    assert isinstance(model.task, tfrs.tasks.Retrieval)
    assert model.movie_bias is None
    for tower, keys in ((model.user_model, data.ratings.user_id), (model.movie_model, data.movies.movie_title)):
        vocabulary = sorted(set(np.asarray(keys).astype(str).tolist()))
        assert list(tower.vocabulary) == vocabulary
        assert tower.lookup.mask_token is None and tower.lookup.num_oov_indices == 1
        assert tower.embedding.input_dim == len(vocabulary) + 1
        assert tower.embedding.output_dim == 32
        assert tower.side is None
    assert isinstance(model.optimizer, tf.keras.optimizers.Adagrad)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)


def test_training_rows_are_what_string_lookup_gives_the_ids():
    """The towers train on lookup rows made from codes; they must be StringLookup's of the raw strings (the
    tutorial's input), unknown values 0, or the served lookup would disagree with what was trained."""
    import tensorflow as tf

    from export.data import load, split
    from export.data.synthetic import SyntheticSpec
    from export.train import lookup_rows, vocabularies

    data = load("synthetic", synthetic=SyntheticSpec(users=200, movies=300, ratings=20_000, seed=3))
    train_idx, test_idx = split(data.ratings)
    users, titles = vocabularies(data, train_idx[:100])  # a vocabulary that misses some users
    for column, vocabulary in (("user_id", users), ("movie_title", titles)):
        lookup = tf.keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=None)
        expected = lookup(tf.constant(np.asarray(getattr(data.ratings, column))[test_idx].astype(str))).numpy()
        assert np.array_equal(lookup_rows(data, column, vocabulary, test_idx), expected)
    assert (lookup_rows(data, "user_id", users, test_idx) == 0).any()


def test_seed_training_pipeline_is_shuffle_100000_batch_8192_cache():
    from export.data import load, split
    from export.data.synthetic import SyntheticSpec
    from export.train import train_dataset

    data = load("synthetic", synthetic=SyntheticSpec(users=200, movies=300, ratings=20_000, seed=3))
    train_idx, _ = split(data.ratings)
    ds = train_dataset(SEED, data, train_idx)
    sizes = [int(batch["user_row"].shape[0]) for batch in ds]
    assert sizes == [8192, 16_000 - 8192]
    ops = [type(d).__name__ for d in _lineage(ds)]
    assert ops[:3] == ["CacheDataset", "_BatchDataset", "_ShuffleDataset"]
    assert int(_lineage(ds)[1]._batch_size) == 8192
    assert int(_lineage(ds)[2]._buffer_size) == 100_000


def _lineage(ds):
    out = []
    while ds is not None:
        out.append(ds)
        ds = getattr(ds, "_input_dataset", None)
    return out


def test_seed_split_is_the_tutorials_80_20_shuffle_with_seed_42():
    import tensorflow as tf

    from export.data import load, split
    from export.data.synthetic import SyntheticSpec

    data = load("synthetic", synthetic=SyntheticSpec(users=50, movies=100, ratings=1000, seed=4))
    train_idx, test_idx = split(data.ratings, kind="random")
    # The tutorial's own code, on the row numbers.
    tf.random.set_seed(42)
    shuffled = tf.data.Dataset.range(1000).shuffle(1000, seed=42, reshuffle_each_iteration=False)
    assert train_idx.tolist() == list(shuffled.take(800).as_numpy_iterator())
    assert test_idx.tolist() == list(shuffled.skip(800).take(200).as_numpy_iterator())


def test_default_preset_is_full_softmax_with_bias_d64_and_l2():
    assert preset("default") is DEFAULT
    assert (DEFAULT.loss, DEFAULT.movie_bias, DEFAULT.embedding_dimension) == ("full_softmax", True, 64)
    assert DEFAULT.l2 > 0 and DEFAULT.epochs >= 10


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(embedding_dimension=0), "embedding_dimension"),
        (dict(loss="hinge"), "loss must be one of"),
        (dict(epochs=0), "--epochs must be >= 1"),
        (dict(user_features=("shoe_size",)), "unknown user features"),
        (dict(user_tower="graph"), "user_tower must be one of"),
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(weight_decay=0.01), "weight_decay needs the adam optimizer"),  # SEED uses Adagrad
    ],
)
def test_invalid_train_settings_are_rejected_on_construction(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(SEED, **change)


def test_invalid_index_and_export_settings_are_rejected_on_construction():
    with pytest.raises(ConfigError, match="--scann-leaves-to-search"):
        IndexConfig(num_leaves=10, num_leaves_to_search=11)
    with pytest.raises(ConfigError, match="--scann-reorder"):
        IndexConfig(k=50, num_reordering_candidates=-1)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="--keep"):
        ExportConfig(data="synthetic", train=SEED, keep=0)
    assert isinstance(SEED, TrainConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SEED.epochs = 5


def test_empty_data_column_flags_are_their_defaults_as_the_compose_files_pass_them():
    """docker-compose.yml gives every column flag as ${EXPORT_...:-}: empty must mean the default."""
    from export.cli import config_from_args, parser

    empty = ["--user-column=", "--item-column=", "--time-column=", "--items=", "--item-id-column=", "--title-column="]
    given = config_from_args(parser().parse_args(["--data", "synthetic", *empty])).data_columns
    assert given == config_from_args(parser().parse_args(["--data", "synthetic"])).data_columns
    assert given["time_given"] is False and given["items_file"] is None
    named = config_from_args(parser().parse_args(["--data", "synthetic", "--time-column=at", "--user-column=who"]))
    assert named.data_columns["time"] == "at" and named.data_columns["time_given"] is True
    assert named.data_columns["user"] == "who"
