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

Every problem is one DataError line naming the file, the column or row, and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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


def _table(path: str, data: bytes | None = None, delimiter: str | None = None):
    """A pyarrow Table from a CSV/TSV/Parquet file (or from ``data``, a release file's bytes)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = Path(path).suffix.lower()
    source = pa.BufferReader(data) if data is not None else path
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(source)
        parse = pacsv.ParseOptions(delimiter=delimiter or ("\t" if suffix == ".tsv" else ","))
        return pacsv.read_csv(
            source, parse_options=parse, convert_options=pacsv.ConvertOptions(strings_can_be_null=False)
        )
    except pa.ArrowInvalid as exc:
        message = str(exc).splitlines()[0]
        if "UTF8" in message or "utf8" in message.lower() or "UTF-8" in message:
            raise DataError(f"{path}: not valid UTF-8 text ({message}); re-save it as UTF-8") from None
        if "Empty CSV file" in message:
            raise DataError(f"{path}: the file is empty; it needs a header row and at least one row") from None
        raise DataError(f"{path}: cannot be read as {suffix.lstrip('.') or 'CSV'}: {message}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _strings(table, name: str, path: str, flag: str) -> Coded:
    if name not in table.column_names:
        raise DataError(
            f"{path}: no column {name!r} (columns: {', '.join(table.column_names)}); name the right one with {flag}"
        )
    import pyarrow as pa

    column = table.column(name)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        raise DataError(f"{path}: column {name!r} is not valid UTF-8 text; re-save the file as UTF-8")
    if column.null_count:
        row = next(i for i, v in enumerate(column.to_pylist()) if v is None)
        raise DataError(f"{path}: row {row + 2} has no value in column {name!r}; fill it or drop the row")
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


def _times(table, name: str, path: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name)
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return np.asarray(
            pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
        )
    if pa.types.is_integer(kind):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_floating(kind):
        values = column.to_numpy(zero_copy_only=False)
        if np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values))[0])
            raise DataError(f"{path}: row {row + 2} has no value in column {name!r}; fill it or drop the row")
        return values.astype(np.int64)
    values = column.to_pylist()
    for row, value in enumerate(values):
        try:
            int(value)
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: row {row + 2}, column {name!r}: {value!r} is not a number; the time column "
                f"holds integer seconds (or a Parquet timestamp), or pass --time-column for "
                f"another"
            ) from None
    return np.array([int(v) for v in values], dtype=np.int64)


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


def load_own(path: str, columns: Columns = Columns()) -> MovieLensData:
    """Your interactions from a CSV/TSV/Parquet file (and an optional catalogue); see the module doc."""
    table = _table(path)
    if table.num_rows == 0:
        raise DataError(f"{path}: no interaction rows (only a header?); it needs at least one row")
    users = _strings(table, columns.user, path, "--user-column")
    item_codes = _strings(table, columns.item, path, "--item-column")
    if columns.time and columns.time in table.column_names:
        times = _times(table, columns.time, path)
    elif columns.time_given:
        raise DataError(
            f"{path}: no column {columns.time!r} (columns: {', '.join(table.column_names)}); "
            f"name the right one with --time-column"
        )
    else:
        times = np.arange(len(users), dtype=np.int64)  # the row order is the time order
    if columns.items_file:
        catalogue = _table(columns.items_file)
        ids = _strings(catalogue, columns.item_id, columns.items_file, "--item-id-column").values()
        names = _strings(catalogue, columns.title, columns.items_file, "--title-column").values()
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
    else:
        ids = item_codes.vocabulary
        names = ids.copy()
    shown = _unique_titles(ids, names)
    title_of = dict(zip(ids.tolist(), shown.tolist(), strict=True))
    ratings = _ratings(users, item_codes, _mapped(item_codes, title_of), times)
    movies = Movies(movie_id=ids, movie_title=shown, movie_genres=[() for _ in ids])
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    source = describe(
        "own", ratings, movies, path=os.path.abspath(path), sha256=digest, columns=dataclasses.asdict(columns)
    )
    logger.info("own interactions from %s: %d rows, %d items", path, len(ratings), len(movies))
    return MovieLensData(ratings=ratings, movies=movies, source=source)


# ------------------------------------------------------------------ GroupLens releases after 100K

RELEASES = {"ratings.dat": ("movies.dat", "users.dat"), "ratings.csv": ("movies.csv", None)}


def find_release(path: str) -> dict[str, bytes] | None:
    """The release files of a GroupLens folder or zip (top level or one folder down), or None if it is none."""

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
            return None
        read = lambda name: Path(path, name).read_bytes()  # noqa: E731
    elif zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if n.count("/") <= 1]
        found = pick(names)
        if found is None:
            return None
        read = archive.read
    else:
        return None
    prefix, ratings = os.path.split(found)
    movies, users = RELEASES[ratings]
    files = {ratings: read(found)}
    for name in (movies, users):
        if name and os.path.join(prefix, name) in names:
            files[name] = read(os.path.join(prefix, name))
    if movies not in files:
        raise DataError(f"{path} has {ratings} but no {movies}; pass the whole GroupLens folder or zip")
    return files


def _dat(content: bytes, name: str, columns: list[str]):
    """A '::'-separated release file as a pyarrow Table (latin-1, as GroupLens wrote ML-1M)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    text = content.decode("ISO-8859-1").replace("::", "\x1f").encode("utf-8")
    try:
        return pacsv.read_csv(
            io.BytesIO(text),
            read_options=pacsv.ReadOptions(column_names=columns),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns if c != "timestamp"}),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{name}: {str(exc).splitlines()[0]}") from None


