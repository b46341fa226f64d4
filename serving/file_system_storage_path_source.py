"""Which versions of a model exist and which are aspired, as TF Serving's file system storage path source.

As ``sources/storage_path/file_system_storage_path_source.cc``: a model's base path is listed; children whose
names parse as 64-bit integers are versions (``00000123`` is 123), anything else (a staging folder) is
ignored; the model's ``ServableVersionPolicy`` (``latest { num_versions }``, ``all``, ``specific { versions
}``) picks the *aspired* versions among them. Pure functions: the manager thread
(:mod:`serving.aspired_versions_manager`) calls them on every poll, the tests call them directly.

Each completed poll of every model is logged at DEBUG on this module's logger (``Polled N model(s) (poll
K)``), the local form of TF Serving's ``VLOG(1)`` lines of this file: ``python -m serving`` shows them when
``TF_CPP_VMODULE`` names ``file_system_storage_path_source`` with a level of 1 or more.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

logger = logging.getLogger(__name__)

_VERSION_NAME = re.compile(r"^[0-9]+$")
_INT64_MAX = 2**63 - 1


def version_dirs(base_path: str) -> dict[int, str]:
    """{version: directory name} under ``base_path``: children named by a 64-bit integer; others ignored.

    The name keeps its own spelling (``00000123`` is version 123); of two spellings of one number the
    first listed wins."""
    found: dict[int, str] = {}
    for entry in os.scandir(base_path):
        if _VERSION_NAME.match(entry.name) and entry.is_dir():
            number = int(entry.name)
            if number <= _INT64_MAX:
                found.setdefault(number, entry.name)
    return found


def list_versions(base_path: str) -> list[int]:
    """Version numbers under ``base_path`` (see :func:`version_dirs`), ascending."""
    return sorted(version_dirs(base_path))


def aspired_versions(policy, on_disk: Iterable[int]) -> set[int]:
    """Apply a ``FileSystemStoragePathSourceConfig.ServableVersionPolicy`` to the versions found."""
    choice = policy.WhichOneof("policy_choice")
    on_disk = sorted(on_disk)
    if choice == "all":
        return set(on_disk)
    if choice == "specific":
        return set(on_disk) & set(policy.specific.versions)
    num = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return set(on_disk[-num:])


def log_poll(models: int, count: int) -> None:
    """Say that poll ``count`` of ``models`` base paths has completed (DEBUG; see the module docstring)."""
    logger.debug("Polled %d model(s) (poll %d)", models, count)
