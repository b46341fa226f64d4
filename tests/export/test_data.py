"""export.data: GroupLens folder/zip, tfds (prepared offline, and failing fast without network), split."""

from __future__ import annotations

import socket
import time
import zipfile
from unittest import mock

import numpy as np
import pytest

from export.data import (
    AGE_BUCKETS,
    GENRES,
    DataError,
    MovieLensData,
    Movies,
    Ratings,
    SyntheticSpec,
    load,
    split,
)

# ---------------------------------------------------------------- a tiny ml-100k, written as GroupLens does

_NO_GENRE = ["0"] * len(GENRES)


def _flags(*names: str) -> str:
    flags = list(_NO_GENRE)
    for name in names:
        flags[GENRES.index(name)] = "1"
    return "|".join(flags)


# u.item: latin-1, a duplicate title under two ids, an "unknown" movie as ML-100K has.
U_ITEM = (
    "\n".join(
        [
            f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
            f"{_flags('Animation', 'Children', 'Comedy')}",
            f"2|Café au Lait (1993)|01-Jan-1993||http://us.imdb.com/M/title-exact?Caf%E9%20au%20Lait|"
            f"{_flags('Comedy')}",
            f"3|Chasing Amy (1997)|01-Jan-1997||http://us.imdb.com/M/title-exact?Chasing+Amy+(1997)|"
            f"{_flags('Drama', 'Romance')}",
            f"4|Chasing Amy (1997)|01-Jan-1997||http://us.imdb.com/M/title-exact?Chasing+Amy+(1997)|"
            f"{_flags('Drama', 'Romance')}",
            f"5|unknown|||http://us.imdb.com/M/title-exact?unknown|{_flags('Unknown')}",
        ]
    )
    + "\n"
)
U_USER = (
    "\n".join(
        [
            "1|24|M|technician|85711",
            "2|53|F|other|94043",
            "3|17|M|student|55105",
            "4|18|F|writer|T8H1N",
            "5|56|M|retired|15213",
        ]
    )
    + "\n"
)
# (user, item, rating, timestamp) in line order: not sorted by anything.
U_DATA_ROWS = [
    ("3", "2", 4, 881250949),
    ("1", "1", 5, 874965758),
    ("2", "4", 3, 876893171),
    ("5", "3", 1, 878542960),
    ("4", "1", 2, 886397596),
    ("1", "2", 4, 884182806),
    ("2", "5", 5, 881171488),
    ("3", "3", 3, 891628467),
    ("5", "1", 4, 886324817),
    ("4", "4", 2, 883603013),
    ("1", "3", 3, 875072484),
    ("2", "1", 5, 891400000),
]
U_DATA = "".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in U_DATA_ROWS)


def _files(u_data: str = U_DATA, u_item: str = U_ITEM, u_user: str = U_USER) -> dict[str, bytes]:
    return {"u.data": u_data.encode("latin-1"), "u.item": u_item.encode("latin-1"), "u.user": u_user.encode("latin-1")}


