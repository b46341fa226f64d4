"""Load and call a SavedModel the way TF Serving's SavedModelBundle does.

One implementation, used by the local server and by export's pre-publish validator:

- ScaNN's op library is registered first, so ``Scann>ScannSearchBatched`` and friends resolve (stock TF
  Serving lacks them; a ScaNN-enabled build links them statically).
- The meta graph is chosen by tag set and loaded into a TF1 ``Session`` in its own ``tf.Graph``
  (``tf.compat.v1.saved_model.loader.load``), as ``LoadSavedModel`` does in C++.
- A signature is called by the tensor names its ``SignatureDef`` lists, never by Python structure.
- ``assets.extra/tf_serving_warmup_requests`` (``PredictionLog`` TFRecords, at most 1000) is replayed at
  load; a failing record fails the load.
- Requests are checked as ``predict_util.cc`` and ``cc/saved_model/util.cc`` check them, with their messages.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from serving.dtypes import DT_STRING, dtype_string, format_shape, is_string
from serving.errors import StatusError, code_name

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"  # tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
PREDICT_METHOD = "tensorflow/serving/predict"  # SignatureDef method names (tf.saved_model.*_METHOD_NAME)
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_SIGNATURE_METHODS = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)

_DEADLINE_MESSAGE = "Timed out waiting for notification"  # DirectSession's DEADLINE_EXCEEDED message

_ops_lock = threading.Lock()
_ops_registered = False


class BundleError(StatusError):
    """A SavedModel failed to load, warm up, or answer a request; ``code`` is the canonical status name."""


def register_scann_ops() -> bool:
    """Load ScaNN's TF op library once; returns False (and logs) if scann is not installed."""
    global _ops_registered
    with _ops_lock:
        if _ops_registered:
            return True
        import tensorflow as tf

        try:
            import scann
        except ImportError:
            logger.warning(
                "scann is not installed: SavedModels using Scann>* ops will fail to load (pip install scann)"
            )
            return False
        library = os.path.join(os.path.dirname(scann.__file__), "scann_ops", "cc", "_scann_ops.so")
        tf.load_op_library(library)
        _ops_registered = True
        logger.debug("registered ScaNN ops from %s", library)
        return True


def _error_from_tf(exc: Exception) -> BundleError:
    code = code_name(getattr(exc, "error_code", 2))
    if code == "OK":  # not an error code: an exception that says OK is still a failure
        code = "UNKNOWN"
    message = getattr(exc, "message", None) or str(exc)
    return BundleError(code, message)


def _dtype_of(array: np.ndarray) -> int:
    """The TF DataType enum a numpy array feeds as (object/bytes/str arrays are DT_STRING)."""
    import tensorflow as tf

    if is_string(array):
        return DT_STRING
    try:
        return tf.as_dtype(array.dtype).as_datatype_enum
    except TypeError as exc:
        raise BundleError("INVALID_ARGUMENT", f"unsupported input dtype {array.dtype}") from exc


def _shape_compatible(shape: Sequence[int], proto_shape) -> bool:
    if proto_shape.unknown_rank:
        return True
    dims = [d.size for d in proto_shape.dim]
    if len(dims) != len(shape):
        return False
    return all(d < 0 or d == s for d, s in zip(dims, shape, strict=True))


