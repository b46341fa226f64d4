"""What a MovieLens source turns into: column arrays, whatever the source (tfds, GroupLens, synthetic).

Vocabularies follow MovieLens 100K as tensorflow-datasets parses it:

- genre ids are positions in ``GENRES``, the 19 genre flags of ``u.item`` in file order, spelled as tfds
  spells them ("Children", not "Children's"); tfds' own class ids are translated into these.
- ``user_age`` is tfds' ``bucketized_user_age``: the largest of ``AGE_BUCKETS`` not above the raw age.
- ``user_occupation`` is the raw 100K occupation (tfds' ``user_occupation_text``), one of ``OCCUPATIONS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

GENRES = (
    "Unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
# Later releases' spellings of GENRES; genres outside GENRES (IMAX) are dropped.
GENRE_ALIASES = {"Children's": "Children", "(no genres listed)": "Unknown"}


def genre_positions(labels) -> tuple[int, ...]:
    """GENRES positions of genre names (any release's spelling), sorted and unique."""
    position = {genre: i for i, genre in enumerate(GENRES)}
    found = (position.get(GENRE_ALIASES.get(label, label)) for label in labels)
    return tuple(sorted({p for p in found if p is not None}))


OCCUPATIONS = (
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
)


class DataError(ValueError):
    """A data source is missing, malformed or unreachable. The message is one line and names the fix."""


def bucketize_age(raw_age: np.ndarray | int) -> np.ndarray:
    """tfds' bucketing: the largest threshold in AGE_BUCKETS that is <= the raw age (1 below 18)."""
    buckets = np.asarray(AGE_BUCKETS, dtype=np.int32)
    positions = np.searchsorted(buckets, np.asarray(raw_age), side="right") - 1
    return buckets[np.maximum(positions, 0)]


_RATING_DTYPES = {
    "user_id": object,
    "movie_id": object,
    "movie_title": object,
    "user_rating": np.float32,
    "timestamp": np.int64,
    "user_age": np.int32,
    "user_gender": object,
    "user_occupation": object,
    "user_zip_code": object,
}


def _column(name: str, values: Any, dtype: Any) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise DataError(f"{name} must be 1-D (got shape {array.shape})")
    if dtype is object and len(array) and not isinstance(array[0], str):
        raise DataError(f"{name} must hold str (got {type(array[0]).__name__}); decode bytes first")
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Coded:
    """A string column as integer codes into its sorted unique values: row i is ``vocabulary[codes[i]]``.

    What the export computes with at scale: mapping 25M strings through a dict costs seconds every time, and
    ``astype(str)`` copies of them cost GiBs, while a code array is 4 bytes a row and maps through a table of
    the (few) unique values. ``ratings.coded("user_id")`` makes one once per column."""

    codes: np.ndarray  # int32 [N]
    vocabulary: np.ndarray  # object [V]: sorted unique str

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows) -> Coded:
        return Coded(self.codes[rows], self.vocabulary)

    def values(self) -> np.ndarray:
        return self.vocabulary[self.codes]

    def positions(self, index: Mapping[str, int], default: int) -> np.ndarray:
        """Each row's ``index[value]`` (``default`` when absent), as int64: one dict lookup per unique value."""
        table = np.fromiter((index.get(v, default) for v in self.vocabulary.tolist()), np.int64, len(self.vocabulary))
        return table[self.codes]


def factorize(values: Any) -> Coded:
    """``values`` (str) as a Coded column; its vocabulary sorted as ``np.unique`` sorts str."""
    values = np.asarray(values, dtype=object)
    vocabulary = np.array(sorted(set(values.tolist())), dtype=object)
    index = {v: i for i, v in enumerate(vocabulary.tolist())}
    return Coded(np.fromiter((index[v] for v in values.tolist()), np.int32, len(values)), vocabulary)


def from_unique(values: np.ndarray, codes: np.ndarray) -> Coded:
    """A Coded column from ``codes`` into distinct but unsorted ``values`` (a pyarrow dictionary, a generator's
    ids): the vocabulary sorted as ``factorize`` sorts it, the codes remapped to it (no pass over the rows'
    strings)."""
    values = np.asarray(values, dtype=object)
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return Coded(rank[codes], values[order])


