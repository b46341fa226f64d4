"""The fast lane (scripts/test.sh --fast) leaves out every marked group, and a test that runs the export CLI per
test cannot land in it unmarked (tests/conftest.py refuses it at collection)."""

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


def test_the_fast_lane_deselects_every_registered_marker():
    block = re.search(r"^markers = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    assert block is not None
    names = set(re.findall(r'^\s*"(\w+):', block.group(1), re.M))
    [expression] = re.findall(r'-m "([^"]+)"', (ROOT / "scripts" / "test.sh").read_text())
    assert set(re.findall(r"not (\w+)", expression)) == names == {"slow", "engine", "root", "tools"}


class _Item:
    def __init__(self, nodeid: str, fixturenames: tuple[str, ...], marks: tuple[str, ...] = ()):
        self.nodeid, self.fixturenames, self._marks = nodeid, fixturenames, marks

    def get_closest_marker(self, name: str):
        return getattr(pytest.mark, name) if name in self._marks else None


def test_a_test_that_runs_the_export_cli_per_test_must_be_marked_slow():
    items = [
        _Item("a.py::test_export", ("tmp_path", "export_cli")),
        _Item("a.py::test_store", ("make_model_store",), marks=("slow",)),
        _Item("a.py::test_shared", ("model_store",)),
    ]
    assert conftest.unmarked_slow(items) == ["a.py::test_export"]


def test_the_marks_sit_where_the_tests_are_defined_not_in_a_central_list():
    assert not hasattr(conftest, "SLOW") and not hasattr(conftest, "NEEDS_ROOT")
    marked = [
        p for p in (ROOT / "tests").rglob("test_*.py") if re.search(r"pytest\.mark\.(slow|root)\b", p.read_text())
    ]
    assert len(marked) > 10
