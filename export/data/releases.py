"""The GroupLens releases after 100K, ``--data FOLDER|ZIP``, detected from their files (export/data/archive.py finds
them at the top level or one folder down; export/data/grouplens.py reads 100K), read with pyarrow:

- ML-1M and ML-10M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
  (``MovieID::Title::Genres``), and for ML-1M ``users.dat`` (``UserID::Gender::Age::Occupation::Zip``);
- ML-20M, ML-25M, ml-latest(-small): ``ratings.csv`` (``userId,movieId,rating,timestamp``) and
  ``movies.csv`` (``movieId,title,genres``), UTF-8 with quoted titles.

Genres map onto the 19 of 100K ("Children's" is "Children"; "(no genres listed)" is "Unknown"; "IMAX" has no
100K genre and is dropped). Users without a users file get an unknown age (1), gender "" and occupation "".
The files are read by export/data/text.py (real files' defects read or named by line); repeated (user, item)
rows keep the first; ``source["rows"]`` and ``item_rows`` count the lines read, kept and dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from export.data import archive, tabular, text
from export.data.records import DataError, MovieLensData, Movies, describe, genre_positions

logger = logging.getLogger(__name__)

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
    with archive.opened(path) as found:
        if found is None:
            return {}
        ratings_path = _ratings_file(found.names)
        if ratings_path is None:
            return {}
        prefix, ratings_name = os.path.split(ratings_path)
        movies, users = RELEASES[ratings_name]
        files = {ratings_name: (found.shown(ratings_path), found.read(ratings_path))}
        for name in (movies, users):
            if name and os.path.join(prefix, name) in found.names:
                files[name] = (found.shown(os.path.join(prefix, name)), found.read(os.path.join(prefix, name)))
    if movies not in files:
        raise DataError(f"{path} has {ratings_name} but no {movies}; pass the whole GroupLens folder or zip")
    return files


def _ratings_file(names: frozenset[str]) -> str | None:
    """The ratings file of a release among ``names``: the first kind of RELEASES found, the shallowest first."""
    for ratings_name in RELEASES:
        for prefix in sorted({os.path.dirname(n) for n in names}, key=len):
            if os.path.join(prefix, ratings_name) in names:
                return os.path.join(prefix, ratings_name)
    return None


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
    ids = tabular.strings(movies, movie_id, "").values()
    titles = movies.table.column(title).to_pylist()
    distinct, counts = np.unique(ids.astype(str), return_counts=True)
    if len(distinct) != len(ids):
        repeated = str(distinct[np.argmax(counts > 1)])
        raise DataError(
            f"{movies.name}: movie id {repeated!r} appears twice; the release is damaged: download it again"
        )
    title_of = dict(zip(ids.tolist(), titles, strict=True))
    users, item_codes = tabular.strings(ratings, user, ""), tabular.strings(ratings, item, "")
    unknown = sorted(set(item_codes.vocabulary.tolist()) - set(title_of))
    if unknown:
        raise DataError(
            f"{path}: the ratings use {len(unknown)} movie id(s) the movies file lacks, e.g. "
            f"{', '.join(map(repr, unknown[:3]))}; the release is incomplete: download it again"
        )
    values = ratings.numbers(rating, what="a rating")
    times = ratings.numbers(timestamp, whole=True, what="a time in whole seconds")
    users, item_codes, values, times = tabular.without_repeats(ratings, users, item_codes, values, times)
    data = tabular.ratings(users, item_codes, tabular.mapped(item_codes, title_of), times, values, user_table)
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
    tabular.say_dropped(ratings, movies)
    logger.info("GroupLens release from %s: %d ratings, %d movies", path, len(data), len(catalogue))
    return MovieLensData(ratings=data, movies=catalogue, source=source)
