"""Training across machines: ``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``.

Kubernetes training Jobs (and TF's own launchers) describe the cluster in ``TF_CONFIG``::

    {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}

With more than one worker, every worker runs the same ``python -m export`` command: the towers train as one
model, each step's global batch split between the workers and the gradients summed across them (so every
worker holds the same weights after every step). Worker 0, the chief, then evaluates, builds the indexes,
validates and publishes; the others exit once training is done. Against one process:

- the search over hyperparameters is off (its time budget would end at different trials on each worker);
- the ``default`` preset's initial weights come from seeds of their own (``TrainConfig.seeded_init``), the
  same on every worker and in one process; the ``seed`` preset keeps Keras' defaults (the tutorial's) and so
  starts elsewhere under a strategy;
- the full softmax's loss is divided by the number of workers (the gradients are summed), so the objective
  is the one-process one: a test finds the same top-10 for most users; the in-batch softmax draws its
  negatives from each worker's share of the batch.

The strategy must exist before TensorFlow runs anything else, so ``start`` is called first by the CLI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from export.config import ConfigError


@dataclass(frozen=True)
class Worker:
    index: int
    count: int

    @property
    def chief(self) -> bool:
        return self.index == 0


def worker(environ=os.environ) -> Worker | None:
    """This process's place in a cluster of more than one worker (``TF_CONFIG``), or None to train alone."""
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        workers = config.get("cluster", {}).get("worker", [])
        task = config.get("task", {})
        index = int(task.get("index", 0))
        kind = task.get("type", "worker")
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"TF_CONFIG is not the JSON TensorFlow expects ({exc}); e.g. "
            '{"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from None
    if kind != "worker" or set(config.get("cluster", {})) - {"worker"}:
        raise ConfigError(
            f"TF_CONFIG: only a cluster of workers is supported (task type {kind!r}, roles "
            f"{sorted(config.get('cluster', {}))}): MultiWorkerMirroredStrategy has no chief or "
            "parameter servers"
        )
    if len(workers) <= 1:
        return None
    if not 0 <= index < len(workers):
        raise ConfigError(f"TF_CONFIG: task index {index} is not one of the {len(workers)} workers")
    return Worker(index, len(workers))


_STRATEGY = None


def start(report=print):
    """The strategy for this process's cluster (created once), or None when it trains alone."""
    global _STRATEGY
    me = worker()
    if me is None:
        return None
    if _STRATEGY is None:
        import tensorflow as tf

        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
        report(
            f"distributed training: worker {me.index} of {me.count} ({_STRATEGY.num_replicas_in_sync} replicas in sync)"
        )
    return _STRATEGY


def strategy():
    """The strategy ``start`` created, or None."""
    return _STRATEGY
