"""Delimited text files as pyarrow tables of strings: real-world defects read correctly, or named by file and line.

    text = read("ratings.csv", content, ",")                     # a header row names the columns
    text = read("ratings.dat", content, "\\x1f", columns=[...])    # no header: the columns are given
    ratings = text.numbers("rating")                             # float64, or one line naming the bad value
    text.counts.as_dict()                                        # {"read": N, "kept": M, "dropped": {...}}

What real files carry, and what becomes of it (pyarrow.csv does the parsing; this module adds what it lacks):

- a UTF-8 BOM: skipped (pyarrow skips it too, but a headerless file's first id would keep it);
- CRLF line endings: read as LF (pyarrow);
- blank lines: dropped and counted (pyarrow skips empty lines; lines of only spaces or tabs are emptied first,
  or pyarrow would read them as rows of one field and stop);
- quoted fields holding the delimiter or doubled quotes (``"American President, The (1995)"``): pyarrow's
  quoting rules (RFC 4180);
- empty trailing columns (a header ``userId,movieId,rating,timestamp,,,,``): a column the header leaves
  unnamed is dropped when it holds nothing, and is an error naming the first line where it holds a value;
- a repeated header row (files concatenated with their headers): dropped and counted;
- values with spaces around them (``" 42"``): trimmed (user ``"42"``, not a second user);
- numbers written as floats (``"4.0"``, ``"964982703.0"``): read (a time must still be a whole number);
- a row with too few or too many fields: one line naming the line number; when it is the last line and the
  file does not end with a newline (or ends inside a quoted field), the file is called truncated: pyarrow
  alone would read a cut-off quoted title as a shorter title, or stop without a line number;
- text that is not UTF-8 (a latin-1 title in a UTF-8 CSV): one line naming the line. It is not decoded as
  latin-1 instead: a file mixing both, or written as cp1252, would load with wrong characters unsaid.
  (GroupLens' latin-1 files, ml-100k's u.item and ML-1M's .dat, are decoded as latin-1 by their loaders.)

Duplicate (user, item) rows are dropped by the loaders through ``repeated_pairs``: the first row of a pair
(in file order) is kept; they are counted with the rest in ``Counts``.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from export.data.records import Coded, DataError

BOM = b"\xef\xbb\xbf"
_SPACE_ONLY_LINE = re.compile(rb"(?m)^[ \t]+\r?$")
_LEADING_BLANK = re.compile(rb"[\r\n]*")
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # what pyarrow reads as a float, less nan and inf
_UNNAMED = "\x00unnamed column "  # placeholder for a column the header leaves unnamed (never a real name)


@dataclasses.dataclass
class Counts:
    """Rows of one file: every line after the header is read, and kept or dropped for one reason."""

    read: int = 0
    blank_lines: int = 0
    repeated_headers: int = 0
    duplicates: int = 0

    @property
    def kept(self) -> int:
        return self.read - self.blank_lines - self.repeated_headers - self.duplicates

    def said(self, name: str) -> str | None:
        """One line saying what was dropped from file ``name`` and why (None when nothing was): loaders log it as
        a warning, so that no row leaves silently."""
        parts = [
            f"{count:,} {what}"
            for count, what in (
                (self.blank_lines, "blank line(s)"),
                (self.repeated_headers, "repeated header row(s)"),
                (self.duplicates, "repeated (user, item) row(s), the first of each kept"),
            )
            if count
        ]
        if not parts:
            return None
        return f"{name}: {self.read:,} lines read, {self.kept:,} kept; dropped {', '.join(parts)}"

    def as_dict(self) -> dict[str, Any]:
        """The data source record's ``rows``: ``{"read", "kept", "dropped": {reason: count}}``."""
        dropped = {
            "blank_lines": self.blank_lines,
            "repeated_headers": self.repeated_headers,
            "duplicates": self.duplicates,
        }
        return {"read": self.read, "kept": self.kept, "dropped": dropped}


