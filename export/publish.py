"""The model store: staging, atomic publish, strictly increasing versions, pruning (TFX Pusher-style).

A version is built in a non-numeric sibling ``<base>/.staging-<pid>-<uuid>``, fsynced, then renamed to
its integer name, which TF Serving picks up only once complete. A crash at any moment leaves either no
new version or a complete one; the leftovers are non-numeric (TF Serving ignores them) and the next run
removes those whose process is gone (or that bear this process's own id without having been made by it:
a container's export is PID 1 on every run). An existing version is never overwritten (``os.rename`` onto a
non-empty directory fails; the next number is tried).

Pruning keeps the newest ``keep`` versions and never removes: the newest one, the one that was newest
before this publish (a server keeps serving it until the new one is AVAILABLE), nor a version pinned by
a label or a ``specific`` policy in a TF Serving ``--model_config_file``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"

_made_here: set[str] = set()  # names of the staging folders this process created (see clean_stale)


class PublishError(RuntimeError):
    """The store cannot be written or read as a TF Serving model_base_path."""


def versions(base: Path) -> list[int]:
    """Integer versions under ``base`` (names that parse as non-negative integers, as TF Serving reads them)."""
    base = Path(base)
    if not base.is_dir():
        return []
    out = []
    for child in base.iterdir():
        if child.is_dir() and child.name.isdigit():
            out.append(int(child.name))
    return sorted(out)


def next_version(base: Path, now: float | None = None) -> int:
    """max(unix seconds now, newest existing + 1): strictly greater than every existing version."""
    existing = versions(base)
    now_s = int(time.time() if now is None else now)
    return max([now_s] + [v + 1 for v in existing])


def ensure_writable(root: Path) -> None:
    """Create ``root`` if needed and prove it writable; raise PublishError with a one-line reason if not."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f"{STAGING_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise PublishError(f"--model-base-path {root} is not writable: {exc.strerror or exc}") from exc
    if not root.is_dir():
        raise PublishError(f"--model-base-path {root} is not a directory")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(base: Path) -> list[Path]:
    """Remove staging leftovers whose creating process is gone (a crashed publish).

    A leftover named with this process's own pid that this process did not create comes from an earlier
    process that had the same pid (``python -m export`` is PID 1 in every run of its container)."""
    removed: list[Path] = []
    base = Path(base)
    if not base.is_dir():
        return removed
    for child in base.iterdir():
        if not child.name.startswith(STAGING_PREFIX):
            continue
        owner = child.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        pid = int(owner) if owner.isdigit() else None
        if pid is not None and _pid_alive(pid) and (pid != os.getpid() or child.name in _made_here):
            continue  # this or another export is building it right now
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        removed.append(child)
        logger.info("removed stale staging leftover %s", child)
    return removed


def staging_dir(base: Path) -> Path:
    """A fresh non-numeric folder next to the versions (same filesystem, so the rename is atomic)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    path.mkdir()
    _made_here.add(path.name)
    return path


def fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (and ``path`` itself)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staged: Path, base: Path, version: int, before_rename=None) -> int:
    """Rename ``staged`` to ``base/<version>`` atomically; if that number is taken or no longer the
    greatest, use the next free one. ``before_rename(version)`` may rewrite files in ``staged`` (e.g. the
    manifest's version) before the final fsync. Returns the published version."""
    staged, base = Path(staged), Path(base)
    for _ in range(100):
        version = max(version, next_version(base, now=0))
        if before_rename is not None:
            before_rename(version)
        fsync_tree(staged)
        target = base / str(version)
        try:
            os.rename(staged, target)
        except OSError as exc:
            if target.exists():
                version += 1
                continue
            raise PublishError(f"cannot publish {staged} as {target}: {exc.strerror or exc}") from exc
        _fsync_dir(base)
        logger.info("published %s", target)
        return version
    raise PublishError(f"could not find a free version number under {base}")


def pinned_versions(model_config_file: Path | None, model_name: str) -> set[int]:
    """Versions a TF Serving models.config pins for ``model_name`` (labels and ``specific`` policies)."""
    if model_config_file is None:
        return set()
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        text = Path(model_config_file).read_text(encoding="utf-8")
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as exc:
        raise PublishError(f"cannot read --model-config-file {model_config_file}: {exc}") from exc
    pinned: set[int] = set()
    for entry in config.model_config_list.config:
        if entry.name != model_name:
            continue
        pinned.update(int(v) for v in entry.version_labels.values())
        if entry.model_version_policy.HasField("specific"):
            pinned.update(int(v) for v in entry.model_version_policy.specific.versions)
    return pinned


def prune(base: Path, keep: int, protected: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """Remove all but the newest ``keep`` versions, never the newest nor a ``protected`` one.

    A version is first renamed to a non-numeric name (so a server never sees half a deleted version),
    then deleted. Returns the removed versions."""
    existing = versions(base)
    if not existing:
        return []
    kept = set(existing[-max(keep, 1) :]) | {existing[-1]} | set(protected)
    removed = []
    for v in existing:
        if v in kept:
            continue
        doomed = Path(base) / f"{STAGING_PREFIX}{os.getpid()}-pruned-{v}"
        os.rename(Path(base) / str(v), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(v)
        logger.info("pruned %s/%d", base, v)
    return removed
