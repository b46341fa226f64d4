"""export/data/archive.py: a folder and a zip of the same files show the same names (top level and one folder
down), read the same bytes, and the zip is closed after the ``with``."""

from __future__ import annotations

import zipfile

import pytest

from export.data import archive
from export.data.records import DataError

FILES = {"top.txt": b"a", "ml-1m/ratings.dat": b"b", "ml-1m/deeper/hidden.txt": b"c"}


def _tree(root):
    for name, content in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _zip(path):
    with zipfile.ZipFile(path, "w") as z:
        for name, content in FILES.items():
            z.writestr(name, content)
    return path


def test_a_folder_and_a_zip_show_the_same_files_and_the_zip_is_closed_after(tmp_path, monkeypatch):
    opened_zips = []
    original = zipfile.ZipFile

    def recording(*args, **kwargs):
        opened_zips.append(original(*args, **kwargs))
        return opened_zips[-1]

    monkeypatch.setattr(archive.zipfile, "ZipFile", recording)
    folder, packed = _tree(tmp_path / "folder"), _zip(tmp_path / "packed.zip")
    for path in (folder, packed):
        with archive.opened(str(path)) as found:
            assert found is not None
            assert found.names == {"top.txt", "ml-1m/ratings.dat"}
            assert found.read("ml-1m/ratings.dat") == b"b"
    assert found.shown("top.txt") == f"{packed}:top.txt"
    assert opened_zips and all(z.fp is None for z in opened_zips)  # closed


def test_neither_a_folder_nor_a_zip_is_none_and_an_unreadable_file_names_itself(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    with archive.opened(str(tmp_path / "plain.txt")) as found:
        assert found is None
    with archive.opened(str(tmp_path)) as found:
        assert found is not None
        with pytest.raises(DataError, match=r"cannot read .*missing\.txt"):
            found.read("missing.txt")