def write_folder(root, files: dict[str, bytes] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (files or _files()).items():
        (root / name).write_bytes(content)
    return root


def write_zip(path, prefix: str = "ml-100k/", files: dict[str, bytes] | None = None):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in (files or _files()).items():
            archive.writestr(prefix + name, content)
    return path


def _rows(ratings: Ratings) -> list[tuple]:
    columns = ratings.columns()
    return sorted(zip(*(columns[name].tolist() for name in columns), strict=True))


# ---------------------------------------------------------------- GroupLens


def test_grouplens_folder_keeps_u_data_line_order_and_joins_features(tmp_path):
    data = load(write_folder(tmp_path / "ml-100k"))

    ratings = data.ratings
    assert isinstance(data, MovieLensData)
    assert len(ratings) == len(U_DATA_ROWS)
    assert ratings.user_id.tolist() == [u for u, _, _, _ in U_DATA_ROWS]
    assert ratings.movie_id.tolist() == [m for _, m, _, _ in U_DATA_ROWS]
    assert ratings.user_rating.tolist() == [float(r) for _, _, r, _ in U_DATA_ROWS]
    assert ratings.timestamp.tolist() == [t for _, _, _, t in U_DATA_ROWS]
    assert (ratings.user_rating.dtype, ratings.timestamp.dtype, ratings.user_age.dtype) == (
        np.float32,
        np.int64,
        np.int32,
    )
    first = {name: column[0] for name, column in ratings.columns().items()}
    assert first == {
        "user_id": "3",
        "movie_id": "2",
        "movie_title": "Café au Lait (1993)",
        "user_rating": 4.0,
        "timestamp": 881250949,
        "user_age": 1,
        "user_gender": "M",
        "user_occupation": "student",
        "user_zip_code": "55105",
    }
    assert data.source["kind"] == "grouplens"
    assert data.source["sizes"] == {"ratings": 12, "movies": 5, "users": 5}
    assert data.source["path"] == str(tmp_path / "ml-100k")


def test_grouplens_titles_are_latin1_decoded_and_duplicates_kept(tmp_path):
    movies = load(write_folder(tmp_path / "ml-100k")).movies

    assert movies.movie_id.tolist() == ["1", "2", "3", "4", "5"]
    assert movies.movie_title.tolist() == [
        "Toy Story (1995)",
        "Café au Lait (1993)",
        "Chasing Amy (1997)",
        "Chasing Amy (1997)",
        "unknown",
    ]
    assert movies.movie_genres == [
        (GENRES.index("Animation"), GENRES.index("Children"), GENRES.index("Comedy")),
        (GENRES.index("Comedy"),),
        (GENRES.index("Drama"), GENRES.index("Romance")),
        (GENRES.index("Drama"), GENRES.index("Romance")),
        (0,),
    ]
    assert movies.genre_multi_hot().shape == (5, 19)
    assert movies.genre_multi_hot()[0].sum() == 3


def test_grouplens_ages_are_bucketized_as_tfds_does(tmp_path):
    ratings = load(write_folder(tmp_path / "ml-100k")).ratings

    age_by_user = dict(zip(ratings.user_id, ratings.user_age, strict=True))
    # raw ages 24, 53, 17, 18, 56 -> the largest bucket <= age, 1 below 18
    assert age_by_user == {"1": 18, "2": 50, "3": 1, "4": 18, "5": 56}
    assert set(age_by_user.values()) <= set(AGE_BUCKETS)


@pytest.mark.parametrize("layout", ["zip with ml-100k/", "zip at top level", "folder holding ml-100k/"])
def test_grouplens_zip_and_parent_folder_load_the_same_data(tmp_path, layout):
    reference = load(write_folder(tmp_path / "plain"))
    if layout == "zip with ml-100k/":
        path = write_zip(tmp_path / "ml-100k.zip")
    elif layout == "zip at top level":
        path = write_zip(tmp_path / "flat.zip", prefix="")
    else:
        write_folder(tmp_path / "parent" / "ml-100k")
        path = tmp_path / "parent"

    data = load(str(path))

    for name, column in reference.ratings.columns().items():
        assert getattr(data.ratings, name).tolist() == column.tolist(), name
    assert data.movies.movie_title.tolist() == reference.movies.movie_title.tolist()


def test_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such MovieLens folder or zip"):
        load(tmp_path / "nowhere")


@pytest.mark.parametrize("missing", ["u.data", "u.item", "u.user"])
def test_folder_or_zip_without_a_file_names_it(tmp_path, missing):
    files = {name: content for name, content in _files().items() if name != missing}
    with pytest.raises(DataError, match=f"has no {missing}"):
        load(write_folder(tmp_path / "folder", files))
    with pytest.raises(DataError, match=f"has no {missing}"):
        load(write_zip(tmp_path / "ml-100k.zip", files=files))


def test_a_file_that_is_neither_folder_nor_zip_is_a_data_error(tmp_path):
    path = tmp_path / "ml-100k.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="neither a folder nor a zip"):
        load(path)


@pytest.mark.parametrize(
    "files, message",
    [
        (_files(u_data=U_DATA + "1\t2\t3\n"), r"u\.data line 13: expected 4 '\\t'-separated fields, got 3"),
        (_files(u_data="1\t2\tfive\t874965758\n"), r"u\.data line 1: rating and timestamp must be numbers"),
        (_files(u_data="1\t99\t5\t874965758\n"), r"u\.data line 1: item id '99' is not in u\.item"),
        (_files(u_data="1\t1\t4\t874965758\n42\t1\t5\t874965758\n"), r"u\.data line 2: user id '42' is not in u\.user"),
        (
            _files(u_item=U_ITEM.replace("2|Café au Lait (1993)|", "2|Café au Lait (1993)")),
            r"u\.item line 2: expected 24 '\|'-separated fields, got 23",
        ),
        (_files(u_user="1|old|M|technician|85711\n"), r"u\.user line 1: age must be an integer"),
        (_files(u_user=U_USER + "6|30|X|writer|12345\n"), r"u\.user line 6: gender must be M or F"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, files, message):
    with pytest.raises(DataError, match=message):
        load(write_folder(tmp_path / "ml-100k", files))


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- tfds


def _network_reachable(host: str = "files.grouplens.org") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_tfds_without_prepared_data_and_download_off_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not prepared") as caught:
        load("tfds", data_dir=tmp_path, download=False)
    assert "--data /path/to/ml-100k[.zip] or --data synthetic" in str(caught.value)


@pytest.mark.skipif(_network_reachable(), reason="checks the offline failure; this machine is online")
def test_tfds_offline_fails_fast_naming_the_offline_options(tmp_path):
    with pytest.raises(DataError) as caught:
        load("tfds", data_dir=tmp_path)
    message = str(caught.value)
    assert "--data /path/to/ml-100k[.zip]" in message and "--data synthetic" in message
    assert "\n" not in message


@pytest.mark.slow
def test_tfds_download_gives_up_when_the_host_never_answers(tmp_path):
    def silent_host(*args, **kwargs):
        time.sleep(60)  # a black-holed address: connect() that never returns in time
        raise TimeoutError("timed out")

    with (
        mock.patch("export.data.tfds.socket.create_connection", silent_host),
        pytest.raises(DataError, match=r"did not answer within 1 s.*--data synthetic"),
    ):
        load("tfds", data_dir=tmp_path, download_timeout=1.0)


def test_tfds_loads_offline_from_a_prepared_data_dir_same_as_grouplens(tmp_path):
    """Prepare TFDS' own movielens builders from the tiny GroupLens files (their download step pointed at
    the local folder), then load offline: tfds' parsing and ours must agree row for row."""
    import tensorflow_datasets as tfds

    write_folder(tmp_path / "extracted" / "ml-100k")
    data_dir = tmp_path / "tfds"
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", return_value=str(tmp_path / "extracted")
    ):
        for name in ("movielens/100k-ratings", "movielens/100k-movies"):
            tfds.builder(name, data_dir=str(data_dir)).download_and_prepare(download_config=config)

    with mock.patch("export.data.tfds.socket.create_connection", side_effect=AssertionError("no network use")):
        from_tfds = load("tfds", data_dir=data_dir, download=False)
    from_files = load(tmp_path / "extracted" / "ml-100k")

    assert from_tfds.source["kind"] == "tfds"
    assert _rows(from_tfds.ratings) == _rows(from_files.ratings)
    assert "Café au Lait (1993)" in from_tfds.ratings.movie_title.tolist()
    by_id = lambda movies: sorted(zip(movies.movie_id, movies.movie_title, movies.movie_genres, strict=True))  # noqa: E731
    assert by_id(from_tfds.movies) == by_id(from_files.movies)


# ---------------------------------------------------------------- split


@pytest.mark.slow
def test_random_split_is_the_seed_tutorials_split():
    import tensorflow as tf

    ratings = load("synthetic").ratings  # 100,000 rows, as ML-100K
    train_idx, test_idx = split(ratings, kind="random")

    # The tutorial, literally, over the same rows in source order.
    tf.random.set_seed(42)
    rows = tf.data.Dataset.from_tensor_slices(
        {"user_id": ratings.user_id.astype(str), "movie_title": ratings.movie_title.astype(str)}
    )
    shuffled = rows.shuffle(100_000, seed=42, reshuffle_each_iteration=False)
    train = shuffled.take(80_000)
    test = shuffled.skip(80_000).take(20_000)

    for part, indices, size in ((train, train_idx, 80_000), (test, test_idx, 20_000)):
        expected = part.batch(size).get_single_element()
        assert len(indices) == size and indices.dtype == np.int64
        assert [v.decode() for v in expected["user_id"].numpy()] == ratings.user_id[indices].tolist()
        assert [v.decode() for v in expected["movie_title"].numpy()] == ratings.movie_title[indices].tolist()


@pytest.mark.parametrize("numpy_above", [None, 1000], ids=["tf.data", "numpy above TF_SHUFFLE_UP_TO"])
def test_random_split_is_deterministic_and_partitions_rows(numpy_above, monkeypatch):
    import importlib

    split_module = importlib.import_module("export.data.split")  # the module (export.data.split is the function)
    ratings = load("synthetic", synthetic=SyntheticSpec.tiny()).ratings
    if numpy_above is not None:
        tf_order = split_module.shuffled_order(len(ratings), 42)
        monkeypatch.setattr(split_module, "TF_SHUFFLE_UP_TO", numpy_above)
        assert not np.array_equal(split_module.shuffled_order(len(ratings), 42), tf_order)

    train_idx, test_idx = split(ratings)
    again_train, again_test = split(ratings)
    other_train, _ = split(ratings, seed=7)

    assert np.array_equal(train_idx, again_train) and np.array_equal(test_idx, again_test)
    assert (len(train_idx), len(test_idx)) == (3200, 800)
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(len(ratings)))
    assert not np.array_equal(train_idx, other_train)
    assert not np.array_equal(train_idx, np.arange(3200))  # actually shuffled


def _ratings_at(timestamps: list[int]) -> Ratings:
    n = len(timestamps)
    text = np.array([str(i) for i in range(n)], dtype=object)
    return Ratings(
        user_id=text,
        movie_id=text,
        movie_title=text,
        user_rating=np.ones(n),
        timestamp=np.array(timestamps),
        user_age=np.full(n, 25),
        user_gender=np.full(n, "F", object),
        user_occupation=np.full(n, "writer", object),
        user_zip_code=text,
    )


def test_time_split_trains_on_the_earliest_and_breaks_ties_by_source_order():
    ratings = _ratings_at([50, 10, 40, 10, 30, 20, 60, 40, 70, 90])

    train_idx, test_idx = split(ratings, kind="time")

    assert train_idx.tolist() == [1, 3, 5, 4, 2, 7, 0, 6]
    assert test_idx.tolist() == [8, 9]
    assert ratings.timestamp[train_idx].max() <= ratings.timestamp[test_idx].min()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "by-user"}, "unknown split kind"),
        ({"train_fraction": 1.0}, "train_fraction"),
        ({"train_fraction": 0.0}, "train_fraction"),
    ],
)
def test_bad_split_arguments_are_data_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        split(_ratings_at([1, 2, 3]), **kwargs)


