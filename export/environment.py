"""The process environment TensorFlow reads once, when it is first imported: call ``configure()`` where a
process starts (``python -m export``, ``python -m export.validate_child``, ``python -m export.object_store``,
tests/conftest.py, the benchmarks), before anything imports TensorFlow; the loaders that import TensorFlow
themselves (export/data/tfds.py, export/data/split.py) call it too, for a library caller that did not.

- ``TF_USE_LEGACY_KERAS=1``: tensorflow-recommenders needs Keras 2 (tf-keras), not TensorFlow 2.16+'s Keras 3.
- ``TF_CPP_MIN_LOG_LEVEL=2``: TensorFlow's C++ logging shows errors only.

An explicit setting in the environment wins. Importing this module (or the ``export`` package) sets nothing.
"""

from __future__ import annotations

import os

DEFAULTS = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def configure(environ: dict[str, str] | None = None) -> None:
    """Set each of ``DEFAULTS`` in ``environ`` (``os.environ`` by default: this process and its children) unless
    it is already set."""
    target = os.environ if environ is None else environ
    for name, value in DEFAULTS.items():
        target.setdefault(name, value)
