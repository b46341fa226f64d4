"""Your own interactions (CSV or Parquet), and the GroupLens releases after 100K, read with pyarrow.

Own interactions, ``--data FILE`` (.csv, .tsv or .parquet): one row per interaction, with a user column and an
item column (``--user-column`` user_id, ``--item-column`` item_id) and optionally a time column
(``--time-column`` timestamp: integer seconds, or a date/time type in Parquet; without it the row order is
the time order). An optional catalogue ``--items FILE`` names the items (``--item-id-column`` item_id,
``--title-column`` title); every item id the interactions use must be in it, and catalogue items nobody
interacted with are still candidates. Titles are display names and need not be unique: served keys must be,
so a title shared by several ids is shown as "title [id]" for each of them (MovieLens' own releases keep
the tutorial's behaviour instead: one entry per title). Without a catalogue the item id is the title.

GroupLens releases, ``--data FOLDER|ZIP``, detected from their files (export/data/grouplens.py reads 100K):
- ML-1M and ML-10M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
  (``MovieID::Title::Genres``), and for ML-1M ``users.dat`` (``UserID::Gender::Age::Occupation::Zip``);
- ML-20M, ML-25M, ml-latest(-small): ``ratings.csv`` (``userId,movieId,rating,timestamp``) and
  ``movies.csv`` (``movieId,title,genres``), UTF-8 with quoted titles.
Genres map onto the 19 of 100K ("Children's" is "Children"; "(no genres listed)" is "Unknown"; "IMAX" has no
100K genre and is dropped). Users without a users file get an unknown age (1), gender "" and occupation "".

Text files (CSV, TSV, .dat) are read by export/data/text.py, which reads real files' defects (BOM, CRLF,
blank and repeated header rows, empty trailing columns, ids with spaces, floats) or names them; repeated
(user, item) rows keep the first. ``source["rows"]`` (and ``item_rows`` for a catalogue) counts the lines read,
kept and dropped. Every problem is one DataError line naming the file, the column or line, and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export.data import text
from export.data.records import (
    Coded,
    DataError,
    MovieLensData,
    Movies,
    Ratings,
    describe,
    factorize,
    from_unique,
    genre_positions,
)

logger = logging.getLogger(__name__)

OWN_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)


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


def _own_table(path: str) -> text.Text:
    """Your CSV/TSV file read as strings (export/data/text.py: its defects read or named by line), or your
    Parquet file as it is typed (string columns trimmed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
        trimmed = {
            name: pc.utf8_trim_whitespace(table.column(name))
            if pa.types.is_string(table.column(name).type)
            else table.column(name)
            for name in table.column_names
        }
        return text.Text(path, pa.table(trimmed), text.Counts(read=table.num_rows), None, True)
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return text.read(path, content, "\t" if suffix == ".tsv" else ",")


def _strings(table: text.Text, name: str, flag: str) -> Coded:
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
    return _coded(column)


def _coded(column) -> Coded:
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


def _mapped(coded: Coded, mapping: dict) -> Coded:
    """``mapping[v]`` for each row of a Coded column (every value must be a key), as a Coded column; one lookup
    per unique value."""
    mapped = factorize(np.array([mapping[v] for v in coded.vocabulary.tolist()], dtype=object))
    return Coded(mapped.codes[coded.codes], mapped.vocabulary)


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


def _ratings(
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
        rows = [user_table.get(u, (1, "", "", "")) for u in users.vocabulary.tolist()]
        ages = np.array([r[0] for r in rows], np.int32)[users.codes]
        genders, occupations, zips = (np.array([r[i] for r in rows], dtype=object)[users.codes] for i in (1, 2, 3))
    ratings = Ratings(
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
    ratings.prime("user_id", users)
    ratings.prime("movie_title", titles)
    return ratings


def _unique_titles(ids: np.ndarray, titles: np.ndarray) -> np.ndarray:
    """Titles as served keys: a title shared by several ids becomes "title [id]" for each of them."""
    counts: dict[str, int] = {}
    for title in titles.tolist():
        counts[title] = counts.get(title, 0) + 1
    return np.array(
        [t if counts[t] == 1 else f"{t} [{i}]" for i, t in zip(ids.tolist(), titles.tolist(), strict=True)],
        dtype=object,
    )


def _say_dropped(*tables: text.Text) -> None:
    """A warning line for each file rows were dropped from (blank, repeated header, repeated pair)."""
    for table in tables:
        said = table.counts.said(table.name)
        if said:
            logger.warning(said)


def _without_repeats(table: text.Text, users: Coded, items: Coded, *rest: np.ndarray):
    """The rows of the first of each (user, item) pair (the rest counted in ``table.counts.duplicates``)."""
    repeated = text.repeated_pairs(users, items)
    if not repeated.any():
        return (users, items, *rest)
    table.counts.duplicates += int(repeated.sum())
    keep = np.flatnonzero(~repeated)
    return (users[keep], items[keep], *(column[keep] for column in rest))


def load_own(path: str, columns: Columns = Columns()) -> MovieLensData:
    """Your interactions from a CSV/TSV/Parquet file (and an optional catalogue); see the module doc."""
    table = _own_table(path)
    if table.table.num_rows == 0:
        raise DataError(f"{path}: no interaction rows (only a header?); it needs at least one row")
    users = _strings(table, columns.user, "--user-column")
    item_codes = _strings(table, columns.item, "--item-column")
    if columns.time and columns.time in table.table.column_names:
        times = _times(table, columns.time)
    elif columns.time_given:
        raise DataError(
            f"{path}: no column {columns.time!r} (columns: {', '.join(table.table.column_names)}); "
            "name the right one with --time-column"
        )
    else:
        times = np.arange(len(users), dtype=np.int64)  # the row order is the time order
    users, item_codes, times = _without_repeats(table, users, item_codes, times)
    extra: dict[str, Any] = {}
    read = [table]  # the files read, for what was dropped from each
    if columns.items_file:
        catalogue = _own_table(columns.items_file)
        read.append(catalogue)
        ids = _strings(catalogue, columns.item_id, "--item-id-column").values()
        names = _strings(catalogue, columns.title, "--title-column").values()
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
    ratings = _ratings(users, item_codes, _mapped(item_codes, title_of), times)
    movies = Movies(movie_id=ids, movie_title=shown, movie_genres=[() for _ in ids])
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    source = describe(
        "own",
        ratings,
        movies,
        path=os.path.abspath(path),
        sha256=digest,
        columns=dataclasses.asdict(columns),
        rows=table.counts.as_dict(),
        **extra,
    )
    _say_dropped(*read)
    logger.info("own interactions from %s: %d rows, %d items", path, len(ratings), len(movies))
    return MovieLensData(ratings=ratings, movies=movies, source=source)


# ------------------------------------------------------------------ GroupLens releases after 100K

RELEASES = {"ratings.dat": ("movies.dat", "users.dat"), "ratings.csv": ("movies.csv", None)}
# The columns of each release file, by name (CSV: as its header names them) or in order (.dat: no header).
CSV_COLUMNS = {
    "ratings.csv": ("userId", "movieId", "rating", "timestamp"),
    "movies.csv": ("movieId", "title", "genres"),
}
DAT_COLUMNS = {
    "ratings.dat": ("user", "item", "rating", "timestamp"),
    "movies.dat": ("item", "title", "genres"),
    "users.dat": ("user", "gender", "age", "occupation", "zip"),
}


def find_release(path: str) -> dict[str, tuple[str, bytes]]:
    """The release files of a GroupLens folder or zip (top level or one folder down), by file name: (the name
    errors give it, its bytes); empty if it is no such release."""

    def pick(names: list[str]) -> str | None:
        for ratings in RELEASES:
            for prefix in sorted({os.path.dirname(n) for n in names}, key=len):
                if os.path.join(prefix, ratings) in names:
                    return os.path.join(prefix, ratings)
        return None

    if os.path.isdir(path):
        names = []  # the top level and one folder down, nothing deeper
        for entry in os.scandir(path):
            if entry.is_file():
                names.append(entry.name)
            elif entry.is_dir():
                names += [os.path.join(entry.name, f.name) for f in os.scandir(entry.path) if f.is_file()]
        found = pick(names)
        if found is None:
            return {}
        read = lambda name: Path(path, name).read_bytes()  # noqa: E731
        shown = lambda name: os.path.join(path, name)  # noqa: E731
    elif zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if n.count("/") <= 1]
        found = pick(names)
        if found is None:
            return {}
        read = archive.read
        shown = lambda name: f"{path}:{name}"  # noqa: E731
    else:
        return {}
    prefix, ratings = os.path.split(found)
    movies, users = RELEASES[ratings]
    files = {ratings: (shown(found), read(found))}
    for name in (movies, users):
        if name and os.path.join(prefix, name) in names:
            files[name] = (shown(os.path.join(prefix, name)), read(os.path.join(prefix, name)))
    if movies not in files:
        raise DataError(f"{path} has {ratings} but no {movies}; pass the whole GroupLens folder or zip")
    return files


def _release_table(files: dict[str, tuple[str, bytes]], name: str) -> tuple[text.Text, list[str]]:
    """A release file read as strings (export/data/text.py), and its columns' names in a fixed order:
    .dat files are latin-1 (as GroupLens wrote ML-1M), '::'-separated, unquoted; .csv files UTF-8 with a header
    (whose columns are found by name: extra or empty trailing ones do not matter)."""
    shown, content = files[name]
    if name.endswith(".dat"):
        if content.startswith(text.BOM):
            content = content[len(text.BOM) :]
        recoded = content.decode("ISO-8859-1").replace("::", "\x1f").encode("utf-8")
        return text.read(shown, recoded, "\x1f", columns=DAT_COLUMNS[name], quoting=False), list(DAT_COLUMNS[name])
    table = text.read(shown, content, ",")
    expected = CSV_COLUMNS[name]
    for column in expected:
        table.column(column, f"a GroupLens {name} has the header {','.join(expected)}")
    return table, list(expected)


def _genres(labels: str) -> tuple[int, ...]:
    return genre_positions(labels.split("|"))


def _users(table: text.Text) -> dict[str, tuple[int, str, str, str]]:
    """ML-1M's users.dat: user id -> (age, gender, occupation, zip), occupations by name."""
    ages = table.numbers("age", whole=True, what="an age")
    columns = [table.table.column(c).to_pylist() for c in ("user", "gender", "occupation", "zip")]
    return {
        u: (int(a), g, ML1M_OCCUPATIONS[int(o)] if o.isdigit() and int(o) < 21 else o, z)
        for (u, g, o, z), a in zip(zip(*columns, strict=True), ages.tolist(), strict=True)
    }


def load_release(path: str, files: dict[str, tuple[str, bytes]]) -> MovieLensData:
    """ML-1M/10M (.dat) or ML-20M/25M/latest (.csv) from the files ``find_release`` returned."""
    dat = "ratings.dat" in files
    ratings_name, movies_name = ("ratings.dat", "movies.dat") if dat else ("ratings.csv", "movies.csv")
    ratings, (user, item, rating, timestamp) = _release_table(files, ratings_name)
    movies, (movie_id, title, genres) = _release_table(files, movies_name)
    user_table = _users(_release_table(files, "users.dat")[0]) if "users.dat" in files else None
    ids = _strings(movies, movie_id, "").values()
    titles = movies.table.column(title).to_pylist()
    distinct, counts = np.unique(ids.astype(str), return_counts=True)
    if len(distinct) != len(ids):
        repeated = str(distinct[np.argmax(counts > 1)])
        raise DataError(
            f"{movies.name}: movie id {repeated!r} appears twice; the release is damaged: download it again"
        )
    title_of = dict(zip(ids.tolist(), titles, strict=True))
    users, item_codes = _strings(ratings, user, ""), _strings(ratings, item, "")
    unknown = sorted(set(item_codes.vocabulary.tolist()) - set(title_of))
    if unknown:
        raise DataError(
            f"{path}: the ratings use {len(unknown)} movie id(s) the movies file lacks, e.g. "
            f"{', '.join(map(repr, unknown[:3]))}; the release is incomplete: download it again"
        )
    values = ratings.numbers(rating, what="a rating")
    times = ratings.numbers(timestamp, whole=True, what="a time in whole seconds")
    users, item_codes, values, times = _without_repeats(ratings, users, item_codes, values, times)
    data = _ratings(users, item_codes, _mapped(item_codes, title_of), times, values, user_table)
    catalogue = Movies(
        movie_id=ids,
        movie_title=np.array(titles, dtype=object),
        movie_genres=[_genres(g) for g in movies.table.column(genres).to_pylist()],
    )
    digest = hashlib.sha256(files[ratings_name][1]).hexdigest()
    source = describe(
        "grouplens-dat" if dat else "grouplens-csv",
        data,
        catalogue,
        path=os.path.abspath(path),
        ratings_sha256=digest,
        rows=ratings.counts.as_dict(),
        item_rows=movies.counts.as_dict(),
    )
    _say_dropped(ratings, movies)
    logger.info("GroupLens release from %s: %d ratings, %d movies", path, len(data), len(catalogue))
    return MovieLensData(ratings=data, movies=catalogue, source=source)