def _genres(text: str) -> tuple[int, ...]:
    return genre_positions(text.split("|"))


def load_release(path: str, files: dict[str, bytes]) -> MovieLensData:
    """ML-1M/10M (.dat) or ML-20M/25M/latest (.csv) from the files ``find_release`` returned."""
    import pyarrow as pa

    if "ratings.dat" in files:
        ratings = _dat(files["ratings.dat"], "ratings.dat", ["user", "item", "rating", "timestamp"])
        movies = _dat(files["movies.dat"], "movies.dat", ["item", "title", "genres"])
        kind, user_table = "grouplens-dat", None
        if "users.dat" in files:
            users = _dat(files["users.dat"], "users.dat", ["user", "gender", "age", "occupation", "zip"])
            codes = users.column("occupation").to_pylist()
            user_table = {
                u: (int(a), g, ML1M_OCCUPATIONS[int(o)] if o.isdigit() and int(o) < 21 else o, z)
                for u, g, a, o, z in zip(
                    users.column("user").to_pylist(),
                    users.column("gender").to_pylist(),
                    users.column("age").to_pylist(),
                    codes,
                    users.column("zip").to_pylist(),
                    strict=True,
                )
            }
    else:
        ratings = _table("ratings.csv", files["ratings.csv"]).rename_columns(["user", "item", "rating", "timestamp"])
        movies = _table("movies.csv", files["movies.csv"]).rename_columns(["item", "title", "genres"])
        kind, user_table = "grouplens-csv", None
    ratings = ratings.cast(
        pa.schema([("user", pa.string()), ("item", pa.string()), ("rating", pa.float32()), ("timestamp", pa.int64())])
    )
    movies = movies.cast(pa.schema([("item", pa.string()), ("title", pa.string()), ("genres", pa.string())]))
    ids = np.array(movies.column("item").to_pylist(), dtype=object)
    titles = np.array(movies.column("title").to_pylist(), dtype=object)
    title_of = dict(zip(ids.tolist(), titles.tolist(), strict=True))
    item_codes = _coded(ratings.column("item"))
    unknown = sorted(set(item_codes.vocabulary.tolist()) - set(title_of))
    if unknown:
        raise DataError(
            f"{path}: the ratings use {len(unknown)} movie id(s) the movies file lacks, e.g. "
            f"{', '.join(map(repr, unknown[:3]))}; the release is incomplete: download it again"
        )
    data = _ratings(
        _coded(ratings.column("user")),
        item_codes,
        _mapped(item_codes, title_of),
        ratings.column("timestamp").to_numpy(),
        ratings.column("rating").to_numpy(),
        user_table,
    )
    catalogue = Movies(
        movie_id=ids, movie_title=titles, movie_genres=[_genres(g) for g in movies.column("genres").to_pylist()]
    )
    digest = hashlib.sha256(files.get("ratings.dat") or files["ratings.csv"]).hexdigest()
    source = describe(kind, data, catalogue, path=os.path.abspath(path), ratings_sha256=digest)
    logger.info("GroupLens release from %s: %d ratings, %d movies", path, len(data), len(catalogue))
    return MovieLensData(ratings=data, movies=catalogue, source=source)
