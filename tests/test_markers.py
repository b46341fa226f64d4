"""The slow/root lists of tests/conftest.py name tests that exist, so that the fast lane cannot silently grow."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# tests/conftest.py by its path: `import conftest` would find a part's conftest on pytest's pythonpath.
_spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "tests" / "conftest.py")
assert _spec is not None and _spec.loader is not None
conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conftest)


@pytest.mark.parametrize("entry", conftest.SLOW + conftest.NEEDS_ROOT)
def test_every_listed_module_and_test_exists(entry):
    path, _, name = entry.partition("::")
    assert (ROOT / path).is_file(), f"{path} does not exist"
    if name:
        assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), f"no test {name} in {path}"


def test_an_entry_marks_its_module_or_test_with_every_parameter_and_nothing_else():
    entries = ("part/test_a.py", "part/test_b.py::test_one")
    assert conftest._listed("part/test_a.py::test_x[4.25.0-1.49.1]", entries)
    assert conftest._listed("part/test_b.py::test_one", entries)
    assert conftest._listed("part/test_b.py::test_one[tf]", entries)
    assert not conftest._listed("part/test_b.py::test_one_more", entries)
    assert not conftest._listed("part/test_a.pyc::test_x", entries)
