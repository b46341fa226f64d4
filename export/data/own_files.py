"""Your own interactions, ``--data FILE`` (.csv, .tsv or .parquet), read with pyarrow.

One row per interaction, with a user column and an item column (``--user-column`` user_id, ``--item-column``
item_id) and optionally a time column (``--time-column`` timestamp: integer seconds, or a date/time type in
Parquet; without it the row order is the time order). An optional catalogue ``--items FILE`` names the items
(``--item-id-column`` item_id, ``--title-column`` title); every item id the interactions use must be in it, and
catalogue items nobody interacted with are still candidates. Titles are display names and need not be unique:
served keys must be, so a title shared by several ids is shown as "title [id]" for each of them (MovieLens' own
releases keep the tutorial's behaviour instead: one entry per title). Without a catalogue the item id is the
title.

CSV and TSV files are read by export/data/text.py, which reads real files' defects (BOM, CRLF, blank and
repeated header rows, empty trailing columns, ids with spaces, floats) or names them; repeated (user, item) rows
keep the first. ``source["rows"]`` (and ``item_rows`` for a catalogue) counts the lines read, kept and dropped.
Every problem is one DataError line naming the file, the column or line, and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from export.data import archive, tabular, text
from export.data.records import DataError, MovieLensData, Movies, describe

logger = logging.getLogger(__name__)

OWN_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where the columns of your own files are (the CLI's --*-column flags)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = "timestamp"
    items_file: str | None = None
    item_id: str = "item_id"
    title: str = "title"
    time_given: bool = False  # --time-column was given: a missing column is then an error, not row order


def is_own_file(path: str) -> bool:
    return os.path.isfile(path) and Path(path).suffix.lower() in OWN_SUFFIXES


def _own_table(path: str) -> tuple[text.Text, str]:
    """Your CSV/TSV file read as strings (export/data/text.py: its defects read or named by line), or your
    Parquet file as it is typed (string columns trimmed); with the sha256 of the bytes read."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    content = archive.read_file(path)
    digest = hashlib.sha256(content).hexdigest()
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(pa.BufferReader(content))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
        trimmed = {
            name: pc.utf8_trim_whitespace(table.column(name))
            if pa.types.is_string(table.column(name).type)
            else table.column(name)
            for name in table.column_names
        }
        return text.Text(path, pa.table(trimmed), text.Counts(read=table.num_rows), None, True), digest
    return text.read(path, content, "\t" if suffix == ".tsv" else ","), digest


def _times(table: text.Text, name: str) -> np.ndarray:
    """The time column as integer seconds: whole numbers, ISO dates/times (text), or Parquet timestamps."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name, "name the right one with --time-column")
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return np.asarray(
            pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
        )
    if pa.types.is_integer(kind):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
    if not pa.types.is_string(kind):
        column = pc.cast(column, pa.string())
        table.table = table.table.set_column(table.table.column_names.index(name), name, column)
    try:
        return table.numbers(
            name,
            whole=True,
            what="a time (integer seconds or an ISO date)",
            fix="correct or delete that line, or name another time column with --time-column",
        )
    except DataError as not_seconds:
        try:  # ISO dates and times ("2024-01-31", "2024-01-31 12:00:00"), as pyarrow infers them
            return np.asarray(
                pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise not_seconds from None


def _unique_titles(ids: np.ndarray, titles: np.ndarray) -> np.ndarray:
    """Titles as served keys: a title shared by several ids becomes "title [id]" for each of them."""
    counts: dict[str, int] = {}
    for title in titles.tolist():
        counts[title] = counts.get(title, 0) + 1
    return np.array(
        [t if counts[t] == 1 else f"{t} [{i}]" for i, t in zip(ids.tolist(), titles.tolist(), strict=True)],
        dtype=object,
    )


def load_own(path: str, columns: Columns = Columns()) -> MovieLensData:
    """Your interactions from a CSV/TSV/Parquet file (and an optional catalogue); see the module doc."""
    table, digest = _own_table(path)
    if table.table.num_rows == 0:
        raise DataError(f"{path}: no interaction rows (only a header?); it needs at least one row")
    users = tabular.strings(table, columns.user, "--user-column")
    item_codes = tabular.strings(table, columns.item, "--item-column")
    if columns.time and columns.time in table.table.column_names:
        times = _times(table, columns.time)
    elif columns.time_given:
        raise DataError(
            f"{path}: no column {columns.time!r} (columns: {', '.join(table.table.column_names)}); "
            "name the right one with --time-column"
        )
    else:
        times = np.arange(len(users), dtype=np.int64)  # the row order is the time order
    users, item_codes, times = tabular.without_repeats(table, users, item_codes, times)
    extra: dict[str, Any] = {}
    read = [table]  # the files read, for what was dropped from each
    if columns.items_file:
        catalogue, _ = _own_table(columns.items_file)
        read.append(catalogue)
        ids = tabular.strings(catalogue, columns.item_id, "--item-id-column").values()
        names = tabular.strings(catalogue, columns.title, "--title-column").values()
        distinct, counts = np.unique(ids.astype(str), return_counts=True)
        if len(distinct) != len(ids):
            dup = str(distinct[np.argmax(counts > 1)])
            raise DataError(f"{columns.items_file}: item id {dup!r} appears twice; one row per item")
        missing = sorted(set(item_codes.vocabulary.tolist()) - set(ids.tolist()))
        if missing:
            raise DataError(
                f"{columns.items_file} lacks {len(missing)} item id(s) that {path} uses, e.g. "
                f"{', '.join(map(repr, missing[:3]))}; add them to the catalogue or drop those rows"
            )
        extra["item_rows"] = catalogue.counts.as_dict()
    else:
        ids = item_codes.vocabulary
        names = ids.copy()
    shown = _unique_titles(ids, names)
    title_of = dict(zip(ids.tolist(), shown.tolist(), strict=True))
    rows = tabular.ratings(users, item_codes, tabular.mapped(item_codes, title_of), times)
    movies = Movies(movie_id=ids, movie_title=shown, movie_genres=[() for _ in ids])
    source = describe(
        "own",
        rows,
        movies,
        path=os.path.abspath(path),
        sha256=digest,
        columns=dataclasses.asdict(columns),
        rows=table.counts.as_dict(),
        **extra,
    )
    tabular.say_dropped(*read)
    logger.info("own interactions from %s: %d rows, %d items", path, len(rows), len(movies))
    return MovieLensData(ratings=rows, movies=movies, source=source)
