"""The two SavedModels' tf.Modules, with the signatures of docs/contract.md.

retrieval
    ``serving_default``:    ``user_id`` string [-1] -> ``movie_titles`` string [-1, K], ``scores`` float [-1, K],
                            ``movie_ids`` string [-1, K] (each title's catalogue id), ``fallback`` bool [-1]
    ``exclude_seen``:       ``user_id`` [-1], ``exclude_titles`` string [-1, -1] (rows padded with "")
                            -> the same outputs, never an excluded title, still K results per row, and
                            ``unmatched`` int32 [-1] (exclusions that match no title).
    ``exclude_seen_by_id``: ``user_id`` [-1], ``exclude_ids`` string [-1, -1] -> ``exclude_seen`` of the
                            titles those catalogue ids are served as.
    ``by_history``:         ``history_titles`` string [-1, -1] (rows padded with "") -> the outputs of
                            ``exclude_seen``: the query is computed from the row's titles (the mean of their
                            ``item_queries`` rows, export/history.py), the row's titles are never returned.
    ``by_history_ids``:     ``history_ids`` string [-1, -1] -> ``by_history`` of the titles those ids are.
similar_movies
    ``serving_default``:    ``movie_title`` string [-1] -> the same outputs; a movie is never in its own list.
    ``by_id``:              ``movie_id`` string [-1] -> ``serving_default`` of the title that id is served as.

``fallback`` says per row that the answer is the popularity list, not a personal one: an unknown user, title
or id, or a history with no known title. ``unmatched`` counts a row's non-empty exclusions or history entries
that are no title (or id) of the catalogue; they are ignored.

``exclude_seen`` may score with other vectors than ``serving_default`` (its own query table and index, same
titles): export/selection.py may choose, on validation, a blend of the towers with EASE for the excluded
signature while ``serving_default`` keeps the towers'. Both are still one dot product each.

A key is looked up in its vocabulary (``StringLookup``, unknown -> row 0) and mapped to its query vector
(export/vectors.py: unknown keys get the most popular movies). Exclusions are applied by asking the index
for K + (number of exclusion columns) results (clamped to the catalogue), masking excluded titles and
taking the best K. If a row excludes nearly the whole catalogue, the slots left empty hold title "" and
score -inf (documented; it cannot happen while the catalogue has K more titles than the row excludes).

Titles are display names; ``movie_ids`` gives each returned title's id in the catalogue the model was trained
on ("" in an empty slot), so that callers can join results with their own item tables. A title several
MovieLens ids share (the tutorial keeps one entry per title) gives the first of them in catalogue order.
The by-id signatures take any catalogue id: each is looked up (a ``StaticHashTable``) as the title it is
served as, so every id of a shared title finds that title, and an unknown id (or "") is an unknown title.
"""

from __future__ import annotations

import tensorflow as tf

from export import index as index_lib

NAMESPACE_WHITELIST = ["Scann"]