def positions(values: Any, index: Mapping[str, int], default: int) -> np.ndarray:
    """Each value's ``index[value]`` (``default`` when absent), for a Coded column or an array of str."""
    if isinstance(values, Coded):
        return values.positions(index, default)
    return np.fromiter(
        (index.get(v, default) for v in np.asarray(values, dtype=object).tolist()), np.int64, len(values)
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Ratings:
    """One row per rating, equal-length 1-D arrays, rows in the source's order.

    Strings are numpy object arrays of ``str``; ``user_gender`` is "M" or "F".
    """

    user_id: np.ndarray
    movie_id: np.ndarray
    movie_title: np.ndarray
    user_rating: np.ndarray
    timestamp: np.ndarray
    user_age: np.ndarray
    user_gender: np.ndarray
    user_occupation: np.ndarray
    user_zip_code: np.ndarray
    _coded: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        lengths = set()
        for name, dtype in _RATING_DTYPES.items():
            array = _column(name, getattr(self, name), dtype)
            object.__setattr__(self, name, array)
            lengths.add(len(array))
        if len(lengths) > 1:
            sizes = {name: len(getattr(self, name)) for name in _RATING_DTYPES}
            raise DataError(f"Ratings columns differ in length: {sizes}")

    def __len__(self) -> int:
        return len(self.user_id)

    def prime(self, name: str, coded: Coded) -> None:
        """Hand over the string column ``name``'s codes, made while loading (they must decode to the column)."""
        if len(coded) != len(self) or (len(self) and coded.vocabulary[coded.codes[0]] != getattr(self, name)[0]):
            raise DataError(f"the codes given for {name} do not match the column")
        self._coded[name] = coded

    def coded(self, name: str) -> Coded:
        """The string column ``name`` as a Coded column (made on first use, then kept)."""
        if name not in self._coded:
            self._coded[name] = factorize(getattr(self, name))
        return self._coded[name]

    def columns(self) -> dict[str, np.ndarray]:
        """The columns by feature name (ready for ``tf.data.Dataset.from_tensor_slices``)."""
        return {name: getattr(self, name) for name in _RATING_DTYPES}

    def take(self, indices: np.ndarray) -> Ratings:
        """The rows at ``indices`` (e.g. ``ratings.take(train_idx)``), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return Ratings(**{name: array[indices] for name, array in self.columns().items()})


@dataclasses.dataclass(frozen=True, eq=False)
class Movies:
    """The catalogue: one row per movie id. ``movie_genres[i]`` is a tuple of ids into ``GENRES``."""

    movie_id: np.ndarray
    movie_title: np.ndarray
    movie_genres: list[tuple[int, ...]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "movie_id", _column("movie_id", self.movie_id, object))
        object.__setattr__(self, "movie_title", _column("movie_title", self.movie_title, object))
        genres = [tuple(int(g) for g in row) for row in self.movie_genres]
        object.__setattr__(self, "movie_genres", genres)
        if not len(self.movie_id) == len(self.movie_title) == len(genres):
            raise DataError(
                f"Movies columns differ in length: movie_id {len(self.movie_id)}, "
                f"movie_title {len(self.movie_title)}, movie_genres {len(genres)}"
            )
        if any(not 0 <= g < len(GENRES) for row in genres for g in row):
            raise DataError(f"movie_genres holds an id outside 0..{len(GENRES) - 1}")

    def __len__(self) -> int:
        return len(self.movie_id)

    def genre_multi_hot(self) -> np.ndarray:
        """``movie_genres`` as an int8 [len(movies), 19] multi-hot matrix."""
        matrix = np.zeros((len(self), len(GENRES)), dtype=np.int8)
        for row, genres in enumerate(self.movie_genres):
            matrix[row, list(genres)] = 1
        return matrix


@dataclasses.dataclass(frozen=True, eq=False)
class MovieLensData:
    """Ratings, the movie catalogue, and a JSON-ready description of where they came from."""

    ratings: Ratings
    movies: Movies
    source: dict[str, Any]


def describe(
    kind: str, ratings: Ratings, movies: Movies, *, path: str | None = None, seed: int | None = None, **extra: Any
) -> dict[str, Any]:
    """The ``source`` dict of MovieLensData: kind, path, seed, sizes (+ any extra JSON-ready keys)."""
    sizes = {
        "ratings": len(ratings),
        "movies": len(movies),
        "users": len(np.unique(ratings.user_id)) if len(ratings) else 0,
    }
    return {"kind": kind, "path": path, "seed": seed, "sizes": sizes, **extra}
