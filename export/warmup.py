"""Warmup requests for ``assets.extra/tf_serving_warmup_requests``: PredictionLog TFRecords that TF Serving
replays at load (at most 1000). Built from the module's own signatures: every signature gets a few
requests, with its input names and dtypes taken from the signature itself."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

logger = logging.getLogger(__name__)

MAX_RECORDS = 1000
WARMUP_FILE = "tf_serving_warmup_requests"


def requests(model_name: str, signatures: dict, inputs_per_signature: dict[str, list[dict]]):
    """PredictionLogs for each (signature name -> list of {input name: numpy array}) entry.

    Raises ValueError if an entry names an input the signature does not have (or misses one)."""
    logs = []
    for signature_name, batches in inputs_per_signature.items():
        spec = {t.name: t for t in signatures[signature_name].input_signature}
        for batch in batches:
            if set(batch) != set(spec):
                raise ValueError(
                    f"warmup inputs {sorted(batch)} do not match signature {signature_name!r} inputs {sorted(spec)}"
                )
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
            )
            for name, value in batch.items():
                tensor = tf.constant(np.asarray(value), dtype=spec[name].dtype)
                request.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
            logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"{len(logs)} warmup records; TF Serving accepts at most {MAX_RECORDS}")
    return logs


def write(saved_model_dir: Path, logs) -> Path:
    extra = Path(saved_model_dir) / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    path = extra / WARMUP_FILE
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    logger.debug("wrote %d warmup records to %s", len(logs), path)
    return path
