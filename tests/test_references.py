"""The repository stands alone: every path its text points at is in the repository.

Scanned: the text files git knows (tracked, plus untracked ones that are not ignored, so that a new file
counts before its first commit): ``*.md``, ``*.py``, ``*.yml``/``*.yaml``, ``*.sh``, ``*.config``,
``*.toml`` and ``Dockerfile*``. A target exists if a clone has it: one of those files or a folder holding
one (ignored files such as ``.venv`` or a local model store do not count). Flagged, as ``file:line``:

- markdown links ``[text](target)`` (and ``[label]: target`` definitions) in ``.md`` files whose target
  is a relative path, resolved from the file's folder (``http(s):``, ``mailto:`` and other schemes and
  ``#anchors`` are skipped; a ``#fragment`` is dropped);
- any mention of a path under a ``shared`` or ``notes`` folder, resolved from the repository root or the
  file's folder;
- any absolute path under ``/work/``: where one machine keeps its checkout, not where a clone is;
- any ``.md`` file name (bare or with a path) that is neither next to the file nor at that path from the
  root;
- any path under one of the repository's top-level folders (``export/...``, ``tests/...``); one
  followed by ``*``, ``\\``, ``{`` or ``<`` is a pattern and must be the start of an existing path.

URLs are never checked (cite an outside document by its URL). This file's own examples of missing
references are not scanned.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]

SUFFIXES = (".md", ".py", ".yml", ".yaml", ".sh", ".config", ".toml")
EXCLUDED: tuple[str, ...] = ()  # path prefixes not scanned (none needed so far)
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()  # its examples are missing on purpose
# Examples for the self-test, joined at run time so that this file names no path in either folder.
SHARED_EXAMPLE, NOTES_EXAMPLE = "/".join(("shared", "SPEC.md")), "/".join(("notes", "API.md"))

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s)>\]`'\"]*")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_LINK_DEF = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_FOLDER = re.compile(r"(?<![\w./~-])((?:shared|notes)/[\w./-]*)")
_ABSOLUTE = re.compile(r"(?<![\w.~-])(/work/[\w./-]*)")
_MD_NAME = re.compile(r"(?<![\w./~-])((?:\.{1,2}/)?(?:[\w.-]+/)*[\w.-]*\w\.md)(?![\w/-])")
_PATTERN_CHARS = "*\\{<"


def text_files(root: Path = ROOT) -> list[str]:
    """Repository-relative paths of the files git knows (tracked or untracked-not-ignored) that exist.
    The tests run in a checkout (CI clones the repository), so git's list is always there."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({p for p in listed.split("\0") if p and (root / p).is_file()})


