"""Tiny SavedModels with the contract's signatures, built by the serving tests themselves.

They stand in for export's models where a test needs something export does not make (a corrupt version,
a failing warmup) or must not wait for training. Outputs are deterministic functions of the input and of a
``marker`` baked in at build time, so a test can tell which build answered.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

K = 3
TITLES = [b"Toy Story (1995)", b"Heat (1995)", b"Fargo (1996)", b"Babe (1995)"]


def build(
    path: str, *, kind: str = "retrieval", marker: float = 0.0, warmup: bool = True, bad_warmup: bool = False
) -> str:
    """Write a SavedModel (tag serve) at ``path``; ``kind`` is "retrieval" or "similar_movies"."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    titles = tf.constant(TITLES)

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.bias = tf.Variable(float(marker))

        def _top(self, key):
            h = tf.cast(tf.strings.to_hash_bucket_fast(key, 1000), tf.float32)
            offsets = tf.range(K, dtype=tf.float32)
            scores = h[:, None] - offsets[None, :] + self.bias
            idx = (tf.cast(h, tf.int32)[:, None] + tf.range(K)[None, :]) % len(TITLES)
            return {"movie_titles": tf.gather(titles, idx), "scores": scores}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id):
            return self._top(user_id)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="user_id"),
                tf.TensorSpec([None, None], tf.string, name="exclude_titles"),
            ]
        )
        def exclude_seen(self, user_id, exclude_titles):
            return self._top(user_id)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="movie_title")])
        def similar(self, movie_title):
            return self._top(movie_title)

    module = Tiny()
    if kind == "retrieval":
        signatures = {"serving_default": module.serve, "exclude_seen": module.exclude_seen}
        key = "user_id"
    else:
        signatures = {"serving_default": module.similar}
        key = "movie_title"
    tmp = path + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures=signatures)
    if warmup:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=kind))
        bad_key = "nope" if bad_warmup else key
        request.inputs[bad_key].CopyFrom(tf.make_tensor_proto([b"1", b"2"], dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(tmp, "assets.extra", "tf_serving_warmup_requests")) as w:
            w.write(log.SerializeToString())
    os.rename(tmp, path)
    return path


def publish(base_path: str, version: int, source_dir: str) -> str:
    """Publish ``source_dir`` as ``base_path/<version>`` the contract's way: copy aside, then rename."""
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source_dir, staging)
    final = os.path.join(base_path, str(version))
    os.rename(staging, final)
    return final