class SavedModelBundle:
    """A loaded SavedModel: its signature defs and a Session that runs them by tensor name."""

    def __init__(self, export_dir: str, session, meta_graph_def, batch_scheduler=None) -> None:
        self.export_dir = export_dir
        self.meta_graph_def = meta_graph_def
        self.signature_defs = dict(meta_graph_def.signature_def)
        self._session = session
        self._callables: dict[tuple, object] = {}
        self._scheduler = batch_scheduler  # serving.batching.BatchScheduler, or None: every call runs alone
        self._queues: dict[str, object] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def load(
        cls,
        export_dir: str | os.PathLike[str],
        *,
        tags: Sequence[str] = ("serve",),
        run_warmup: bool = True,
        session_config=None,
        batch_scheduler=None,
    ) -> SavedModelBundle:
        """Load ``export_dir`` by tag set; replay its warmup records when ``run_warmup``. With a
        ``batch_scheduler`` (``--enable_batching``), calls are batched as TF Serving's BatchingSession does."""
        import tensorflow as tf

        register_scann_ops()
        export_dir = os.fspath(export_dir)
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config)
        from tensorflow.python.util import deprecation

        try:
            with graph.as_default(), deprecation.silence():
                meta_graph_def = tf.compat.v1.saved_model.loader.load(session, list(tags), export_dir)
        except tf.errors.OpError as exc:
            session.close()
            raise _error_from_tf(exc) from exc
        except (RuntimeError, ValueError, OSError, KeyError) as exc:  # e.g. no such tag set, bad pb
            session.close()
            raise BundleError(
                "INVALID_ARGUMENT" if isinstance(exc, (RuntimeError, ValueError)) else "NOT_FOUND",
                f"Failed to load SavedModel at {export_dir}: {exc}",
            ) from exc
        graph.finalize()
        bundle = cls(export_dir, session, meta_graph_def, batch_scheduler)
        if run_warmup:
            try:
                n = bundle.run_warmup()
            except BaseException:
                bundle.close()
                raise
            if n:
                logger.info(
                    "Finished reading warmup data for model at %s. Number of warmup records read: %d.", export_dir, n
                )
        return bundle

    # ------------------------------------------------------------------ warmup
    def run_warmup(self) -> int:
        """Replay ``assets.extra/tf_serving_warmup_requests``; returns the number of records replayed."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.export_dir, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        from tensorflow.python.util import deprecation

        count = 0
        try:
            with deprecation.silence():
                records = tf.compat.v1.io.tf_record_iterator(path)
            for record in records:
                log = prediction_log_pb2.PredictionLog()
                try:
                    log.ParseFromString(record)
                except Exception as exc:  # google.protobuf.message.DecodeError
                    raise BundleError(
                        "INVALID_ARGUMENT", f"Failed to parse warmup record: {record[:64]!r} from {path}"
                    ) from exc
                kind = log.WhichOneof("log_type")
                if kind != "predict_log":
                    raise BundleError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind} ({path})")
                request = log.predict_log.request
                inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
                self.run(request.model_spec.signature_name, inputs, output_filter=list(request.output_filter))
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise BundleError(
                        "INVALID_ARGUMENT",
                        f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}",
                    )
        except tf.errors.DataLossError as exc:
            raise BundleError(
                "DATA_LOSS", f"{exc.message}. Please verify your warmup data is in TFRecord format."
            ) from exc
        except tf.errors.OpError as exc:
            raise _error_from_tf(exc) from exc
        return count

    # ------------------------------------------------------------------ calls
    def signature(self, signature_name: str):
        name = signature_name or DEFAULT_SIGNATURE
        try:
            return name, self.signature_defs[name]
        except KeyError:
            raise BundleError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.') from None

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        *,
        timeout_ms: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature: ``inputs`` by input alias; returns outputs by alias (all, or ``output_filter``).

        ``timeout_ms`` (None: no deadline) is the time left for this call, as TF Serving takes it from the gRPC
        deadline: a call whose time is already up (<= 0) fails with DEADLINE_EXCEEDED before the Session runs,
        and so does a call that finishes past its deadline (its answer is dropped). The run itself is not
        interrupted: it executes in the calling thread (see ``_callable``), where TF's ``RunOptions`` timeout
        could not stop it either.
        """
        if self._closed:
            raise BundleError("UNAVAILABLE", f"SavedModel at {self.export_dir} is unloaded")
        name, signature = self.signature(signature_name)
        if signature.method_name not in _SIGNATURE_METHODS:
            raise BundleError(
                "INTERNAL",
                "Expected prediction signature method_name to be one of {"
                + ", ".join(_SIGNATURE_METHODS)
                + "}. Was: "
                + signature.method_name,
            )
        feeds = self._check_inputs(signature, inputs)
        aliases = self._check_outputs(signature, output_filter)
        deadline = None
        if timeout_ms is not None:
            if timeout_ms <= 0:
                raise BundleError("DEADLINE_EXCEEDED", _DEADLINE_MESSAGE)
            deadline = time.monotonic() + timeout_ms / 1000.0
        if self._scheduler is not None and set(aliases) == set(signature.outputs):
            # batched: TF Serving batches calls that fetch all of a signature's outputs
            everything = tuple(signature.outputs)
            outputs = dict(
                zip(everything, self._scheduler.submit(self._queue(name, signature), feeds, deadline), strict=True)
            )
            values = [outputs[a] for a in aliases]
        else:
            values = _call(self._callable(name, signature, aliases), feeds)
        if deadline is not None and time.monotonic() > deadline:
            raise BundleError("DEADLINE_EXCEEDED", _DEADLINE_MESSAGE)
        return dict(zip(aliases, values, strict=True))

    def _queue(self, name: str, signature):
        queue = self._queues.get(name)
        if queue is None:
            run = self._callable(name, signature, tuple(signature.outputs))
            with self._lock:
                queue = self._queues.get(name)
                if queue is None:
                    names = [signature.inputs[a].name for a in sorted(signature.inputs)]
                    queue = self._queues[name] = self._scheduler.queue(lambda *feeds: _call(run, feeds), names)
        return queue

    @staticmethod
    def _check_inputs(signature, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        expected = sorted(signature.inputs)
        sent = sorted(inputs)
        if len(sent) > len(expected) or (len(sent) < len(expected) and not signature.defaults):
            extra = sorted(set(sent) - set(expected))
            missing = sorted(set(expected) - set(sent))
            raise BundleError(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sent)}}}) "
                f"!= len({{{','.join(expected)}}}). Sent extra: {{{','.join(extra)}}}. "
                f"Missing but required: {{{','.join(missing)}}}.",
            )
        feeds = []
        for index, alias in enumerate(expected):
            info = signature.inputs[alias]
            if alias not in inputs:
                raise BundleError(
                    "INVALID_ARGUMENT",
                    f"Signature input alias: {alias}(feed name: {info.name}) not found in request and no default "
                    f"value provided. Inputs expected to be in the request {{{','.join(sent)}}}, or default input "
                    f"alias set: ",
                )
            value = inputs[alias]
            if not isinstance(value, np.ndarray):
                value = np.asarray(value, dtype=object if _is_text(value) else None)
            got = _dtype_of(value)
            if got != info.dtype:
                raise BundleError(
                    "INVALID_ARGUMENT",
                    f"Expects arg[{index}] to be {dtype_string(info.dtype)} but {dtype_string(got)} is provided",
                )
            if not _shape_compatible(value.shape, info.tensor_shape):
                raise BundleError(
                    "INVALID_ARGUMENT",
                    f"input tensor alias: {alias} has shape {format_shape(value.shape)}, incompatible with the "
                    f"signature's shape {format_shape(d.size for d in info.tensor_shape.dim)}",
                )
            feeds.append(value)
        if len(set(sent) & set(expected)) != len(sent):
            raise BundleError(
                "INVALID_ARGUMENT",
                "Inputs contains invalid name. Used request inputs: "
                f"{','.join(a for a in expected if a in inputs)}, request input: {','.join(sent)}",
            )
        return feeds

    @staticmethod
    def _check_outputs(signature, output_filter: Sequence[str] | None) -> tuple[str, ...]:
        if not output_filter:
            return tuple(signature.outputs)
        seen: list[str] = []
        for alias in output_filter:
            if alias not in signature.outputs:
                raise BundleError(
                    "INVALID_ARGUMENT",
                    f"output tensor alias not found in signature: {alias} Outputs "
                    f"expected to be in the set {{{','.join(sorted(signature.outputs))}}}.",
                )
            if alias in seen:
                raise BundleError("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return tuple(seen)

    def _callable(self, name: str, signature, aliases: tuple[str, ...]):
        """The cached callable running ``signature`` for outputs ``aliases``.

        A ``CallableOptions`` callable is TF's fast path (``TF_SessionRunCallable``, as the C++ server's
        ``Session::MakeCallable``); ``make_callable(feed_list=...)`` or ``Session.run(options=...)`` would be a
        full ``Session.run`` per call (~4x slower for the retrieval signature). ``inter_op_thread_pool = -1``
        runs the graph's ops in the calling thread (TF does so for a graph with one executor, as these are),
        saving the hand-off to the inter-op pool: about half the latency and under half the CPU time of a
        retrieval call. Answers are the same.
        """
        key = (name, aliases)
        run = self._callables.get(key)
        if run is None:
            with self._lock:
                run = self._callables.get(key)
                if run is None:
                    if self._closed:
                        raise BundleError("UNAVAILABLE", f"SavedModel at {self.export_dir} is unloaded")
                    from tensorflow.core.protobuf import config_pb2

                    options = config_pb2.CallableOptions(
                        feed=[signature.inputs[a].name for a in sorted(signature.inputs)],
                        fetch=[signature.outputs[a].name for a in aliases],
                    )
                    options.run_options.inter_op_thread_pool = -1
                    run = self._session._make_callable_from_options(options)
                    self._callables[key] = run
        return run

    def close(self) -> None:
        """Release the Session; later calls fail with UNAVAILABLE."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._callables.clear()
                for queue in self._queues.values():
                    self._scheduler.drop(queue)
                self._queues.clear()
                self._session.close()


def _call(run, feeds) -> list:
    """Run a callable; TensorFlow's errors become BundleErrors with their canonical code."""
    try:
        return run(*feeds)
    except Exception as exc:
        import tensorflow as tf

        if isinstance(exc, tf.errors.OpError):
            raise _error_from_tf(exc) from exc
        raise BundleError("INVALID_ARGUMENT", str(exc)) from exc


def _is_text(value) -> bool:
    probe = value
    while isinstance(probe, (list, tuple)) and probe:
        probe = probe[0]
    return isinstance(probe, (bytes, str))