def _scanned(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return (name.endswith(SUFFIXES) or name.startswith("Dockerfile")) and not path.startswith(EXCLUDED)


def _universe(files: list[str]) -> set[str]:
    """The files and every folder holding one, as normalised repository-relative paths."""
    out = set(files)
    for f in files:
        parts = f.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _normal(path: str) -> str | None:
    """``path`` normalised, or None if it leaves the repository."""
    norm = os.path.normpath(path).replace(os.sep, "/")
    if norm == ".":
        return ""
    return None if norm == ".." or norm.startswith("../") or norm.startswith("/") else norm


class _Checker:
    """Resolves targets against the files of one scan."""

    def __init__(self, files: list[str]) -> None:
        self.universe = _universe(files) | {""}
        tops = sorted({f.split("/", 1)[0] for f in files if "/" in f})
        self.top_path = (
            re.compile(r"(?<![\w./<>$~@:-])((?:{})/[\w./-]*)".format("|".join(map(re.escape, tops)))) if tops else None
        )

    def exists(self, *candidates: str | None) -> bool:
        return any(c is not None and c in self.universe for c in candidates)

    def is_prefix(self, path: str) -> bool:
        return any(p.startswith(path) for p in self.universe)

    def line(self, name: str, line: str) -> list[tuple[str, str]]:
        """(reason, target) for each missing target of one line of ``name``, each target once."""
        folder = os.path.dirname(name)
        out: dict[str, str] = {}  # target -> reason: the first rule that sees a target reports it

        def here_or_root(target: str) -> bool:
            return self.exists(_normal(os.path.join(folder, target)), _normal(target))

        if name.endswith(".md"):
            targets = [m.group(1) for m in _LINK.finditer(line)] + [m.group(1) for m in _LINK_DEF.finditer(line)]
            for target in targets:
                if not target or target.startswith(("#", "//")) or _SCHEME.match(target):
                    continue
                path = unquote(target.split("#", 1)[0].split("?", 1)[0])
                if path and not self.exists(
                    _normal(path.lstrip("/") if path.startswith("/") else os.path.join(folder, path))
                ):
                    out.setdefault(target, "link to a missing file")
        text = _URL.sub(" ", line)
        for m in _ABSOLUTE.finditer(text):
            out.setdefault(m.group(1), "absolute path of a local checkout, not in a clone")
        for m in _FOLDER.finditer(text):
            target = m.group(1).rstrip(".")
            if not here_or_root(target):
                out.setdefault(target, "missing path")
        for m in _MD_NAME.finditer(text):
            if not here_or_root(m.group(1)):
                out.setdefault(m.group(1), "missing document")
        for m in self.top_path.finditer(text) if self.top_path is not None else ():
            target = m.group(1).rstrip(".")
            after = text[m.end() : m.end() + 1]
            pattern = bool(after) and after in _PATTERN_CHARS
            if not (self.is_prefix(target) if pattern else here_or_root(target)):
                out.setdefault(target, "missing path")
        return [(reason, target) for target, reason in out.items()]


def problems(root: Path, files: list[str]) -> list[str]:
    """``file:line: reason -> target`` for every reference in ``files`` (paths relative to ``root``) to a
    path that is not one of ``files`` nor a folder holding one."""
    checker = _Checker(files)
    found = []
    for name in files:
        if not _scanned(name):
            continue
        try:
            lines = (root / name).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, 1):
            found += [f"{name}:{number}: {reason} -> {target}" for reason, target in checker.line(name, line)]
    return found


def test_every_referenced_path_is_in_the_repository():
    found = [p for p in problems(ROOT, text_files()) if not p.startswith(SELF + ":")]
    assert not found, "references to paths a clone does not have:\n" + "\n".join(found)


def test_the_scan_reports_each_kind_of_missing_reference_and_accepts_real_ones(tmp_path):
    files = {
        "README.md": "\n".join(
            [
                "[ok](docs/guide.md) [ok](docs/guide.md#part) [ok](export/) [web](https://example.com/x.md)",
                "[mail](mailto:a@b.c) [anchor](#layout) ![img](docs/missing.png)",
                "[gone](docs/gone.md)",
                f"see {SHARED_EXAMPLE} and {NOTES_EXAMPLE}",
                "`cd /work/main && pytest`",
                "[def]: docs/nothing.txt",
            ]
        ),
        "docs/guide.md": "[up](../README.md) [bad](../export/nope.py) see guide.md, ../README.md and OTHER.md\n",
        "export/code.py": '"""See docs/guide.md, export/code.py, tests/test_*.py and export/missing.py."""\n',
        "tests/test_x.py": "import re\nre.search(r'export/code\\.py', '')\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    found = problems(tmp_path, sorted(files))
    assert found == [
        "README.md:2: link to a missing file -> docs/missing.png",
        "README.md:3: link to a missing file -> docs/gone.md",
        f"README.md:4: missing path -> {SHARED_EXAMPLE}",
        f"README.md:4: missing path -> {NOTES_EXAMPLE}",
        "README.md:5: absolute path of a local checkout, not in a clone -> /work/main",
        "README.md:6: link to a missing file -> docs/nothing.txt",
        "docs/guide.md:1: link to a missing file -> ../export/nope.py",
        "docs/guide.md:1: missing document -> OTHER.md",
        "export/code.py:1: missing path -> export/missing.py",
    ], found
