"""EASE's large-data path: X kept as each user's titles and made dense a block at a time (above
``ease.DENSE_CELLS``) gives what the dense matrix gives."""

from __future__ import annotations

import numpy as np
import pytest

from export import ease
from export.evaluate import evaluate, item_knn_weights
from export.vectors import IndexVectors


@pytest.fixture
def pairs():
    rng = np.random.default_rng(4)
    users, titles = 300, 40
    rows = rng.integers(0, users, 3000)
    columns = (rows // 10 + rng.integers(0, 8, 3000)) % titles  # a taste per group of users, with repeats
    return rows, columns, (users, titles)


@pytest.fixture
def blocked(monkeypatch):
    monkeypatch.setattr(ease, "DENSE_CELLS", 0)  # every X is kept sparse
    monkeypatch.setattr(ease, "BLOCK_ROWS", 64)  # and made dense in several blocks


def test_blocked_rows_gram_and_weights_equal_the_dense_ones(pairs, blocked):
    rows, columns, shape = pairs
    dense = np.zeros(shape, dtype=bool)
    dense[rows, columns] = True
    x = ease.Interactions.of(rows, columns, shape)
    assert x.dense is None and x.indptr is not None
    assert np.array_equal(x.rows(np.arange(shape[0])), dense.astype(np.float32))
    picked = np.array([5, 0, 299, 5])
    assert np.array_equal(x.rows(picked), dense[picked].astype(np.float32))
    assert np.array_equal(x.without_first_row().rows(np.arange(shape[0] - 1)), dense[1:].astype(np.float32))
    assert np.array_equal(x.gram(), dense.astype(np.float64).T @ dense.astype(np.float64))
    assert np.array_equal(ease.weights(x, 20.0), ease.weights(dense, 20.0))
    assert np.array_equal(item_knn_weights(x), item_knn_weights(dense))


def test_blocked_factors_reproduce_eases_scores_without_forming_them(pairs, blocked):
    rows, columns, shape = pairs
    dense = np.zeros(shape, dtype=bool)
    dense[rows, columns] = True
    scores = dense.astype(np.float32) @ ease.weights(dense, 20.0)
    users, items = ease.factors(ease.Interactions.of(rows, columns, shape), 20.0, rank=shape[1])  # full rank
    assert users.shape == (shape[0], shape[1]) and items.shape == (shape[1], shape[1])
    assert np.abs(users @ items.T - scores).max() < 1e-3
    low, low_items = ease.factors(ease.Interactions.of(rows, columns, shape), 20.0, rank=5)
    exact = np.linalg.svd(scores, compute_uv=False)
    kept = np.linalg.svd(low @ low_items.T, compute_uv=False)[:5]
    assert np.allclose(kept, exact[:5], rtol=1e-3)  # the five leading singular values


def test_evaluation_ranks_the_same_with_the_blocked_baselines(pairs, monkeypatch):
    rows, columns, shape = pairs
    rng = np.random.default_rng(0)
    names = np.array([f"u{i}" for i in range(shape[0])], dtype=object)
    titles = np.array([f"t{i}" for i in range(shape[1])], dtype=object)
    vectors = IndexVectors(
        names,
        rng.standard_normal((shape[0] + 1, 4)).astype(np.float32),
        titles,
        rng.standard_normal((shape[1], 4)).astype(np.float32),
    )
    pop = np.bincount(columns, minlength=shape[1]).astype(np.float64)
    test = rng.integers(0, shape[0], 200), rng.integers(0, shape[1], 200)
    args = (vectors, pop, names[rows], titles[columns], names[test[0]], titles[test[1]])
    dense = evaluate(*args)
    monkeypatch.setattr(ease, "DENSE_CELLS", 0)
    monkeypatch.setattr(ease, "BLOCK_ROWS", 64)
    assert evaluate(*args) == dense
    assert "ease" in dense and "item_knn_exclude_seen" in dense


def test_the_users_side_inverse_equals_the_titles_side_one():
    rng = np.random.default_rng(1)
    x = rng.random((30, 120)) < 0.1  # fewer users than titles: ease.dual
    gram = x.astype(np.float64).T @ x
    gram[np.diag_indices_from(gram)] += 50.0
    np.testing.assert_allclose(ease.inverse(x, 50.0), np.linalg.inv(gram), rtol=1e-9, atol=1e-12)
    wide = rng.random((200, 40)) < 0.1  # more users than titles: the titles' inverse as before
    g = wide.astype(np.float64).T @ wide
    g[np.diag_indices_from(g)] += 50.0
    np.testing.assert_allclose(ease.inverse(wide, 50.0), np.linalg.inv(g), rtol=1e-9, atol=1e-12)


def test_factors_at_the_exact_rank_reproduce_eases_scores():
    rng = np.random.default_rng(2)
    x = rng.random((25, 90)) < 0.15
    users, items = ease.factors(x, 20.0, rank=25)  # min(users, titles): every user's scores, exactly
    np.testing.assert_allclose(users @ items.T, x.astype(np.float32) @ ease.weights(x, 20.0), atol=1e-4)
    low_users, low_items = ease.factors(x, 20.0, rank=5)
    assert np.abs(low_users @ low_items.T - x.astype(np.float32) @ ease.weights(x, 20.0)).max() > 1e-3


def test_the_users_scores_from_the_users_side_equal_x_times_b():
    rng = np.random.default_rng(3)
    x = rng.random((20, 70)) < 0.2
    assert ease.dual_scores_apply(x) and not ease.dual_scores_apply(x.T)
    np.testing.assert_allclose(ease.scores(x, 30.0), x.astype(np.float32) @ ease.weights(x, 30.0), atol=1e-5)


@pytest.mark.parametrize("density", [0.02, 0.5])  # pair by pair / one dense product
def test_gram_and_products_of_sparse_or_dense_rows_equal_the_dense_ones(density):
    rng = np.random.default_rng(5)
    x = rng.random((40, 300)) < density
    dense = x.astype(np.float64)
    matrix = ease.Interactions(x.shape, dense=x)
    np.testing.assert_array_equal(matrix.gram(), dense.T @ dense)
    b = rng.normal(size=(300, 7)).astype(np.float32)
    np.testing.assert_allclose(matrix.times(b), x.astype(np.float32) @ b, atol=1e-4)