def test_ratings_reject_columns_of_different_lengths():
    with pytest.raises(DataError, match="differ in length"):
        Ratings(**{**_ratings_at([1, 2, 3]).columns(), "user_id": np.array(["1", "2"], dtype=object)})


def test_movies_reject_genre_ids_outside_the_19():
    with pytest.raises(DataError, match=r"outside 0..18"):
        Movies(
            movie_id=np.array(["1"], dtype=object),
            movie_title=np.array(["A (1990)"], dtype=object),
            movie_genres=[(19,)],
        )


def test_ratings_take_selects_rows_in_order():
    ratings = _ratings_at([5, 6, 7, 8])
    subset = ratings.take(np.array([3, 1]))
    assert subset.timestamp.tolist() == [8, 6] and subset.user_id.tolist() == ["3", "1"]


def test_synthetic_spec_with_another_source_is_refused(tmp_path):
    with pytest.raises(DataError, match="SyntheticSpec"):
        load(tmp_path, synthetic=SyntheticSpec.tiny())


def test_string_columns_must_hold_str_not_bytes():
    with pytest.raises(DataError, match="movie_title must hold str"):
        Ratings(**{**_ratings_at([1, 2]).columns(), "movie_title": np.array([b"A", b"B"], dtype=object)})


def test_tfds_every_movielens_size_loads_offline_once_prepared(tmp_path):
    """tfds:1m (user features, .dat) and tfds:latest-small (no user features, .csv, genres beyond 100K's),
    prepared by TFDS' own builders from tiny GroupLens files, load with the same columns as the releases."""
    import tensorflow_datasets as tfds

    extracted = tmp_path / "extracted"
    (extracted / "ml-1m").mkdir(parents=True)
    (extracted / "ml-1m" / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Heat (1995)::Action|Crime|Thriller\n".encode("latin-1")
    )
    (extracted / "ml-1m" / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n")
    (extracted / "ml-1m" / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (extracted / "ml-latest-small").mkdir()
    (extracted / "ml-latest-small" / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Planet Earth (2006),(no genres listed)\n3,Avatar (2009),Action|IMAX\n"
    )
    (extracted / "ml-latest-small" / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,1147880044\n2,3,3.5,1147868817\n"
    )
    data_dir = tmp_path / "tfds"
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", return_value=str(extracted)):
        for size in ("1m", "latest-small"):
            for table in ("ratings", "movies"):
                tfds.builder(f"movielens/{size}-{table}", data_dir=str(data_dir)).download_and_prepare(
                    download_config=config
                )

    with mock.patch("export.data.tfds.socket.create_connection", side_effect=AssertionError("no network use")):
        one_m = load("tfds:1m", data_dir=data_dir, download=False)
        small = load("tfds:latest-small", data_dir=data_dir, download=False)
    rows = sorted(
        zip(
            one_m.ratings.user_id,
            one_m.ratings.movie_title,
            one_m.ratings.user_rating,
            one_m.ratings.user_gender,
            one_m.ratings.user_age,
            strict=True,
        )
    )
    assert rows == [
        ("1", "Heat (1995)", 3.0, "F", 1),
        ("1", "Toy Story (1995)", 5.0, "F", 1),
        ("2", "Heat (1995)", 4.0, "M", 56),
    ]
    assert one_m.source["datasets"][0].startswith("movielens/1m-ratings:")
    genres = dict(zip(small.movies.movie_title, small.movies.movie_genres, strict=True))
    assert genres["Avatar (2009)"] == (GENRES.index("Action"),)  # IMAX dropped
    assert genres["Planet Earth (2006)"] == (GENRES.index("Unknown"),)
    assert sorted(small.ratings.user_rating.tolist()) == [3.5, 4.0] and set(small.ratings.user_gender) == {""}


def test_an_unknown_tfds_size_is_one_line_naming_the_sizes(tmp_path):
    with pytest.raises(DataError, match=r"tfds:10k: unknown MovieLens size; tfds has 100k, 1m, 20m, 25m, latest-small"):
        load("tfds:10k", data_dir=tmp_path, download=False)
