"""A GroupLens download as it arrives, a folder or a zip: its file names at the top level and one folder down,
and their bytes. export/data/grouplens.py (100K) and export/data/releases.py (the later releases) find their
files through it.

    with archive.opened(path) as found:   # None: neither a folder nor a zip
        if found is not None and "ml-1m/ratings.dat" in found.names:
            content = found.read("ml-1m/ratings.dat")

Names use "/" whatever the layout. A zip is open only inside the ``with``; reading a file that cannot be read is a
DataError naming it ("cannot read <file>: ..." in a folder, "cannot read zip <zip>: ..." in a zip).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from export.data.records import DataError


@dataclass(frozen=True)
class Archive:
    """The files of a folder or an open zip, top level and one folder down."""

    path: str  # the folder or zip as given
    names: frozenset[str]  # "name" or "folder/name"
    _read: Callable[[str], bytes]
    _shown: Callable[[str], str]

    def read(self, name: str) -> bytes:
        """The bytes of ``name`` (one of ``names``)."""
        return self._read(name)

    def shown(self, name: str) -> str:
        """``name`` as errors give it: its path in the folder, or ``zip:name``."""
        return self._shown(name)


@contextlib.contextmanager
def opened(path: str) -> Iterator[Archive | None]:
    """The folder or zip at ``path`` as an Archive for the ``with`` block (the zip closed after it), or None when
    ``path`` is neither. A zip that cannot be read is a DataError."""
    if os.path.isdir(path):
        yield Archive(path, _folder_names(path), lambda name: read_file(os.path.join(path, name)),
                      lambda name: os.path.join(path, name))  # fmt: skip
        return
    if not zipfile.is_zipfile(path):
        yield None
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = frozenset(n for n in archive.namelist() if n.count("/") <= 1 and not n.endswith("/"))
            yield Archive(path, names, archive.read, lambda name: f"{path}:{name}")
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read zip {path}: {exc}") from exc


def _folder_names(path: str) -> frozenset[str]:
    names = []
    for entry in os.scandir(path):
        if entry.is_file():
            names.append(entry.name)
        elif entry.is_dir():
            names += [f"{entry.name}/{f.name}" for f in os.scandir(entry.path) if f.is_file()]
    return frozenset(names)


def read_file(file_path: str) -> bytes:
    """A file's bytes, or a DataError that names the file."""
    try:
        with open(file_path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"cannot read {file_path}: {exc}") from exc