@dataclasses.dataclass
class Text:
    """A delimited file read as strings: ``table`` (one pyarrow string column per named column), the file's
    ``counts``, and ``line(row)`` for naming a row in an error."""

    name: str
    table: Any  # pyarrow.Table
    counts: Counts
    _content: bytes | None  # None: not a text file (Parquet): rows are named by number, not line
    _header: bool
    _rows: np.ndarray | None = None  # table row -> row of the file's non-empty data lines, once rows are dropped

    def line(self, row: int) -> int:
        """The file's line number (1-based) of table row ``row`` (of a Parquet file: its row number)."""
        row = int(self._rows[row]) if self._rows is not None else int(row)
        if self._content is None:
            return row + 1
        return int(_nonempty_lines(self._content)[row + (1 if self._header else 0)])

    def where(self, row: int) -> str:
        """Table row ``row`` as an error names it: "line N" of a text file, "row N" of a Parquet file."""
        return f"{'row' if self._content is None else 'line'} {self.line(row)}"

    def drop(self, mask: np.ndarray, reason: str) -> None:
        """Drop the rows where ``mask`` is True, counted under ``reason`` (a ``Counts`` field)."""
        if not mask.any():
            return
        keep = np.flatnonzero(~mask)
        self._rows = keep if self._rows is None else self._rows[keep]
        self.table = self.table.take(keep)
        setattr(self.counts, reason, getattr(self.counts, reason) + int(mask.sum()))

    def column(self, name: str, fix: str) -> Any:
        """The string column ``name``; DataError naming the columns there are and ``fix`` if it is missing."""
        if name not in self.table.column_names:
            raise DataError(f"{self.name}: no column {name!r} (columns: {', '.join(self.table.column_names)}); {fix}")
        return self.table.column(name)

    def numbers(
        self, name: str, *, whole: bool = False, what: str = "a number", fix: str = "correct or delete that line"
    ) -> np.ndarray:
        """Column ``name`` as float64 (``whole``: as int64, each a whole number); DataError naming the line of
        the first value that is not ``what``, and ``fix``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self.column(name, "name it in the header")
        try:
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            bad = ~np.isfinite(values)
            if whole:
                bad |= np.where(np.isfinite(values), values != np.floor(values), True)
        except pa.ArrowInvalid:  # name the first value pyarrow cannot read as a number
            values = None
            bad = ~np.asarray(pc.match_substring_regex(column, _NUMBER).to_numpy(zero_copy_only=False), dtype=bool)
            if not bad.any():
                raise DataError(f"{self.name}: column {name!r} holds a value that is not {what}; {fix}") from None
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = column[row].as_py()
            raise DataError(f"{self.name} {self.where(row)}: {name} {value!r} is not {what}; {fix}")
        assert values is not None
        return values.astype(np.int64) if whole else values


def read(name: str, content: bytes, delimiter: str, *, columns: Sequence[str] | None = None, quoting: bool = True):
    """``content`` (a whole file's bytes, UTF-8) as a ``Text``: every column a string, trimmed; the header row
    names the columns unless ``columns`` does (a headerless file). ``quoting``: double quotes enclose fields
    (CSV); off for formats that have none (GroupLens' .dat). DataError (one line: file, line, fix) on any
    defect it cannot read correctly; see the module doc."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    if content.startswith(BOM):
        content = content[len(BOM) :]
    if (b"\n " in content or b"\n\t" in content or content[:1] in (b" ", b"\t")) and _SPACE_ONLY_LINE.search(content):
        content = _SPACE_ONLY_LINE.sub(b"", content)  # same line numbers: only the spaces go
    if not content.strip():
        raise DataError(f"{name}: the file is empty; it needs {'a header row and ' if columns is None else ''}rows")
    _check_complete(name, content, quoting)
    header = columns is None
    first = content.count(b"\n", 0, _first_line(content)) + 1 if header else 0  # the header's line number
    names = list(columns) if columns is not None else _header(name, content, delimiter, quoting)
    invalid: list = []

    def on_invalid(row) -> str:
        invalid.append(row)
        return "error"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(content),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=first),  # skip_rows counts blank lines
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"' if quoting else False, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if invalid:
            raise _bad_row(name, content, invalid[0], header) from None
        if "utf8" in str(exc).lower():
            _check_utf8(name, content)  # raises, naming the line
        raise DataError(f"{name}: cannot be read as delimited text: {str(exc).splitlines()[0]}") from None
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
    counts = Counts(read=lines - first)
    counts.blank_lines = counts.read - table.num_rows
    text = Text(name, table, counts, content, header)
    for position, column_name in enumerate(names):
        if column_name.startswith(_UNNAMED):
            filled = np.asarray(pc.not_equal(pc.utf8_trim_whitespace(table.column(column_name)), "").to_numpy(False))
            if filled.any():
                raise DataError(
                    f"{name} line {text.line(int(np.flatnonzero(filled)[0]))}: a value in column {position + 1}, "
                    "which the header leaves unnamed; name that column in the header or delete the value"
                )
    table = table.select([n for n in names if not n.startswith(_UNNAMED)])
    text.table = pa.table({n: pc.utf8_trim_whitespace(table.column(n)) for n in table.column_names})
    if header and text.table.num_rows:
        repeated = np.ones(text.table.num_rows, dtype=bool)
        for column_name in text.table.column_names:
            repeated &= np.asarray(pc.equal(text.table.column(column_name), column_name).to_numpy(False))
        text.drop(repeated, "repeated_headers")
    return text


def repeated_pairs(users: Coded, items: Coded) -> np.ndarray:
    """True for each row whose (user, item) pair an earlier row already has: the rows to drop."""
    key = users.codes.astype(np.int64) * max(len(items.vocabulary), 1) + items.codes
    _, first = np.unique(key, return_index=True)
    repeated = np.ones(len(key), dtype=bool)
    repeated[first] = False
    return repeated


def _nonempty_lines(content: bytes) -> np.ndarray:
    """The line numbers (1-based) of the lines that are not empty (CR alone counts as empty), in order."""
    data = np.frombuffer(content, dtype=np.uint8)
    breaks = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(data)]])
    length = ends - starts
    lone_cr = (length == 1) & (data[np.minimum(starts, max(len(data) - 1, 0))] == ord("\r"))
    return np.flatnonzero((length > 0) & ~lone_cr) + 1


