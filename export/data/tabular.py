"""Tables read as pyarrow (export/data/text.py, or pyarrow's Parquet reader) into the records of
export/data/records.py: id and title columns as Coded columns (pyarrow's dictionary encoding: one str per
distinct value), repeated (user, item) rows dropped but the first, and the Ratings of a source without user
features. Shared by export/data/own_files.py, export/data/releases.py and export/data/tfds.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from export.data import text
from export.data.records import Coded, DataError, Ratings, factorize, from_unique

logger = logging.getLogger(__name__)


def strings(table: text.Text, name: str, flag: str) -> Coded:
    """A column of ids or titles as a Coded column; DataError naming the line of a missing value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name, f"name the right one with {flag}")
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        raise DataError(f"{table.name}: column {name!r} is not valid UTF-8 text; re-save the file as UTF-8")
    empty = pc.is_null(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        empty = pc.or_(empty, pc.equal(column, ""))
    if pc.any(empty).as_py():
        where = table.where(int(np.flatnonzero(np.asarray(empty.to_numpy(zero_copy_only=False)))[0]))
        raise DataError(
            f"{table.name} {where} has no value in column {name!r}; fill it or delete that {where.split()[0]}"
        )
    return coded(column)


def coded(column) -> Coded:
    """A pyarrow column as a Coded column, through pyarrow's dictionary encoding (no str per row): its
    ``values()`` are one str object per distinct value (25M rows of 162k user ids: 200 MB of pointers, not
    25M str copies), and the codes are handed to Ratings (``Ratings.prime``) rather than made again."""
    return dictionary_coded(column, str)  # ints: as str() spells them


def dictionary_coded(column, text: Callable[[Any], str]) -> Coded:
    """A pyarrow (chunked) array as a Coded column: dictionary-encoded, ``text`` applied to each distinct value."""
    import pyarrow as pa

    encoded = (column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column).dictionary_encode()
    values = np.array([text(v) for v in encoded.dictionary.to_pylist()], dtype=object)
    return from_unique(values, encoded.indices.to_numpy(zero_copy_only=False))


def mapped(coded: Coded, mapping: dict) -> Coded:
    """``mapping[v]`` for each row of a Coded column (every value must be a key), as a Coded column; one lookup
    per unique value."""
    mapped = factorize(np.array([mapping[v] for v in coded.vocabulary.tolist()], dtype=object))
    return Coded(mapped.codes[coded.codes], mapped.vocabulary)


def ratings(
    users: Coded,
    items: Coded,
    titles: Coded,
    times: np.ndarray,
    values: np.ndarray | None = None,
    user_table: dict | None = None,
) -> Ratings:
    n = len(users)
    ages, genders, occupations, zips = (
        np.ones(n, np.int32),
        np.full(n, "", object),
        np.full(n, "", object),
        np.full(n, "", object),
    )
    if user_table:
        known = [user_table.get(u, (1, "", "", "")) for u in users.vocabulary.tolist()]
        ages = np.array([r[0] for r in known], np.int32)[users.codes]
        genders, occupations, zips = (np.array([r[i] for r in known], dtype=object)[users.codes] for i in (1, 2, 3))
    rows = Ratings(
        user_id=users.values(),
        movie_id=items.values(),
        movie_title=titles.values(),
        user_rating=np.ones(n, np.float32) if values is None else values.astype(np.float32),
        timestamp=times,
        user_age=ages,
        user_gender=genders,
        user_occupation=occupations,
        user_zip_code=zips,
    )
    rows.prime("user_id", users)
    rows.prime("movie_title", titles)
    return rows


def say_dropped(*tables: text.Text) -> None:
    """A warning line for each file rows were dropped from (blank, repeated header, repeated pair)."""
    for table in tables:
        said = table.counts.said(table.name)
        if said:
            logger.warning(said)


def without_repeats(table: text.Text, users: Coded, items: Coded, *rest: np.ndarray):
    """The rows of the first of each (user, item) pair (the rest counted in ``table.counts.duplicates``)."""
    repeated = text.repeated_pairs(users, items)
    if not repeated.any():
        return (users, items, *rest)
    table.counts.duplicates += int(repeated.sum())
    keep = np.flatnonzero(~repeated)
    return (users[keep], items[keep], *(column[keep] for column in rest))
