"""``--enable_batching``: TF Serving's request batching, and its ``BatchingParameters`` file.

The parameters: tensorflow-serving-api does not ship ``session_bundle_config_pb2``, so the message is
declared here from tensorflow_serving/servables/tensorflow/session_bundle_config.proto (same package, names
and field numbers) in a private descriptor pool.

The batching, as TF Serving's ``BatchingSession`` on a ``SharedBatchScheduler`` does it
(tensorflow_serving/batching/batching_session.cc, batching_util.cc, bundle_factory_util.cc and TensorFlow's
shared_batch_scheduler.h):

- one queue per loaded version and signature; a call is batched only when it asks for all the signature's
  outputs (an ``output_filter`` subset runs on its own, as TF Serving's "Bypassing batcher");
- a call whose 0th dimension exceeds ``max_batch_size`` fails: INVALID_ARGUMENT ``Task size N is larger than
  maximum input batch size M``; one that does not fit the open batch closes it, unless ``max_enqueued_batches``
  batches wait already: UNAVAILABLE ``The batch scheduling queue to which this task was submitted is full;
  ...``;
- ``num_batch_threads`` threads, shared by all queues, run a batch when it is full or when its first call
  has waited ``batch_timeout_micros``;
- the inputs of the calls are concatenated; with ``pad_variable_length_inputs`` each call's tensor is first
  padded to the batch's largest dimensions with *that call's first element*; without it, differing shapes
  fail the batch (FAILED_PRECONDITION, TF Serving's message); a batch is padded up to the next of
  ``allowed_batch_sizes`` with the last call's first row; outputs are split back along the 0th dimension;
- a batch whose every call's deadline passed while queued fails with RESOURCE_EXHAUSTED ``Run() timeout
  exceeded while waiting in batching queue``.

Not emulated: ``enable_large_batch_splitting`` and the fields after it (not declared here; ignored with a
warning), priority queues, batching metrics.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from serving.errors import StatusError

logger = logging.getLogger(__name__)

_FIELDS = (  # name, number, label, type or message type
    ("max_batch_size", 1, "optional", ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, "optional", ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, "optional", ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, "optional", ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, "optional", ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, "repeated", descriptor_pb2.FieldDescriptorProto.TYPE_INT64),
    ("pad_variable_length_inputs", 7, "optional", descriptor_pb2.FieldDescriptorProto.TYPE_BOOL),
)


@functools.cache
def batching_parameters_class():
    """The ``tensorflow.serving.BatchingParameters`` message class."""
    try:  # a full tensorflow-serving build ships it
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    labels = {
        "optional": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        "repeated": descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    }
    for name, number, label, kind in _FIELDS:
        field = message.field.add(name=name, number=number, label=labels[label], json_name=name)
        if isinstance(kind, str):
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = kind
        else:
            field.type = kind
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def parse_batching_parameters(text: str):
    """Parse text-format BatchingParameters; text_format.ParseError on bad syntax or types.

    Fields added to the proto after the version declared here are accepted with a warning, so a file
    written for a newer TF Serving still starts the server.
    """
    params = batching_parameters_class()()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as exc:
        if "has no field named" not in str(exc):
            raise
        params = batching_parameters_class()()
        text_format.Parse(text, params, allow_unknown_field=True)
        logger.warning("batching parameters: ignored fields unknown to this server (%s)", exc)
    return params


# --------------------------------------------------------------------------- the scheduler
@dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults for unset fields (SharedBatchScheduler's QueueOptions and
    Options: 1000, 0 µs, 10, one thread per core)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise StatusError("INVALID_ARGUMENT", f"batching parameters: {name} must be positive")
        if self.batch_timeout_micros < 0:
            raise StatusError("INVALID_ARGUMENT", "batching parameters: batch_timeout_micros must not be negative")
        if self.allowed_batch_sizes and self.allowed_batch_sizes[-1] != self.max_batch_size:
            raise StatusError(
                "INVALID_ARGUMENT",
                "Last entry in allowed_batch_sizes must match max_batch_size; "
                f"last entry was {self.allowed_batch_sizes[-1]}; expected {self.max_batch_size}",
            )

    @classmethod
    def from_parameters(cls, params) -> BatchingOptions:
        defaults = cls()

        def value(name: str):
            return getattr(params, name).value if params.HasField(name) else getattr(defaults, name)

        return cls(
            max_batch_size=value("max_batch_size"),
            batch_timeout_micros=value("batch_timeout_micros"),
            max_enqueued_batches=value("max_enqueued_batches"),
            num_batch_threads=value("num_batch_threads"),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            pad_variable_length_inputs=params.pad_variable_length_inputs,
        )


class _Task:
    __slots__ = ("deadline", "done", "error", "feeds", "outputs", "size")

    def __init__(self, feeds: Sequence[np.ndarray], size: int, deadline: float | None) -> None:
        self.feeds, self.size, self.deadline = feeds, size, deadline
        self.done = threading.Event()
        self.outputs: list[np.ndarray] | None = None
        self.error: tuple[str, str] | None = None


class _Queue:
    """One signature's batches: ``batches[-1]`` is the open one."""

    def __init__(self, run: Callable[..., Sequence[np.ndarray]], input_names: Sequence[str]) -> None:
        self.run, self.input_names = run, tuple(input_names)
        self.batches: collections.deque[list[_Task]] = collections.deque([[]])
        self.open_since = 0.0

    def open_size(self) -> int:
        return sum(t.size for t in self.batches[-1])