def _first_line(content: bytes) -> int:
    """The offset where the first non-empty line starts (lines of a lone CR are empty)."""
    blank = _LEADING_BLANK.match(content)
    return blank.end() if blank else 0


def _line_at(content: bytes, offset: int) -> int:
    return content.count(b"\n", 0, offset) + 1


def _check_utf8(name: str, content: bytes) -> None:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = content.rfind(b"\n", 0, exc.start) + 1
        snippet = content[start : start + 60].decode("utf-8", errors="replace").rstrip("\r\n")
        raise DataError(
            f"{name} line {_line_at(content, exc.start)}: not UTF-8 text ({snippet!r}); re-save the file as "
            "UTF-8 (from latin-1: iconv -f latin1 -t utf-8)"
        ) from None


def _check_complete(name: str, content: bytes, quoting: bool) -> None:
    """A last line without a newline that ends inside a quoted field: the file was cut off there."""
    if content.endswith(b"\n") or not quoting:
        return
    start = content.rfind(b"\n") + 1
    if content.count(b'"', start) % 2:
        raise DataError(_truncated(name, _line_at(content, start), "ends inside a quoted field"))


def _truncated(name: str, line: int, how: str) -> str:
    return (
        f"{name} line {line}: the last line {how} and the file has no newline at its end: the file is "
        "truncated; download or copy it again (or delete that line)"
    )


def _header(name: str, content: bytes, delimiter: str, quoting: bool) -> list[str]:
    """The column names of the first non-empty line; unnamed ones get placeholders, dropped once read."""
    start = _first_line(content)
    end = content.find(b"\n", start)
    line = content[start : end if end >= 0 else len(content)]
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError:
        _check_utf8(name, content)
        raise
    fields = next(
        csv.reader(
            [decoded.rstrip("\r")], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
        )
    )
    names = [field.strip() or f"{_UNNAMED}{i + 1}" for i, field in enumerate(fields)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{name} line 1: the header names column {repeated[0]!r} twice; rename one of them")
    return names


def _bad_row(name: str, content: bytes, row: Any, header: bool) -> DataError:
    """The one line for a row of the wrong width (pyarrow's InvalidRow: its text, not its line number, which
    pyarrow counts without empty lines and gives only when reading on one thread)."""
    offset = _find_line(content, row.text.encode("utf-8"))
    if offset is None:
        where = f"a line ({row.text[:60]!r})"
    else:
        where = f"line {_line_at(content, offset)}"
        if content.find(b"\n", offset) < 0 and row.actual_columns < row.expected_columns:  # the unfinished last line
            return DataError(_truncated(name, _line_at(content, offset), f"has {row.actual_columns} of "
                                        f"{row.expected_columns} fields"))  # fmt: skip
    expected = "the header's" if header else "the format's"
    return DataError(
        f"{name} {where}: {row.actual_columns} fields where {expected} {row.expected_columns} are expected "
        f"({row.text[:60]!r}); correct or delete that line"
    )


def _find_line(content: bytes, line: bytes) -> int | None:
    """The offset of the first line of ``content`` that is ``line`` (followed by LF, CRLF or the end)."""
    offset = content.find(line)
    while offset >= 0:
        after = offset + len(line)
        starts = offset == 0 or content[offset - 1] == ord("\n")
        ends = content[after : after + 1] in (b"", b"\n") or content[after : after + 2] == b"\r\n"
        if starts and ends:
            return offset
        offset = content.find(line, offset + 1)
    return None
