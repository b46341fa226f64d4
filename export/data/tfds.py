"""MovieLens from tensorflow-datasets, as the seed tutorial loads it, converted to column arrays.

    tfds.load("movielens/100k-ratings", split="train")   # ratings with user and movie features
    tfds.load("movielens/100k-movies", split="train")    # the 1,682 movies

Every size tfds has: ``--data tfds`` is 100K (the tutorial's), ``--data tfds:SIZE`` one of ``SIZES``. The
100K and 1M ratings carry user features; 20M, 25M and latest-small do not (their user columns are left
empty, as for your own files). Genres tfds has beyond MovieLens 100K's 19 (IMAX) are dropped, and
"(no genres listed)" is "Unknown".

A data set already prepared in TFDS' data_dir loads offline. When it is missing, the download host is
probed first (bounded by ``timeout``): TFDS itself retries an unreachable host for minutes. Any failure
raises DataError naming the offline options; nothing falls back to other data.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
from typing import Any

import numpy as np

from export import environment
from export.data.records import DataError, MovieLensData, Movies, Ratings, describe, genre_positions

logger = logging.getLogger(__name__)

SIZES = ("100k", "1m", "20m", "25m", "latest-small")
RATINGS = "movielens/100k-ratings"
MOVIES = "movielens/100k-movies"
OFFLINE_HINT = "offline, use --data /path/to/ml-100k[.zip] or --data synthetic"
_BATCH = 1 << 17

# tfds' ratings features -> Ratings columns
_RATING_FEATURES = {
    "user_id": "user_id",
    "movie_id": "movie_id",
    "movie_title": "movie_title",
    "user_rating": "user_rating",
    "timestamp": "timestamp",
    "bucketized_user_age": "user_age",
    "user_gender": "user_gender",
    "user_occupation_text": "user_occupation",
    "user_zip_code": "user_zip_code",
}


def names(size: str = "100k") -> tuple[str, str]:
    """tfds' ratings and movies data set names of a MovieLens size; DataError naming the sizes if unknown."""
    if size not in SIZES:
        raise DataError(
            f"--data tfds:{size}: unknown MovieLens size; tfds has {', '.join(SIZES)} (e.g. --data tfds:1m)"
        )
    return f"movielens/{size}-ratings", f"movielens/{size}-movies"


def load_tfds(
    data_dir: str | os.PathLike | None = None, download: bool = True, timeout: float = 10.0, size: str = "100k"
) -> MovieLensData:
    """Ratings and movies from TFDS; prepares them first (download) if needed and allowed."""
    ratings_name, movies_name = names(size)
    environment.configure()  # a library caller that did not (export/environment.py)
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            f"tensorflow-datasets is not installed ({exc}); pip install "
            f"'retrieval-serving-bundle[export]', or {OFFLINE_HINT}"
        ) from exc
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    ratings_builder = _prepared(tfds, ratings_name, data_dir, download, timeout)
    movies_builder = _prepared(tfds, movies_name, data_dir, download, timeout)
    ratings = _ratings(tfds, ratings_builder)
    movies = _movies(tfds, movies_builder)
    source = describe(
        "tfds",
        ratings,
        movies,
        path=os.fspath(ratings_builder.data_dir_root),
        datasets=[f"{ratings_name}:{ratings_builder.version}", f"{movies_name}:{movies_builder.version}"],
    )
    logger.info("tfds data: %d ratings, %d movies", len(ratings), len(movies))
    return MovieLensData(ratings=ratings, movies=movies, source=source)


def _prepared(tfds: Any, name: str, data_dir: str | None, download: bool, timeout: float) -> Any:
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            return builder
    except Exception as exc:  # tfds raises assorted errors (registry, IO, info parsing)
        raise DataError(f"tensorflow-datasets cannot open {name}: {_one_line(exc)}; {OFFLINE_HINT}") from exc
    where = data_dir or "TFDS' default data_dir"
    if not download:
        raise DataError(f"{name} is not prepared in {where} and download is off; {OFFLINE_HINT}")
    url = builder.builder_config.download_url
    problem = _unreachable(url, timeout)
    if problem:
        raise DataError(f"cannot download {name} ({problem}); {OFFLINE_HINT}")
    logger.info("downloading and preparing %s into %s", name, where)
    try:
        builder.download_and_prepare()
    except Exception as exc:
        raise DataError(f"downloading {name} failed: {_one_line(exc)}; {OFFLINE_HINT}") from exc
    return builder


def _unreachable(url: str, timeout: float) -> str | None:
    """Why ``url``'s host can't be reached within ``timeout`` seconds, or None when it can.

    Runs in a daemon thread: name resolution ignores socket timeouts and may block much longer.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port} unreachable: {_one_line(exc)}")

    probe = threading.Thread(target=connect, name="tfds-reachability", daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {timeout:g} s"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _text(values: np.ndarray) -> np.ndarray:
    """UTF-8 bytes -> str, decoding each distinct value once (pyarrow's dictionary encoding): equal values share
    one str object, so ML-25M's 25M rows of 162k user ids are 200 MB of pointers, not 25M str copies."""
    import pyarrow as pa

    from export.data.tabular import dictionary_coded

    return dictionary_coded(pa.array(values, type=pa.binary()), lambda b: b.decode("utf-8")).values()


def _ratings(tfds: Any, builder: Any) -> Ratings:
    present = [name for name in _RATING_FEATURES if name in builder.info.features]
    dataset = builder.as_dataset(split="train")
    dataset = dataset.map(lambda row: {name: row[name] for name in present})
    parts: dict[str, list[np.ndarray]] = {name: [] for name in present}
    for batch in tfds.as_numpy(dataset.batch(_BATCH)):
        for name in present:
            parts[name].append(batch[name])
    raw = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    n = len(raw["user_id"])
    empty = np.full(n, "", dtype=object)  # sizes without user features (20m, 25m, latest-small)
    return Ratings(
        user_id=_text(raw["user_id"]),
        movie_id=_text(raw["movie_id"]),
        movie_title=_text(raw["movie_title"]),
        user_rating=raw["user_rating"].astype(np.float32),
        timestamp=raw["timestamp"].astype(np.int64),
        user_age=raw["bucketized_user_age"].astype(np.int32) if "bucketized_user_age" in raw else np.ones(n, np.int32),
        user_gender=np.where(raw["user_gender"], "M", "F").astype(object) if "user_gender" in raw else empty,
        user_occupation=_text(raw["user_occupation_text"]) if "user_occupation_text" in raw else empty,
        user_zip_code=_text(raw["user_zip_code"]) if "user_zip_code" in raw else empty,
    )


def _movies(tfds: Any, builder: Any) -> Movies:
    """tfds' genre class ids (a 21-name list shared by all MovieLens sizes) mapped to GENRES positions."""
    labels_of = builder.info.features["movie_genres"].feature.names
    ids, titles, genres = [], [], []
    for row in tfds.as_numpy(builder.as_dataset(split="train")):
        ids.append(row["movie_id"].decode("utf-8"))
        titles.append(row["movie_title"].decode("utf-8"))
        genres.append(genre_positions(labels_of[int(label)] for label in row["movie_genres"]))
    return Movies(movie_id=np.array(ids, dtype=object), movie_title=np.array(titles, dtype=object), movie_genres=genres)
