"""The GroupLens ml-100k files, read the way tensorflow-datasets' movielens builder reads them.

Accepted: a folder holding u.data/u.item/u.user, or holding ``ml-100k/`` with them; a zip with the same two
layouts (the GroupLens download, ml-100k.zip, has ``ml-100k/`` inside); both read through export/data/archive.py.

- u.data: ``user id \\t item id \\t rating \\t timestamp``; rows are kept in line order, but for repeated
  (user, item) pairs, of which the first row is kept.
- u.item: ``id|title|release date|video release date|IMDb URL|`` + 19 genre flags, latin-1. Like tfds, each
  line is decoded as ISO-8859-1 and stripped, and the title is the second field as is ("Café au Lait
  (1993)", duplicates included: several ids share a title).
- u.user: ``id|age|gender|occupation|zip``; the age is bucketized as tfds does (AGE_BUCKETS).

Defects of real copies (export/data/text.py lists them for the CSV releases) are read the same way here: a
UTF-8 BOM is skipped, CRLF endings and blank lines (counted) are fine, empty fields after the last one are
ignored, ids are trimmed of spaces, ratings and times may be written as floats (a time must be whole); a
line of the wrong width is one error naming the line (the last line, without a newline at the end: "the file
is truncated"). ``data.source["rows"]`` counts u.data's lines read, kept and dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from export.data import archive
from export.data.records import (
    GENRES,
    DataError,
    MovieLensData,
    Movies,
    Ratings,
    bucketize_age,
    describe,
    factorize,
)
from export.data.text import BOM, Counts, repeated_pairs

logger = logging.getLogger(__name__)

FOLDER = "ml-100k"
REQUIRED = ("u.data", "u.item", "u.user")


def load_grouplens(path: str | os.PathLike) -> MovieLensData:
    """MovieLens 100K from a GroupLens folder or zip; DataError names the file and line of any problem."""
    path = os.path.abspath(os.fspath(path))
    files = _read_files(path)
    movies = _parse_movies(files["u.item"])
    users = _parse_users(files["u.user"])
    counts = Counts()
    ratings = _parse_ratings(files["u.data"], movies, users, counts)
    data_hash = hashlib.sha256(files["u.data"]).hexdigest()
    source = describe("grouplens", ratings, movies, path=path, u_data_sha256=data_hash, rows=counts.as_dict())
    said = counts.said(os.path.join(path, "u.data"))
    if said:
        logger.warning(said)
    logger.info("GroupLens data from %s: %d ratings, %d movies", path, len(ratings), len(movies))
    return MovieLensData(ratings=ratings, movies=movies, source=source)


def _read_files(path: str) -> dict[str, bytes]:
    if not os.path.exists(path):
        raise DataError(
            f"no such MovieLens folder or zip: {path} (sources: 'tfds', 'synthetic', or an "
            "ml-100k folder or zip from https://grouplens.org/datasets/movielens/100k/)"
        )
    with archive.opened(path) as found:
        if found is None:
            raise DataError(f"{path} is neither a folder nor a zip file; pass an ml-100k folder or ml-100k.zip")
        prefix = f"{FOLDER}/" if f"{FOLDER}/u.data" in found.names else ""
        missing = [name for name in REQUIRED if prefix + name not in found.names]
        if missing:
            raise DataError(
                f"{path} has no {', '.join(missing)} (looked at the top level and in {FOLDER}/); "
                "pass an ml-100k folder or ml-100k.zip"
            )
        return {name: found.read(prefix + name) for name in REQUIRED}


def _rows(name: str, content: bytes, separator: str, width: int, counts: Counts | None = None):
    """(line number, fields) per non-blank line, each line latin-1 decoded and stripped as tfds does; empty
    fields beyond ``width`` are ignored; the lines read and the blank ones are added to ``counts``."""
    if content.startswith(BOM):
        content = content[len(BOM) :]
    lines = content.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline ending the last line starts no line
    for number, raw in enumerate(lines, start=1):
        line = raw.decode("ISO-8859-1").strip()
        if counts is not None:
            counts.read += 1
        if not line:
            if counts is not None:
                counts.blank_lines += 1
            continue
        fields = line.split(separator)
        while len(fields) > width and not fields[-1].strip():
            fields.pop()
        if len(fields) != width:
            if number == len(lines) and not content.endswith(b"\n") and len(fields) < width:
                raise DataError(
                    f"{name} line {number}: the last line has {len(fields)} of {width} fields and the file has no "
                    "newline at its end: the file is truncated; download or copy it again (or delete that line)"
                )
            raise DataError(
                f"{name} line {number}: expected {width} {separator!r}-separated fields, "
                f"got {len(fields)}: {line[:80]!r}; correct or delete that line"
            )
        yield number, fields


def _parse_movies(content: bytes) -> Movies:
    ids, titles, genres, seen = [], [], [], set()
    for number, fields in _rows("u.item", content, "|", 5 + len(GENRES)):
        movie_id, title, flags = fields[0].strip(), fields[1], [flag.strip() for flag in fields[5:]]
        if movie_id in seen:
            raise DataError(f"u.item line {number}: movie id {movie_id!r} appears twice")
        if any(flag not in ("0", "1") for flag in flags):
            raise DataError(f"u.item line {number}: genre flags must be 0 or 1, got {'|'.join(flags)!r}")
        seen.add(movie_id)
        ids.append(movie_id)
        titles.append(title)
        genres.append(tuple(i for i, flag in enumerate(flags) if flag == "1"))
    if not ids:
        raise DataError("u.item holds no movies")
    return Movies(movie_id=np.array(ids, dtype=object), movie_title=np.array(titles, dtype=object), movie_genres=genres)


def _parse_users(content: bytes) -> dict[str, tuple[int, str, str, str]]:
    users = {}
    for number, fields in _rows("u.user", content, "|", 5):
        user_id, age, gender, occupation, zip_code = (field.strip() for field in fields)
        try:
            raw_age = int(age)
        except ValueError:
            raise DataError(f"u.user line {number}: age must be an integer, got {age!r}") from None
        if gender not in ("M", "F"):
            raise DataError(f"u.user line {number}: gender must be M or F, got {gender!r}")
        users[user_id] = (int(bucketize_age(raw_age)), gender, occupation, zip_code)
    return users


def _parse_ratings(
    content: bytes, movies: Movies, users: dict[str, tuple[int, str, str, str]], counts: Counts
) -> Ratings:
    titles = dict(zip(movies.movie_id, movies.movie_title, strict=True))
    user_ids, movie_ids, values, stamps = [], [], [], []
    for number, fields in _rows("u.data", content, "\t", 4, counts):
        user_id, movie_id, rating, timestamp = (field.strip() for field in fields)
        try:
            values.append(float(rating))
            stamp = float(timestamp)
        except ValueError:
            raise DataError(
                f"u.data line {number}: rating and timestamp must be numbers, got {rating!r}, {timestamp!r}; "
                "correct or delete that line"
            ) from None
        if not stamp.is_integer():
            raise DataError(
                f"u.data line {number}: the timestamp {timestamp!r} is not whole seconds; correct or delete that line"
            )
        if movie_id not in titles:
            raise DataError(f"u.data line {number}: item id {movie_id!r} is not in u.item")
        if user_id not in users:
            raise DataError(f"u.data line {number}: user id {user_id!r} is not in u.user")
        stamps.append(int(stamp))
        user_ids.append(user_id)
        movie_ids.append(movie_id)
    if not user_ids:
        raise DataError("u.data holds no ratings")
    repeated = repeated_pairs(factorize(user_ids), factorize(movie_ids))
    if repeated.any():
        counts.duplicates = int(repeated.sum())
        keep = np.flatnonzero(~repeated).tolist()
        user_ids, movie_ids = [user_ids[i] for i in keep], [movie_ids[i] for i in keep]
        values, stamps = [values[i] for i in keep], [stamps[i] for i in keep]
    ages, genders, occupations, zip_codes = zip(*(users[u] for u in user_ids), strict=True)
    return Ratings(
        user_id=np.array(user_ids, dtype=object),
        movie_id=np.array(movie_ids, dtype=object),
        movie_title=np.array([titles[m] for m in movie_ids], dtype=object),
        user_rating=np.array(values, dtype=np.float32),
        timestamp=np.array(stamps, dtype=np.int64),
        user_age=np.array(ages, dtype=np.int32),
        user_gender=np.array(genders, dtype=object),
        user_occupation=np.array(occupations, dtype=object),
        user_zip_code=np.array(zip_codes, dtype=object),
    )
