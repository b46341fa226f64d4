"""Publish a local store's new versions to an object store (gs://...), ``saved_model.pb`` last.

An object store has no atomic rename, and a version "folder" exists as soon as its first object does. So
:func:`copy_version` writes the version's files in an order that keeps every load a server may start
safe: every other file first (variables, assets, warmup records), ``saved_model.pb`` last (as TFX's
Pusher copies). A server that lists the version early finds no ``saved_model.pb``; its load fails ("no
SavedModel") and is retried (``--max_num_load_retries``), and a load that finds ``saved_model.pb`` finds
every other file already complete. The copy goes through TensorFlow's filesystem API (``tf.io.gfile``), so
the same code writes ``gs://`` (TensorFlow's built-in GCS filesystem) and local paths (what the tests use).

The local store is the one ``python -m export`` published into (export/publish.py: staged, validated,
renamed); this module only copies it. Per model it copies the newest local version if the destination has
no version as new (versions only ever increase, as in export/publish.py), and prunes nothing remotely.

    python -m export.object_store --store=/models --destination=gs://BUCKET/models
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import sys
from collections.abc import Callable
from pathlib import Path

from export import environment

logger = logging.getLogger(__name__)

LAST = "saved_model.pb"


class ObjectStoreError(RuntimeError):
    """A version cannot be published to the destination."""


def copy_order(version_dir: Path) -> list[str]:
    """The version's files (paths relative to it, "/"-separated), in upload order: ``saved_model.pb`` last."""
    version_dir = Path(version_dir)
    files = sorted(p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*") if p.is_file())
    if LAST not in files:
        raise ObjectStoreError(f"{version_dir} holds no {LAST}: not a SavedModel version")
    files.remove(LAST)
    return [*files, LAST]


def remote_versions(base: str) -> list[int]:
    """Integer versions under ``base`` (a gs:// or local path), as TF Serving lists them."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(base):
        return []
    return sorted(int(name.rstrip("/")) for name in tf.io.gfile.listdir(base) if name.rstrip("/").isdigit())


def copy_version(version_dir: Path, destination: str, after_file: Callable[[str], None] | None = None) -> list[str]:
    """Copy one version folder to ``destination`` (``.../<model>/<version>``) file by file, in
    :func:`copy_order`. ``after_file(relative_path)`` is called after each file (tests observe the server
    there). Returns the files in the order copied."""
    import tensorflow as tf

    order = copy_order(version_dir)
    if tf.io.gfile.exists(posixpath.join(destination, LAST)):
        raise ObjectStoreError(f"{destination} already holds a version; versions are never overwritten")
    for relative in order:
        target = posixpath.join(destination, relative)
        tf.io.gfile.makedirs(posixpath.dirname(target))
        tf.io.gfile.copy(str(Path(version_dir) / relative), target, overwrite=True)
        if after_file is not None:
            after_file(relative)
    logger.info("copied %s to %s (%d files, %s last)", version_dir, destination, len(order), LAST)
    return order


def publish_store(store: Path, destination: str) -> dict[str, int]:
    """For each model folder of the local ``store``, copy its newest version under ``destination/<model>/``
    unless the destination already has that version or a newer one. Returns {model: version copied}."""
    from export.publish import versions

    store = Path(store)
    models = sorted(p.name for p in store.iterdir() if p.is_dir() and versions(p)) if store.is_dir() else []
    if not models:
        raise ObjectStoreError(f"no model versions under {store}")
    copied = {}
    for model in models:
        newest = versions(store / model)[-1]
        base = posixpath.join(destination.rstrip("/"), model)
        existing = remote_versions(base)
        if existing and existing[-1] >= newest:
            logger.warning("%s already has version %d >= %d; not copied", base, existing[-1], newest)
            continue
        copy_version(store / model / str(newest), posixpath.join(base, str(newest)))
        copied[model] = newest
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.object_store", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="the local store python -m export wrote")
    parser.add_argument("--destination", required=True, help="the servers' base path, e.g. gs://BUCKET/models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    environment.configure()  # a process start (python -m export.object_store), before TensorFlow is imported
    import tensorflow as tf

    try:
        copied = publish_store(args.store, args.destination)
    except (ObjectStoreError, OSError, tf.errors.OpError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for model, version in copied.items():
        print(f"published {model}/{version} to {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
