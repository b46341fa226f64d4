"""Validation inside the export: the split, early stopping, EASE's factors and the choice of what is served."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import export.train
from export import ease, selection
from export.config import DEFAULT, SEED, ConfigError, ExportConfig
from export.data import DataError, load, split, validation_split
from export.data.synthetic import SyntheticSpec
from export.train import train
from export.vectors import Blend, popularity, retrieval_vectors


@pytest.fixture(scope="module")
def data():
    return load("synthetic", synthetic=SyntheticSpec.tiny(5))


def test_random_validation_split_is_a_part_of_train_and_never_of_test(data):
    train_idx, test_idx = split(data.ratings, kind="random")
    fit_idx, val_idx = validation_split(data.ratings, train_idx, "random", 0.1)
    assert len(val_idx) == int(len(train_idx) * 0.1)
    assert sorted(np.r_[fit_idx, val_idx].tolist()) == sorted(train_idx.tolist())
    assert not set(val_idx.tolist()) & set(test_idx.tolist())


def test_time_validation_split_holds_out_each_users_latest_training_ratings(data):
    train_idx, _ = split(data.ratings, kind="time")
    fit_idx, val_idx = validation_split(data.ratings, train_idx, "time", 0.2)
    users, times = np.asarray(data.ratings.user_id).astype(str), np.asarray(data.ratings.timestamp)
    assert sorted(np.r_[fit_idx, val_idx].tolist()) == sorted(train_idx.tolist())
    held_users = set(users[val_idx].tolist())
    assert held_users
    for user in held_users:
        held = times[val_idx][users[val_idx] == user]
        kept = times[fit_idx][users[fit_idx] == user]
        assert len(kept) == 0 or held.min() >= kept.max(), user
        total = len(held) + len(kept)
        assert len(held) == int(total * 0.2)


def test_a_validation_split_with_no_ratings_is_one_clear_error(data):
    train_idx, _ = split(data.ratings, kind="time")
    with pytest.raises(DataError, match=r"leaves 0 for validation.*raise it, or use 0"):
        validation_split(data.ratings, train_idx, "time", 0.001)
    with pytest.raises(ConfigError, match="--validation-fraction must be in"):
        dataclasses.replace(DEFAULT, validation_fraction=0.7)
    with pytest.raises(ConfigError, match="needs a validation split"):
        dataclasses.replace(SEED, ease_rank=8)


def test_randomized_svd_finds_the_leading_singular_values_and_factors_reproduce_ease():
    rng = np.random.default_rng(1)
    x = rng.random((60, 25)) < 0.2
    scores = x.astype(np.float32) @ ease.weights(x, 3.0)
    _, s, _ = ease.randomized_svd(scores, 5)
    assert np.allclose(s, np.linalg.svd(scores, compute_uv=False)[:5], rtol=1e-3)
    users, items = ease.factors(x, 3.0, rank=25)  # full rank: exact
    assert np.abs(users @ items.T - scores).max() < 1e-3


def test_a_log_gets_progress_lines_within_each_epoch(data, monkeypatch):
    train_idx, _ = split(data.ratings, kind="random")
    config = dataclasses.replace(DEFAULT, epochs=2, batch_size=64)
    steps = -(-len(train_idx) // 64)
    monkeypatch.setattr(export.train, "PROGRESS_EVERY_S", 0.001)  # the timer thread reports at once
    lines: list[str] = []
    train(config, data, train_idx, verbose=2, report=lines.append)
    pattern = re.compile(rf"epoch ([12])/2: batch (\d+) of {steps} \(\d+%\), \d+ s, about \d+ s left")
    matches = [pattern.fullmatch(line) for line in lines]
    assert lines and all(matches), lines[:3]
    done = [(int(m.group(1)), int(m.group(2))) for m in matches if m]
    assert all(0 < batch < steps for _, batch in done)
    assert done == sorted(done)  # batches only move on, epoch by epoch


def test_progress_lines_count_the_optimizers_steps_within_the_epoch(data):
    """What the timer thread prints, asked for at chosen batches (a probe callback calls line())."""
    train_idx, _ = split(data.ratings, kind="random")
    config = dataclasses.replace(DEFAULT, epochs=2, batch_size=256)
    model = export.train.build_model(config, data, train_idx)
    dataset = export.train.train_dataset(
        config, data, train_idx, model.user_model.vocabulary, model.movie_model.vocabulary
    )
    steps = -(-len(train_idx) // 256)
    now = [100.0]
    progress = export.train.Progress(steps, 2, every_s=3600.0, clock=lambda: now[0])
    seen: list[str | None] = []

    class Probe(export.train.tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            now[0] += 2.0  # each batch takes 2 s on this clock
            if batch in (0, 1, steps - 1):
                seen.append(progress.line())

    model.fit(dataset, epochs=2, verbose=0, callbacks=[progress, Probe()])
    assert seen[0] == f"epoch 1/2: batch 1 of {steps} ({1 / steps:.0%}), 2 s, about {2 * (steps - 1)} s left"
    assert seen[1].startswith(f"epoch 1/2: batch 2 of {steps} ") and seen[1].endswith(f"about {2 * (steps - 2)} s left")
    assert seen[2] is None  # the epoch's last batch: nothing left to report
    assert seen[3].startswith(f"epoch 2/2: batch 1 of {steps} ")  # counted from the epoch's start
    assert progress._thread is not None and not progress._thread.is_alive()  # stopped at the end of fit


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(data):
    train_idx, _ = split(data.ratings, kind="random")
    script = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    seen = []

    def score(trained):
        seen.append(trained.user_vectors.copy())
        return next(script)

    config = dataclasses.replace(DEFAULT, epochs=6, patience=2)
    trained = train(config, data, train_idx, verbose=0, validation=score, report=lambda line: None)
    assert trained.validation["curve"] == [0.1, 0.3, 0.2, 0.25]  # stopped: 2 epochs without beating epoch 2
    assert trained.validation["best_epoch"] == 2 and len(trained.history["loss"]) == 4
    assert np.allclose(trained.user_vectors, seen[1])  # the best epoch's weights, not the last


def test_blended_vectors_serve_a_weighted_sum_of_both_scores_as_one_dot_product(data):
    train_idx, _ = split(data.ratings, kind="random")
    trained = train(dataclasses.replace(DEFAULT, epochs=1), data, train_idx, verbose=0)
    pop = popularity(trained.movie_titles, np.asarray(data.ratings.movie_title)[train_idx].astype(str))
    rng = np.random.default_rng(0)
    users = rng.standard_normal((len(trained.user_ids) + 1, 4)).astype(np.float32)
    users[0] = 0
    items = rng.standard_normal((len(trained.movie_titles), 4)).astype(np.float32)
    plain = retrieval_vectors(trained, pop)
    mixed = retrieval_vectors(trained, pop, Blend(0.5, users, items))
    got = mixed.queries @ mixed.candidates.T
    expected = 0.5 * (plain.queries[1:] @ plain.candidates.T) + users[1:] @ items.T
    assert np.allclose(got[1:], expected, atol=1e-4)
    assert np.allclose(got[0], pop)  # the unknown user still gets popularity


@pytest.mark.slow
def test_fit_chooses_on_validation_and_refits_on_the_whole_training_part(data):
    train_idx, _ = split(data.ratings, kind="random")
    config = ExportConfig(data="synthetic", train=dataclasses.replace(DEFAULT, epochs=4, patience=2, ease_rank=8))
    lines = []
    fitted = selection.fit(config, data, train_idx, report=lines.append)
    summary = fitted.validation
    assert 1 <= summary["best_epoch"] <= len(summary["curve"]) <= 4
    assert summary["curve"][summary["best_epoch"] - 1] == max(summary["curve"])
    assert len(fitted.trained.history["loss"]) == summary["best_epoch"]  # the refit ran the best epoch count
    trials = summary["blends"]["trials"]
    assert [(t["tower"], t["ease"]) for t in trials] == list(selection.BLENDS)
    for t in trials:  # chosen on the mean of both seen-excluded columns
        assert t[selection.BLEND_CRITERION] == pytest.approx(
            (t["exclude_seen_top_10"] + t["exclude_seen_top_100"]) / 2, abs=2e-6
        )
    best = max(trials, key=lambda t: t[selection.BLEND_CRITERION])
    assert summary["blends"]["chosen"] == {"tower": best["tower"], "ease": best["ease"]}
    assert (fitted.blend is None) == (best["ease"] == 0)
    # The refit saw every training user (the fitting part alone may miss some).
    users = set(np.asarray(data.ratings.user_id)[train_idx].astype(str).tolist())
    assert set(fitted.trained.user_ids.tolist()) == users
    assert any(line.startswith("refitting on all") for line in lines)


def test_above_large_data_the_early_stopped_towers_are_kept(data, monkeypatch):
    from export import tune

    train_idx, _ = split(data.ratings, kind="random")
    monkeypatch.setattr(tune, "LARGE_DATA", len(train_idx) - 1)
    config = ExportConfig(data="synthetic", train=dataclasses.replace(DEFAULT, epochs=3, patience=1, ease_rank=0))
    lines = []
    fitted = selection.fit(config, data, train_idx, report=lines.append)
    summary = fitted.validation
    assert summary["refit"].startswith("no: ")
    assert not any(line.startswith("refitting") for line in lines)
    assert any(line.startswith("refit: no") for line in lines)
    # What is kept is the early-stopped model: trained on the fitting part only, for the epochs it ran.
    assert len(fitted.trained.history.get("loss", [])) == len(summary["curve"])
    assert fitted.trained.config.epochs == summary["best_epoch"]


def test_exclude_seen_can_score_with_vectors_of_its_own():
    import tensorflow as tf

    from export import index as index_lib
    from export import servable
    from export.config import IndexConfig
    from export.vectors import IndexVectors

    keys, titles = np.array(["u1", "u2"], dtype=object), np.array(["A", "B", "C", "D"], dtype=object)
    candidates = np.array([[3, 0], [2, 0], [0, 1], [0, 2]], np.float32)
    plain = IndexVectors(keys, np.array([[0, 0], [1, 0], [0, 1]], np.float32), titles, candidates)
    other = IndexVectors(keys, np.array([[0, 0], [0, 1], [1, 0]], np.float32), titles, candidates)
    config = IndexConfig(kind="brute_force", k=2)
    layer, params = index_lib.build(config, plain.candidates, name="plain")
    other_layer, other_params = index_lib.build(config, other.candidates, name="other")
    module = servable.Retrieval(plain, layer, params, exclude=(other, other_layer, other_params))
    default = module.serving_default(tf.constant(["u1"]))["movie_titles"].numpy().astype(str).tolist()
    excluding = module.exclude_seen(tf.constant(["u1"]), tf.constant([["", "D"]]))["movie_titles"]
    assert default == [["A", "B"]]  # u1 = [1, 0] on the plain vectors
    assert excluding.numpy().astype(str).tolist() == [["C", "A"]]  # u1 = [0, 1] on its own, D excluded
    with pytest.raises(ValueError, match="same users and titles"):
        servable.Retrieval(
            plain,
            layer,
            params,
            exclude=(IndexVectors(keys[:1], other.queries[:2], titles, candidates), other_layer, other_params),
        )


@pytest.mark.slow
def test_a_catalogue_too_large_for_a_full_softmax_trains_in_batch_with_log_q(monkeypatch, data):
    from export import tune

    lines = []
    assert tune.affordable(DEFAULT, tune.FULL_SOFTMAX_UP_TO, lines.append) is DEFAULT and not lines
    chosen = tune.affordable(DEFAULT, tune.FULL_SOFTMAX_UP_TO + 1, lines.append)
    assert (chosen.loss, chosen.log_q) == ("in_batch_softmax", True)
    assert lines and "log-Q" in lines[0]
    # ... and so do many ratings over a catalogue a full softmax could afford alone.
    many = tune.FULL_SOFTMAX_CELLS // 1000 + 1
    assert tune.affordable(DEFAULT, 1000, lambda line: None, ratings=many - 1).loss == "full_softmax"
    assert tune.affordable(DEFAULT, 1000, lines.append, ratings=many).loss == "in_batch_softmax"
    assert any("training ratings x 1000 titles" in line for line in lines)
    # fit() applies it before training; the refit's settings (what the manifest records) say so.
    monkeypatch.setattr(tune, "FULL_SOFTMAX_UP_TO", 10)
    train_idx, _ = split(data.ratings, kind="random")
    config = ExportConfig(data="synthetic", train=dataclasses.replace(DEFAULT, epochs=1, ease_rank=0, tune_budget_s=0))
    fitted = selection.fit(config, data, train_idx, report=lambda line: None)
    assert (fitted.trained.config.loss, fitted.trained.config.log_q) == ("in_batch_softmax", True)


@pytest.mark.parametrize("ties", [False, True])
def test_validation_rates_per_user_equal_the_evaluations_seen_excluded_row(ties):
    from export import evaluate as evaluation
    from export.vectors import IndexVectors

    data = load("synthetic", synthetic=SyntheticSpec.tiny(3))
    train_idx, test_idx = split(data.ratings, kind="random")
    users, titles = data.ratings.coded("user_id"), data.ratings.coded("movie_title")
    user_ids = np.unique(np.asarray(data.ratings.user_id)[train_idx][5:]).astype(object)  # some test users unknown
    catalogue = np.unique(np.asarray(data.movies.movie_title).astype(str)).astype(object)
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(len(user_ids) + 1, 4)).astype(np.float32)
    candidates = rng.normal(size=(len(catalogue), 4)).astype(np.float32)
    if ties:  # a few distinct scores: most ranks are settled by catalogue order
        queries, candidates = np.round(queries), np.round(candidates)
    vectors = IndexVectors(user_ids, queries, catalogue, candidates)
    columns = (users[train_idx], titles[train_idx], users[test_idx], titles[test_idx])
    full = evaluation.evaluate(vectors, np.zeros(len(catalogue), np.float32), *columns, max_items=0)
    assert evaluation.exclude_seen_rates(vectors, *columns) == full["model_exclude_seen"]