class _Servable(tf.Module):
    def __init__(self, vectors, layer, params: index_lib.EffectiveIndex, name: str, ids=None, catalogue=None):
        """``ids``: the catalogue id of each of ``vectors.titles`` (default: the titles themselves).
        ``catalogue``: (ids, titles), every catalogue id the by-id signatures take and the title it is
        served as (default: ``ids`` and their titles)."""
        super().__init__(name=name)
        if params.k > len(vectors.titles) - 1:
            raise ValueError(f"K={params.k} needs a catalogue of more than K titles (got {len(vectors.titles)})")
        self.k = params.k
        self.params = params
        self.lookup = tf.keras.layers.StringLookup(vocabulary=list(vectors.query_keys), mask_token=None)
        self.query_table = tf.Variable(vectors.queries, trainable=False, name="query_table")
        self.titles = tf.Variable(tf.constant(list(vectors.titles), dtype=tf.string), trainable=False, name="titles")
        ids = list(vectors.titles if ids is None else ids)
        if len(ids) != len(vectors.titles):
            raise ValueError(f"{len(ids)} ids for {len(vectors.titles)} titles")
        self.ids = tf.Variable(tf.constant(ids, dtype=tf.string), trainable=False, name="ids")
        keys, values = (ids, list(vectors.titles)) if catalogue is None else (list(catalogue[0]), list(catalogue[1]))
        if len(keys) != len(values) or len(set(keys)) != len(keys) or not set(values) <= set(vectors.titles):
            raise ValueError("catalogue: one served title per distinct id expected")
        pairs = [(key, value) for key, value in zip(keys, values, strict=True) if key != ""]  # "": no id
        self.title_of_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([k for k, _ in pairs], dtype=tf.string), tf.constant([v for _, v in pairs], tf.string)
            ),
            default_value="",
        )
        self.row_of_title = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(vectors.titles), tf.string), tf.range(len(vectors.titles), dtype=tf.int32)
            ),
            default_value=-1,
        )
        self.index = layer

    def _queries(self, keys: tf.Tensor, table=None) -> tf.Tensor:
        return tf.gather(self.query_table if table is None else table, self.lookup(keys))

    def _unknown(self, keys: tf.Tensor) -> tf.Tensor:
        """Per key, whether the query table has no row of its own for it (its answer is the fallback)."""
        return tf.equal(self.lookup(keys), 0)

    def _unmatched(self, entries: tf.Tensor, titles: tf.Tensor, rows: tf.Tensor | None = None) -> tf.Tensor:
        """Per row, the non-empty ``entries`` whose ``titles`` (the entries themselves, or the titles ids are
        served as) are no candidate title; ``rows``: those titles' candidate rows, when the caller has them."""
        rows = self.row_of_title.lookup(titles) if rows is None else rows
        missing = tf.not_equal(entries, "") & tf.less(rows, 0)
        return tf.reduce_sum(tf.cast(missing, tf.int32), axis=1)

    def _top_k_excluding(self, queries: tf.Tensor, excluded: tf.Tensor, index=None, params=None) -> dict:
        """Best K per row whose title is not in that row of ``excluded`` [B, W] ("" entries exclude nothing)."""
        n = tf.shape(self.titles)[0]
        width = tf.shape(excluded)[1]
        wanted = tf.minimum(self.k + width, n)
        scores, rows = index_lib.search(
            self.index if index is None else index, self.params if params is None else params, queries, wanted
        )
        valid = rows >= 0
        titles = tf.gather(self.titles, tf.maximum(rows, 0))
        ids = tf.gather(self.ids, tf.maximum(rows, 0))
        hit = tf.reduce_any(
            tf.equal(titles[:, :, tf.newaxis], excluded[:, tf.newaxis, :])
            & tf.not_equal(excluded, "")[:, tf.newaxis, :],
            axis=-1,
        )
        keep = valid & ~hit
        masked = tf.where(keep, scores, tf.fill(tf.shape(scores), float("-inf")))
        # Pad so that top_k always has K columns, even if the index returned fewer.
        pad = tf.maximum(self.k - tf.shape(masked)[1], 0)
        masked = tf.pad(masked, [[0, 0], [0, pad]], constant_values=float("-inf"))
        titles = tf.pad(titles, [[0, 0], [0, pad]], constant_values="")
        ids = tf.pad(ids, [[0, 0], [0, pad]], constant_values="")
        best, order = tf.math.top_k(masked, k=self.k)  # stable: ties keep the index's order
        empty = tf.math.is_inf(best) & (best < 0)
        chosen = tf.where(empty, "", tf.gather(titles, order, batch_dims=1))
        return self._outputs(chosen, best, tf.where(empty, "", tf.gather(ids, order, batch_dims=1)))

    def _titles_of(self, ids: tf.Tensor) -> tf.Tensor:
        """The titles catalogue ids are served as ("" for an unknown id, which then excludes nothing)."""
        return self.title_of_id.lookup(ids)

    def _outputs(self, titles: tf.Tensor, scores: tf.Tensor, ids: tf.Tensor) -> dict:
        """The ranked outputs, with their static shape [-1, K] (it shows in the SignatureDef)."""
        return {
            "movie_titles": tf.ensure_shape(titles, [None, self.k]),
            "scores": tf.ensure_shape(scores, [None, self.k]),
            "movie_ids": tf.ensure_shape(ids, [None, self.k]),
        }

    @staticmethod
    def _flagged(outputs: dict, fallback: tf.Tensor, unmatched: tf.Tensor | None = None) -> dict:
        """``outputs`` with the per-row ``fallback`` flag (and ``unmatched`` count) of docs/contract.md."""
        flags = {"fallback": tf.ensure_shape(fallback, [None])}
        if unmatched is not None:
            flags["unmatched"] = tf.ensure_shape(unmatched, [None])
        return {**outputs, **flags}

    def _top_k(self, queries: tf.Tensor) -> dict:
        scores, rows = index_lib.search(self.index, self.params, queries, self.k)
        found = rows >= 0
        titles = tf.where(found, tf.gather(self.titles, tf.maximum(rows, 0)), "")
        return self._outputs(titles, scores, tf.where(found, tf.gather(self.ids, tf.maximum(rows, 0)), ""))