class BatchScheduler:
    """TF Serving's SharedBatchScheduler: ``num_batch_threads`` threads serving every queue."""

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self._cond = threading.Condition()
        self._queues: list[_Queue] = []
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def queue(self, run: Callable[..., Sequence[np.ndarray]], input_names: Sequence[str]) -> _Queue:
        """A new queue whose batches run with ``run(*merged_inputs)`` (inputs, named ``input_names`` for error
        messages, and outputs in a fixed order)."""
        queue = _Queue(run, input_names)
        with self._cond:
            self._queues.append(queue)
        return queue

    def drop(self, queue: _Queue) -> None:
        with self._cond:
            if queue in self._queues:
                self._queues.remove(queue)

    def submit(self, queue: _Queue, feeds: Sequence[np.ndarray], deadline: float | None) -> list[np.ndarray]:
        """Batch one call; blocks until its batch ran. Returns its outputs, or raises StatusError."""
        if not feeds:
            raise StatusError("INVALID_ARGUMENT", "Batching Run() must have at least one input tensor")
        if any(np.ndim(f) == 0 for f in feeds):
            raise StatusError("INVALID_ARGUMENT", "Batching Run() input tensors must have at least one dimension")
        sizes = {np.shape(f)[0] for f in feeds}
        if len(sizes) != 1:
            raise StatusError("INVALID_ARGUMENT", "Batching Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop()
        limit = self.options.max_batch_size
        if size > limit:
            raise StatusError("INVALID_ARGUMENT", f"Task size {size} is larger than maximum input batch size {limit}")
        task = _Task(feeds, size, deadline)
        with self._cond:
            if self._stopped:
                raise StatusError("UNAVAILABLE", "the batch scheduler is stopped")
            if queue.open_size() + size > limit:
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise StatusError(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted "
                        f"is full; currently {len(queue.batches)} batches enqueued and "
                        f"max_enqueued_batches is {self.options.max_enqueued_batches}",
                    )
                queue.batches.append([])
            if not queue.batches[-1]:
                queue.open_since = time.monotonic()
            queue.batches[-1].append(task)
            self._cond.notify_all()
        task.done.wait()
        if task.error is not None:
            raise StatusError(*task.error)
        assert task.outputs is not None  # the batch thread sets one of error and outputs before done
        return task.outputs

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def _take(self) -> tuple[_Queue, list[_Task]] | float | None:
        """A schedulable batch (closed, or open and full or timed out), else the seconds until one may be."""
        now = time.monotonic()
        wait = None
        timeout = self.options.batch_timeout_micros / 1e6
        for queue in sorted(self._queues, key=lambda q: q.open_since):
            if len(queue.batches) >= 2:
                return queue, queue.batches.popleft()
            if queue.batches[-1]:
                due = queue.open_since + timeout
                if queue.open_size() >= self.options.max_batch_size or now >= due or self._stopped:
                    batch = queue.batches.popleft()
                    queue.batches.append([])
                    return queue, batch
                wait = due - now if wait is None else min(wait, due - now)
        return wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    taken = self._take()
                    if isinstance(taken, tuple):
                        break
                    if self._stopped:
                        return
                    self._cond.wait(taken)
            queue, tasks = taken
            try:
                outputs = self._process(queue, tasks)
            except StatusError as exc:
                for task in tasks:
                    task.error = (exc.code, exc.message)
            except Exception as exc:  # a bug: every caller of the batch gets it, the thread lives on
                logger.exception("batch failed")
                for task in tasks:
                    task.error = ("INTERNAL", f"{type(exc).__name__}: {exc}")
            else:
                for task, out in zip(tasks, outputs, strict=True):
                    task.outputs = out
            for task in tasks:
                task.done.set()

    def _process(self, queue: _Queue, tasks: list[_Task]) -> list[list[np.ndarray]]:
        now = time.monotonic()
        if all(t.deadline is not None and t.deadline <= now for t in tasks):
            raise StatusError("RESOURCE_EXHAUSTED", "Run() timeout exceeded while waiting in batching queue")
        total = sum(t.size for t in tasks)
        padded_total = next((s for s in self.options.allowed_batch_sizes if s >= total), total)
        merged = merge_inputs(
            [t.feeds for t in tasks],
            queue.input_names,
            pad=self.options.pad_variable_length_inputs,
            padding_rows=padded_total - total,
        )
        combined = queue.run(*merged)
        bounds = np.cumsum([0] + [t.size for t in tasks])
        for tensor in combined:
            if np.ndim(tensor) == 0:
                raise StatusError("FAILED_PRECONDITION", "Batched output tensor has 0 dimensions")
            if np.shape(tensor)[0] != padded_total:
                raise StatusError(
                    "FAILED_PRECONDITION",
                    "Batched output tensor's 0th dimension does not equal the "
                    "sum of the 0th dimension sizes of the input tensors",
                )
        return [[tensor[bounds[i] : bounds[i + 1]] for tensor in combined] for i in range(len(tasks))]


def pad_to(tensor: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """batching_util.cc's AddPadding: ``tensor`` grown (after its 0th dimension) to ``shape`` with its own first
    element as the pad value."""
    if tuple(tensor.shape[1:]) == tuple(shape[1:]):
        return tensor
    if tensor.size < 1:
        raise StatusError("INVALID_ARGUMENT", "Got empty tensor in batch of non-empty tensors.")
    padded = np.full((tensor.shape[0], *shape[1:]), tensor.flat[0], dtype=tensor.dtype)
    padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return padded


def merge_inputs(
    calls: Sequence[Sequence[np.ndarray]], names: Sequence[str], *, pad: bool, padding_rows: int = 0
) -> list[np.ndarray]:
    """BatchingSession::MergeInputTensors: each input (``names[i]``) of the calls concatenated along the 0th
    dimension, after padding (``pad``) and followed by ``padding_rows`` copies of the last call's first row."""
    merged = []
    for index, name in enumerate(names):
        tensors = [call[index] for call in calls]
        if len({t.ndim for t in tensors}) != 1 or (
            not pad and any(t.shape[1:] != tensors[0].shape[1:] for t in tensors)
        ):
            raise StatusError(
                "FAILED_PRECONDITION",
                f"Tensors with name '{name}' from different tasks have "
                "different shapes and padding is turned off.Set pad_variable_length_inputs to true, "
                "or ensure that all tensors with the same namehave equal dimensions starting with "
                "the first dim.",
            )
        if pad:
            biggest = np.max([t.shape for t in tensors], axis=0)
            tensors = [pad_to(t, biggest) for t in tensors]
        if padding_rows:
            tensors = tensors + [tensors[-1][:1]] * padding_rows
        merged.append(np.concatenate(tensors, axis=0))
    return merged
