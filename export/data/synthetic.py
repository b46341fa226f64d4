"""A MovieLens-100K-shaped data set made up from a seed, for offline runs and tests.

Shape kept from MovieLens 100K (943 users, 1,682 movies, 100,000 ratings by default):

- movie popularity follows a power law (Zipf over a random ranking), so a tenth of the movies hold a
  large share of the ratings; ``SyntheticSpec.latest_small`` gives MovieLens latest-small's shape instead
  (9,125 titles, 671 users, a Zipf-Mandelbrot law with a long tail: most titles rated at most twice);
- users have 1 to ``interests`` (3) latent taste clusters with their own weights, the first weakly
  predictable from their age bucket, gender and occupation (``feature_signal``); movies belong to latent
  groups, each with two signature genres. A user picks movies with probability
  ~ popularity * sum_k w_k exp(beta * affinity_k), so who-watches-what carries signal a model can learn;
  a share ``noise`` (10%) of each user's movies is picked by popularity alone;
- each (user, movie) pair occurs at most once; every user has >= 20 ratings when the size allows;
- ratings 1-5 rise with affinity; timestamps lie in ML-100K's range (1997-09-20 .. 1998-04-22), each
  user active over a window;
- titles read like "Blue River (1995)"; a few movie ids share a title with another id (as in MovieLens),
  and a few titles use latin-1 accents;
- user features: tfds' age buckets, "M"/"F", the 21 ML-100K occupations, 5-digit zip codes.

Everything derives from ``SyntheticSpec.seed`` through one numpy Generator: same spec, identical arrays.

The realism knobs were set so that the ordering measured on the real MovieLens 100K holds here too (the
seed's split, test hit rates): EASE ahead of the towers in both seen-excluded columns, item-kNN ahead of the
towers at top-10 and behind at top-100 without exclusion, EASE's top-100 without exclusion just above
popularity's, the in-batch softmax overfitting after a few epochs, and side features not helping; several
interests per user and the popularity noise are what make EASE beat the towers, as on the real data.
At latest-small's shape the real data's seen-excluded ordering holds too: EASE ahead of the untuned towers,
item-kNN and popularity.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from export.data.records import (
    GENRES,
    OCCUPATIONS,
    Coded,
    DataError,
    MovieLensData,
    Movies,
    Ratings,
    bucketize_age,
    describe,
    from_unique,
)

logger = logging.getLogger(__name__)

FIRST_TIMESTAMP = 874_724_710  # ML-100K's first and last rating times (unix seconds)
LAST_TIMESTAMP = 893_286_638
MIN_RATINGS_PER_USER = 20
MAX_MOVIES = 200_000

# ML-100K's occupation counts (943 users), in OCCUPATIONS order.
_OCCUPATION_COUNTS = (79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9, 105, 66, 14, 12, 31, 196, 27, 45)
_ZIPF_EXPONENT = 1.15
_AFFINITY_WEIGHT = 4.0  # beta: how strongly taste steers choice against popularity
_LATENT_DIM = 16
_CELL_BUDGET = 4_000_000  # users * movies scores held at once
_ROW_CHUNK = 1_000_000  # ratings whose taste is computed at once

_ADJECTIVES = (
    "Blue",
    "Silent",
    "Wild",
    "Last",
    "Broken",
    "Golden",
    "Dark",
    "Lost",
    "Midnight",
    "Crimson",
    "Lonely",
    "Secret",
    "Frozen",
    "Hidden",
    "Little",
    "Great",
    "Burning",
    "Electric",
    "Quiet",
    "Fallen",
    "Savage",
    "Sweet",
    "Bitter",
    "Endless",
    "Final",
    "Northern",
    "Eternal",
    "Hollow",
    "Iron",
    "Velvet",
    "Wicked",
    "Happy",
    "Strange",
    "Distant",
    "Dangerous",
    "Brave",
    "Perfect",
    "Restless",
    "Crazy",
    "Naïve",
)
_NOUNS = (
    "River",
    "Summer",
    "Heart",
    "City",
    "Road",
    "Kingdom",
    "Dream",
    "Shadow",
    "Star",
    "Garden",
    "Storm",
    "Mountain",
    "Night",
    "Island",
    "Promise",
    "Stranger",
    "Game",
    "Wedding",
    "Winter",
    "Journey",
    "Mirror",
    "Harbor",
    "Empire",
    "Secret",
    "Horizon",
    "Ocean",
    "Train",
    "Circus",
    "Machine",
    "Forest",
    "Detective",
    "Cowboy",
    "Angel",
    "Outlaw",
    "Planet",
    "Voyage",
    "Fortune",
    "Melody",
    "Castle",
    "Café",
    "Señor",
    "Affair",
    "Legend",
    "Rebel",
    "Witness",
    "Dragon",
    "Spy",
    "Ghost",
    "Hero",
    "Valley",
)
_PATTERNS = ("{adj} {noun}", "The {adj} {noun}", "{noun} of the {noun2}", "{adj} {noun} II")


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Size and seed of a synthetic data set; defaults are MovieLens 100K's sizes. Bad values: DataError."""

    users: int = 943
    movies: int = 1682
    ratings: int = 100_000
    seed: int = 0
    clusters: int = 8
    # Realism knobs (defaults chosen so that the real MovieLens 100K's ordering of models holds; see the doc):
    interests: int = 3  # most taste clusters one user has (each user has 1..interests)
    noise: float = 0.1  # share of each user's movies picked by popularity alone, not taste
    feature_signal: float = 0.2  # how strongly demographics steer a user's first taste cluster
    # Movie popularity, Zipf-Mandelbrot over a random ranking: P ~ (rank + popularity_offset) ^ -popularity_exponent
    # (offset 1: the plain Zipf law of MovieLens 100K; a larger exponent and offset: a flatter head and a longer tail).
    popularity_exponent: float = _ZIPF_EXPONENT
    popularity_offset: float = 1.0

    def __post_init__(self) -> None:
        for name in ("users", "movies", "ratings", "clusters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise DataError(f"SyntheticSpec.{name} must be a positive int (got {value!r})")
        if isinstance(self.interests, bool) or not isinstance(self.interests, (int, np.integer)) or self.interests < 1:
            raise DataError(f"SyntheticSpec.interests must be a positive int (got {self.interests!r})")
        for name, low, high in (("popularity_exponent", 0, 5), ("popularity_offset", 1, 10_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise DataError(f"SyntheticSpec.{name} must be a number in [{low}, {high}] (got {value!r})")
        for name in ("noise", "feature_signal"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= (1 if name == "noise" else 10)
            ):
                raise DataError(
                    f"SyntheticSpec.{name} must be a number in [0, {1 if name == 'noise' else 10}] (got {value!r})"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise DataError(f"SyntheticSpec.seed must be a non-negative int (got {self.seed!r})")
        if self.ratings > self.users * self.movies:
            raise DataError(
                f"SyntheticSpec.ratings must be <= users * movies = {self.users * self.movies} "
                f"(got {self.ratings}): each (user, movie) pair is rated at most once"
            )
        if self.ratings < self.users:
            raise DataError(
                f"SyntheticSpec.ratings must be >= users = {self.users} (got {self.ratings}): "
                "every user rates at least one movie"
            )
        if self.movies > MAX_MOVIES:
            raise DataError(f"SyntheticSpec.movies must be <= {MAX_MOVIES} (got {self.movies})")
        if self.clusters > self.movies:
            raise DataError(f"SyntheticSpec.clusters must be <= movies = {self.movies} (got {self.clusters})")

    @classmethod
    def tiny(cls, seed: int = 0) -> SyntheticSpec:
        """60 users, 150 movies, 4,000 ratings: for tests."""
        return cls(users=60, movies=150, ratings=4000, seed=seed)

    @classmethod
    def movielens_100k(cls, seed: int = 0) -> SyntheticSpec:
        """MovieLens 100K's sizes: 943 users, 1,682 movies, 100,000 ratings."""
        return cls(seed=seed)

    @classmethod
    def of_size(cls, size: str, seed: int = 0) -> SyntheticSpec:
        """The spec ``--synthetic-size`` names: ``tiny``, ``movielens`` (100K) or ``latest-small``."""
        sizes = {"tiny": cls.tiny, "movielens": cls.movielens_100k, "latest-small": cls.latest_small}
        if size not in sizes:
            raise DataError(f"unknown synthetic size {size!r}; choose one of {', '.join(sizes)}")
        return sizes[size](seed)

    @classmethod
    def latest_small(cls, seed: int = 0) -> SyntheticSpec:
        """MovieLens latest-small's sizes (2016: 671 users, 9,125 movies, 100,004 ratings) and its long tail: with
        popularity ~ (rank + 30) ^ -1.6 about half the catalogue has at most two ratings (the median rated title
        3), while each user rates ~150 titles on average (at least 20, a few over a thousand)."""
        return cls(users=671, movies=9125, ratings=100_004, seed=seed, popularity_exponent=1.6, popularity_offset=30.0)


def generate(spec: SyntheticSpec = SyntheticSpec()) -> MovieLensData:
    """The data set ``spec`` describes; rows in generator order (shuffled, like u.data)."""
    rng = np.random.default_rng(spec.seed)
    centers = _unit_rows(rng.normal(size=(spec.clusters, _LATENT_DIM)))

    users = _users(rng, spec, centers)
    movies = _movies(rng, spec, centers)
    user_index, movie_index = _choices(rng, spec, users, movies)

    affinity = np.empty(len(user_index))
    for start in range(0, len(user_index), _ROW_CHUNK):  # in chunks: [rows, interests, D] at once is GiBs at 10M
        rows = slice(start, start + _ROW_CHUNK)
        u, m = user_index[rows], movie_index[rows]
        affinity[rows] = _taste(users["vector"][u], users["weight"][u], movies["vector"][m])
    affinity = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    score = (
        3.6
        + 0.75 * affinity
        + movies["quality"][movie_index]
        + users["bias"][user_index]
        + rng.normal(0.0, 0.75, size=len(user_index))
    )
    user_rating = np.clip(np.rint(score), 1, 5).astype(np.float32)

    start, span = users["active_from"][user_index], users["active_span"][user_index]
    timestamp = (start + rng.random(len(user_index)) * span).astype(np.int64)

    order = rng.permutation(len(user_index))
    user_index, movie_index = user_index[order], movie_index[order]
    ratings = Ratings(
        user_id=users["id"][user_index],
        movie_id=movies["id"][movie_index],
        movie_title=movies["title"][movie_index],
        user_rating=user_rating[order],
        timestamp=timestamp[order],
        user_age=users["age"][user_index],
        user_gender=users["gender"][user_index],
        user_occupation=users["occupation"][user_index],
        user_zip_code=users["zip_code"][user_index],
    )
    # The codes of the string columns, from the indices (no pass over millions of strings; Ratings.coded).
    ratings.prime("user_id", from_unique(users["id"], user_index))
    titles, title_code = np.unique(movies["title"].astype(str), return_inverse=True)
    ratings.prime("movie_title", Coded(title_code.astype(np.int32)[movie_index], titles.astype(object)))
    catalogue = Movies(movie_id=movies["id"], movie_title=movies["title"], movie_genres=movies["genres"])
    source = describe("synthetic", ratings, catalogue, seed=spec.seed, spec=dataclasses.asdict(spec))
    logger.info(
        "synthetic data: %d ratings, %d users, %d movies (seed %d)", spec.ratings, spec.users, spec.movies, spec.seed
    )
    return MovieLensData(ratings=ratings, movies=catalogue, source=source)


def _taste(vectors: np.ndarray, weights: np.ndarray, movie_vectors: np.ndarray) -> np.ndarray:
    """Pairwise taste of users for movies (row i with row i): log sum_k w_k exp(beta * u_k . m) / beta."""
    affinity = np.einsum("ikd,id->ik", vectors, movie_vectors)
    return _log_mix(affinity[:, None, :], weights[:, None, :])[:, 0] / _AFFINITY_WEIGHT


def _log_mix(affinity: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """log sum_k w_k exp(beta * affinity_k) over the last axis (weights 0 drop an interest), stably."""
    logits = _AFFINITY_WEIGHT * affinity + np.log(np.maximum(weights, 1e-300))
    top = logits.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))[..., 0]


def _log_mix_rows(vectors: np.ndarray, weights: np.ndarray, movie_vectors: np.ndarray) -> np.ndarray:
    """``_log_mix`` of every (user, movie) pair of a chunk of users, [users, movies]: one matrix product and
    whole-array operations per interest, rather than reductions over a last axis of 3 (10x faster)."""
    logits = [
        _AFFINITY_WEIGHT * (vectors[:, k, :] @ movie_vectors.T) + np.log(np.maximum(weights[:, k], 1e-300))[:, None]
        for k in range(vectors.shape[1])
    ]
    top = logits[0].copy()
    for part in logits[1:]:
        np.maximum(top, part, out=top)
    total = np.zeros_like(top)
    for part in logits:
        part -= top
        np.exp(part, out=part)
        total += part
    np.log(total, out=total)
    return top + total


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _ids(n: int) -> np.ndarray:
    return np.array([str(i) for i in range(1, n + 1)], dtype=object)


def _users(rng: np.random.Generator, spec: SyntheticSpec, centers: np.ndarray) -> dict[str, Any]:
    n = spec.users
    raw_age = np.clip(np.rint(rng.normal(33.0, 11.5, size=n)), 7, 73).astype(np.int32)
    age = bucketize_age(raw_age)
    male = rng.random(n) < 0.71
    weights = np.asarray(_OCCUPATION_COUNTS, dtype=np.float64)
    occupation = rng.choice(len(OCCUPATIONS), size=n, p=weights / weights.sum())
    zip_code = np.array([f"{z:05d}" for z in rng.integers(1000, 99_999, size=n)], dtype=object)

    # The first taste cluster leans (weakly) on the demographics, so user features carry a little signal;
    # further interests are drawn at random, each with its own weight (Dirichlet) and its own vector.
    age_bucket = np.searchsorted(np.unique(age), age)
    signal = spec.feature_signal
    logits = (
        rng.normal(0.0, signal, size=(7, spec.clusters))[age_bucket]
        + rng.normal(0.0, signal, size=(len(OCCUPATIONS), spec.clusters))[occupation]
        + rng.normal(0.0, 0.5 * signal, size=(2, spec.clusters))[male.astype(int)]
    )
    cluster = _sample_rows(rng, logits)
    k = min(spec.interests, spec.clusters)
    clusters = np.concatenate([cluster[:, None], rng.integers(spec.clusters, size=(n, k - 1))], axis=1)
    count = rng.integers(1, k + 1, size=n)
    weight = rng.dirichlet(np.ones(k), size=n) * (np.arange(k)[None, :] < count[:, None])
    weight /= weight.sum(axis=1, keepdims=True)
    vector = centers[clusters] + rng.normal(0.0, 0.35 / np.sqrt(_LATENT_DIM), size=(n, k, _LATENT_DIM))

    active_from = rng.uniform(FIRST_TIMESTAMP, LAST_TIMESTAMP, size=n)
    active_span = np.minimum(rng.exponential(30 * 86_400, size=n) + 3_600, LAST_TIMESTAMP - active_from)
    return {
        "id": _ids(n),
        "age": age,
        "gender": np.where(male, "M", "F").astype(object),
        "occupation": np.asarray(OCCUPATIONS, dtype=object)[occupation],
        "zip_code": zip_code,
        "cluster": cluster,
        "vector": vector,  # [n, interests, D]
        "weight": weight,  # [n, interests]: each interest's share (0: the user has fewer)
        "bias": rng.normal(0.0, 0.35, size=n),
        "active_from": active_from,
        "active_span": active_span,
    }


def _sample_rows(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One category per row, P proportional to exp(logits) (Gumbel-max)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def _movies(rng: np.random.Generator, spec: SyntheticSpec, centers: np.ndarray) -> dict[str, Any]:
    n = spec.movies
    group = rng.integers(spec.clusters, size=n)
    # Two signature genres per group (never "Unknown", id 0), spread over the 18 real genres.
    genre_order = rng.permutation(np.arange(1, len(GENRES)))
    signature = np.stack([genre_order[(2 * np.arange(spec.clusters) + j) % len(genre_order)] for j in range(2)], axis=1)
    first = rng.integers(2, size=n)
    with_second = rng.random(n) < 0.4
    extra = np.where(rng.random(n) < 0.3, rng.integers(1, len(GENRES), size=n), 0)
    genres = []
    for m in range(n):
        picked = {int(signature[group[m], first[m]])}
        if with_second[m]:
            picked.add(int(signature[group[m], 1 - first[m]]))
        if extra[m]:
            picked.add(int(extra[m]))
        genres.append(tuple(sorted(picked)))

    title = _titles(rng, n)
    # A few ids are re-entries of an earlier movie: same title, same genres and taste (MovieLens has ~1%).
    n_duplicates = max(1, round(n / 100)) if n >= 2 else 0
    chosen = rng.choice(n, size=2 * n_duplicates, replace=False)
    for original, copy in zip(chosen[:n_duplicates], chosen[n_duplicates:], strict=True):
        title[copy], group[copy], genres[copy] = title[original], group[original], genres[original]

    vector = centers[group] + rng.normal(0.0, 0.35 / np.sqrt(_LATENT_DIM), size=(n, _LATENT_DIM))
    popularity_rank = rng.permutation(n)
    return {
        "id": _ids(n),
        "title": title,
        "genres": genres,
        "group": group,
        "vector": vector,
        "log_popularity": -spec.popularity_exponent * np.log1p(popularity_rank + (spec.popularity_offset - 1.0)),
        "quality": rng.normal(0.0, 0.45, size=n),
    }


def _titles(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct "Words (Year)" titles, years leaning to the 1990s as in ML-100K."""
    pattern = rng.integers(len(_PATTERNS), size=n)
    adjective = rng.integers(len(_ADJECTIVES), size=n)
    noun, other = (rng.integers(len(_NOUNS), size=n) for _ in range(2))
    other = np.where(other == noun, (other + 1) % len(_NOUNS), other)  # no "River of the River"
    year = 1998 - np.clip(np.rint(rng.exponential(7.0, size=n)), 0, 78).astype(int)
    titles, seen = [], set()
    for i in range(n):
        text = _PATTERNS[pattern[i]].format(adj=_ADJECTIVES[adjective[i]], noun=_NOUNS[noun[i]], noun2=_NOUNS[other[i]])
        title, sequel = f"{text} ({year[i]})", 1
        while title in seen:  # words and year drawn twice: try earlier years, then number it
            sequel += 1
            if sequel <= 79:
                title = f"{text} ({1920 + (year[i] - 1920 - sequel + 1) % 79})"
            else:
                title = f"{text} {sequel} ({year[i]})"
        seen.add(title)
        titles.append(title)
    return np.array(titles, dtype=object)


def _ratings_per_user(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """How many movies each user rates: >= 20 when the size allows, heavy-tailed, summing to spec.ratings.

    At most ~45% of the catalogue per user (ML-100K's busiest user rated 737 of 1,682), unless the size
    needs more.
    """
    floor = min(MIN_RATINGS_PER_USER, spec.movies, spec.ratings // spec.users)
    ceiling = min(spec.movies, max(-(-spec.ratings // spec.users), int(0.45 * spec.movies)))
    counts = np.full(spec.users, floor, dtype=np.int64)
    remaining = spec.ratings - floor * spec.users
    appetite = rng.lognormal(0.0, 0.9, size=spec.users)
    while remaining > 0:
        room = ceiling - counts
        weights = appetite * (room > 0)
        added = np.minimum(rng.multinomial(remaining, weights / weights.sum()), room)
        counts += added
        remaining -= int(added.sum())
    return counts


def _choices(
    rng: np.random.Generator, spec: SyntheticSpec, users: dict[str, Any], movies: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(user, movie) index pairs, each user's movies drawn without replacement.

    A share ``spec.noise`` of each user's movies (binomial) is picked by popularity alone; the rest by
    P ~ pop * sum_k w_k exp(beta * u_k . m) over the user's interests. Gumbel-top-k: perturb every user's
    logits with Gumbel noise and keep the k largest (taste first, then popularity among the movies left).
    """
    counts = _ratings_per_user(rng, spec)
    noisy = rng.binomial(counts, spec.noise)
    vectors, weights = users["vector"], users["weight"]
    movie_vectors, log_popularity = movies["vector"], movies["log_popularity"]
    chunk = max(1, _CELL_BUDGET // (spec.movies * vectors.shape[1]))
    columns = np.arange(spec.movies)[None, :]
    user_parts, movie_parts = [], []
    for start in range(0, spec.users, chunk):
        stop = min(start + chunk, spec.users)
        logits = log_popularity + _log_mix_rows(vectors[start:stop], weights[start:stop], movie_vectors)
        logits += rng.gumbel(size=logits.shape)
        by_taste = counts[start:stop, None] - noisy[start:stop, None]
        ranked = _top(logits, int(by_taste.max()))
        taken = np.zeros(logits.shape, dtype=bool)
        np.put_along_axis(taken, ranked, columns[:, : ranked.shape[1]] < by_taste, axis=1)
        by_popularity = np.where(taken, -np.inf, log_popularity + rng.gumbel(size=logits.shape))
        extra = _top(by_popularity, int(noisy[start:stop].max()))
        movie_parts.append(
            np.concatenate(
                [
                    ranked[columns[:, : ranked.shape[1]] < by_taste],
                    extra[columns[:, : extra.shape[1]] < noisy[start:stop, None]],
                ]
            )
        )
        user_parts.append(
            np.concatenate(
                [
                    np.repeat(np.arange(start, stop), by_taste[:, 0]),
                    np.repeat(np.arange(start, stop), noisy[start:stop]),
                ]
            )
        )
    return np.concatenate(user_parts), np.concatenate(movie_parts)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest scores, largest first (an argsort's first ``k`` columns, in
    O(columns) per row rather than a whole sort: at ML-25M's 62k movies the sort dominated the generation)."""
    if k <= 0:
        return np.zeros((len(scores), 0), dtype=np.int64)
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)