class Retrieval(_Servable):
    """user -> movies; ``exclude`` = (vectors, layer, params) of ``exclude_seen``'s own index, if any;
    ``history`` = (export.history.HistoryVectors, layer, params) of the history signatures' own index; None:
    a history's query is the mean of its titles' candidate vectors, searched in serving_default's index (an
    empty history gets the unknown user's query, the most popular movies)."""

    def __init__(self, vectors, layer, params, *, history=None, exclude=None, ids=None, catalogue=None):
        super().__init__(vectors, layer, params, name="retrieval", ids=ids, catalogue=catalogue)
        if history is None:
            item_queries, empty_query, self.history_index, self.history_params = (
                vectors.candidates,
                vectors.queries[0],
                layer,
                params,
            )
        else:
            history_vectors, self.history_index, self.history_params = history
            if list(history_vectors.titles) != list(vectors.titles):
                raise ValueError("the history index must have the same titles as serving_default's")
            item_queries, empty_query = history_vectors.item_queries, history_vectors.empty_query
        # [N, d] in the titles' order; history_queries masks the rows of unknown titles.
        self.history_item_queries = tf.Variable(item_queries, trainable=False, name="history_items")
        self.history_empty_query = tf.Variable(empty_query, trainable=False, name="history_empty")
        self.exclude_table = self.exclude_index = self.exclude_params = None
        if exclude is not None:
            exclude_vectors, self.exclude_index, self.exclude_params = exclude
            if list(exclude_vectors.titles) != list(vectors.titles) or list(exclude_vectors.query_keys) != list(
                vectors.query_keys
            ):
                raise ValueError("exclude_seen's vectors must have the same users and titles as serving_default's")
            self.exclude_table = tf.Variable(exclude_vectors.queries, trainable=False, name="exclude_query_table")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serving_default(self, user_id):
        return self._flagged(self._top_k(self._queries(user_id)), self._unknown(user_id))

    def _excluding(self, user_id, excluded_titles):
        return self._top_k_excluding(
            self._queries(user_id, self.exclude_table), excluded_titles, self.exclude_index, self.exclude_params
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="exclude_titles"),
        ]
    )
    def exclude_seen(self, user_id, exclude_titles):
        return self._flagged(
            self._excluding(user_id, exclude_titles),
            self._unknown(user_id),
            self._unmatched(exclude_titles, exclude_titles),
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="exclude_ids"),
        ]
    )
    def exclude_seen_by_id(self, user_id, exclude_ids):
        titles = self._titles_of(exclude_ids)
        return self._flagged(
            self._excluding(user_id, titles), self._unknown(user_id), self._unmatched(exclude_ids, titles)
        )

    def history_queries(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(queries [B, d], known titles per row [B]) of histories given as candidate rows [B, W] (-1: unknown
        or ""): the mean of the ``item_queries`` rows of a row's known titles, or the empty query (the most
        popular movies) for a row with none; HistoryVectors.queries is the same in numpy."""
        known = tf.cast(rows >= 0, tf.float32)
        count = tf.reduce_sum(known, axis=1)
        total = tf.reduce_sum(
            tf.gather(self.history_item_queries, tf.maximum(rows, 0)) * known[:, :, tf.newaxis], axis=1
        )
        mean = total / tf.maximum(count, 1.0)[:, tf.newaxis]
        empty = tf.broadcast_to(self.history_empty_query[tf.newaxis, :], tf.shape(mean))
        return tf.where((count > 0)[:, tf.newaxis], mean, empty), count

    def _by_history(self, titles: tf.Tensor, entries: tf.Tensor) -> dict:
        rows = self.row_of_title.lookup(titles)  # once, for the query and for the unmatched count
        queries, count = self.history_queries(rows)
        outputs = self._top_k_excluding(queries, titles, self.history_index, self.history_params)
        return self._flagged(outputs, tf.equal(count, 0.0), self._unmatched(entries, titles, rows))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history_titles")])
    def by_history(self, history_titles):
        return self._by_history(history_titles, history_titles)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history_ids")])
    def by_history_ids(self, history_ids):
        return self._by_history(self._titles_of(history_ids), history_ids)

    def signatures(self) -> dict:
        return {
            "serving_default": self.serving_default,
            "exclude_seen": self.exclude_seen,
            "exclude_seen_by_id": self.exclude_seen_by_id,
            "by_history": self.by_history,
            "by_history_ids": self.by_history_ids,
        }


class SimilarMovies(_Servable):
    """movie -> movies; the query title is excluded from its own list."""

    def __init__(self, vectors, layer, params, ids=None, catalogue=None):
        super().__init__(vectors, layer, params, name="similar_movies", ids=ids, catalogue=catalogue)

    def _similar(self, movie_title):
        return self._flagged(
            self._top_k_excluding(self._queries(movie_title), movie_title[:, tf.newaxis]), self._unknown(movie_title)
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="movie_title")])
    def serving_default(self, movie_title):
        return self._similar(movie_title)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="movie_id")])
    def by_id(self, movie_id):
        return self._similar(self._titles_of(movie_id))

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "by_id": self.by_id}


def save(module: _Servable, path) -> None:
    """``tf.saved_model.save`` with the named signatures; ScaNN's ops live in the ``Scann`` namespace."""
    tf.saved_model.save(
        module,
        str(path),
        signatures=module.signatures(),
        options=tf.saved_model.SaveOptions(namespace_whitelist=NAMESPACE_WHITELIST),
    )
