"""Your own interactions (CSV / Parquet) and the GroupLens releases after 100K, written here in their formats."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from export.data import DataError, load
from export.data.own_files import Columns
from export.data.records import GENRES

ROOT = Path(__file__).resolve().parents[2]


def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_own_csv_with_a_catalogue_keys_titles_uniquely_and_keeps_unrated_items(tmp_path):
    data = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu1,a,10\nu2,b,20\nu1,c,30\n")
    items = write(tmp_path / "items.csv", 'item_id,title\na,Heat\nb,"Heat"\nc,"Alien, the film"\nd,Unrated\n')
    loaded = load(str(data), columns=Columns(items_file=str(items)))
    assert loaded.ratings.user_id.tolist() == ["u1", "u2", "u1"]
    assert loaded.ratings.timestamp.tolist() == [10, 20, 30]
    # "Heat" names two ids: each is shown with its id; titles stay display names otherwise.
    assert loaded.ratings.movie_title.tolist() == ["Heat [a]", "Heat [b]", "Alien, the film"]
    assert loaded.movies.movie_title.tolist() == ["Heat [a]", "Heat [b]", "Alien, the film", "Unrated"]
    assert loaded.source["kind"] == "own" and loaded.source["sizes"]["movies"] == 4


def test_own_parquet_with_other_column_names_and_a_datetime_column(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    when = [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)]
    pq.write_table(
        pa.table({"who": ["7", "8"], "what": [101, 102], "at": pa.array(when, pa.timestamp("ms"))}),
        tmp_path / "events.parquet",
    )
    loaded = load(str(tmp_path / "events.parquet"), columns=Columns(user="who", item="what", time="at"))
    assert loaded.ratings.movie_title.tolist() == ["101", "102"]  # no catalogue: the id is the title
    assert loaded.ratings.timestamp.tolist() == [1704067200, 1704153600]


def test_without_a_time_column_the_row_order_is_the_time_order(tmp_path):
    data = write(tmp_path / "events.csv", "user_id,item_id\nu1,a\nu1,b\n")
    assert load(str(data)).ratings.timestamp.tolist() == [0, 1]


@pytest.mark.parametrize(
    "files, columns, message",
    [
        (
            {"events.csv": "user,item_id\nu1,a\n"},
            {},
            "events.csv: no column 'user_id' (columns: user, item_id); name the right one with --user-column",
        ),
        ({"events.csv": ""}, {}, "events.csv: the file is empty"),
        ({"events.csv": "user_id,item_id\n"}, {}, "events.csv: no interaction rows"),
        (
            {"events.csv": "user_id,item_id,timestamp\nu1,a,10\nu1,b,yesterday\n"},
            {},
            "events.csv line 3: timestamp 'yesterday' is not a time (integer seconds or an ISO date)",
        ),
        (
            {"events.csv": "user_id,item_id\nu1,a\nu1,z\n", "items.csv": "item_id,title\na,A\n"},
            {"items_file": "items.csv"},
            "items.csv lacks 1 item id(s) that",
        ),
        (
            {"events.csv": "user_id,item_id\nu1,a\n", "items.csv": "item_id,title\nb,B\na,A\nb,C\n"},
            {"items_file": "items.csv"},
            "items.csv: item id 'b' appears twice; one row per item",
        ),
        (
            {"events.csv": "user_id,item_id\nu1,a\n"},
            {"time": "when", "time_given": True},
            "events.csv: no column 'when'",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_the_column_or_row_and_the_fix(tmp_path, files, columns, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    if "items_file" in columns:
        columns = {**columns, "items_file": str(tmp_path / columns["items_file"])}
    with pytest.raises(DataError) as error:
        load(str(tmp_path / "events.csv"), columns=Columns(**columns))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_file_that_is_not_utf8_says_so(tmp_path):
    write(tmp_path / "events.csv", "user_id,item_id\nu1,Café\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"events.csv line 2: not UTF-8 text \('u1,Caf.'\); re-save"):
        load(str(tmp_path / "events.csv"))


ML1M_MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Heat (1995)::Action|Crime|Thriller\n"
ML1M_RATINGS = "1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n"
ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"


def test_ml_1m_dat_files_in_a_zip_are_detected_and_read(tmp_path):
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-1m/movies.dat", ML1M_MOVIES.encode("latin-1"))
        z.writestr("ml-1m/ratings.dat", ML1M_RATINGS)
        z.writestr("ml-1m/users.dat", ML1M_USERS)
    loaded = load(str(archive))
    r = loaded.ratings
    assert r.user_id.tolist() == ["1", "1", "2"] and r.movie_title.tolist()[0] == "Toy Story (1995)"
    assert r.user_rating.tolist() == [5.0, 3.0, 4.0] and r.timestamp.tolist()[0] == 978300760
    assert r.user_gender.tolist() == ["F", "F", "M"] and r.user_age.tolist() == [1, 1, 56]
    assert r.user_occupation.tolist()[0] == "K-12 student"
    assert [GENRES[g] for g in loaded.movies.movie_genres[0]] == ["Animation", "Children", "Comedy"]
    assert loaded.source["kind"] == "grouplens-dat"


def test_ml_25m_csv_files_in_a_folder_are_detected_and_read(tmp_path):
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    write(
        folder / "movies.csv",
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Planet Earth (2006),(no genres listed)\n3,Avatar (2009),Action|IMAX\n",
    )
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1147880044\n2,3,3.5,1147868817\n")
    loaded = load(str(tmp_path))  # the release folder one level down
    assert loaded.ratings.movie_title.tolist() == ["American President, The (1995)", "Avatar (2009)"]
    assert loaded.ratings.user_rating.tolist() == [4.0, 3.5]
    assert [loaded.movies.movie_genres[i] for i in (1, 2)] == [(GENRES.index("Unknown"),), (GENRES.index("Action"),)]
    assert np.all(loaded.ratings.user_age == 1) and loaded.source["kind"] == "grouplens-csv"


def test_a_release_whose_ratings_name_unknown_movies_is_one_clear_line(tmp_path):
    write(tmp_path / "movies.csv", "movieId,title,genres\n1,A,Drama\n")
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,9,4.0,1\n")
    with pytest.raises(DataError, match=r"movie id.*the movies file lacks, e.g. '9'"):
        load(str(tmp_path))


@pytest.mark.slow
def test_export_cli_trains_on_your_own_file(tmp_path, export_cli):
    rng = np.random.default_rng(0)
    lines = ["who,what"] + [f"u{u},i{rng.integers(0, 30)}" for u in range(40) for _ in range(12)]
    write(tmp_path / "events.csv", "\n".join(lines) + "\n")
    proc = export_cli(
        [
            "--data",
            tmp_path / "events.csv",
            "--user-column",
            "who",
            "--item-column",
            "what",
            "--preset",
            "seed",
            "--epochs",
            "1",
            "--index",
            "brute_force",
            "--k",
            "5",
            "--models",
            "retrieval",
            "--model-base-path",
            tmp_path / "models",
            "--no-gate",  # 480 random ratings: nothing beats popularity there
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 480 lines, of which repeated (user, item) pairs are dropped (the first of each kept) and counted.
    pairs = set(lines[1:])
    assert f"data: own - {len(pairs)} ratings" in proc.stdout
    assert f"dropped {480 - len(pairs)} repeated (user, item) row(s)" in proc.stderr
    bad = export_cli(["--data", tmp_path / "events.csv", "--model-base-path", tmp_path / "models2"])
    assert bad.returncode == 1 and "no column 'user_id'" in bad.stderr.strip().splitlines()[-1]


def test_the_codes_made_while_loading_are_the_columns_codes(tmp_path):
    """Loaders hand their dictionary-encoded codes to Ratings (no second pass over 25M strings); they must be
    what factorizing the loaded columns gives, vocabulary sorted, for every kind of file."""
    from export.data.records import factorize
    from export.data.synthetic import SyntheticSpec

    events = write(tmp_path / "events.csv", "user_id,item_id\n10,b\n9,a\n10,c\n2,b\n")
    folder = tmp_path / "ml-latest"
    folder.mkdir()
    write(folder / "movies.csv", "movieId,title,genres\n1,Zed (1999),Drama\n2,Alpha (1990),Drama\n3,Zed (1999),Drama\n")
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n7,3,4.0,1\n11,1,3.5,2\n7,2,3.0,3\n")
    synthetic = load("synthetic", synthetic=SyntheticSpec.tiny())  # primed from the generator's indices
    for loaded in (load(str(events)), load(str(folder)), synthetic):
        ratings = loaded.ratings
        for column in ("user_id", "movie_title"):
            assert column in ratings._coded  # primed by the loader, not factorized on first use
            primed, made = ratings.coded(column), factorize(getattr(ratings, column))
            assert primed.vocabulary.tolist() == made.vocabulary.tolist()
            assert np.array_equal(primed.codes, made.codes)
    assert load(str(events)).ratings.coded("user_id").vocabulary.tolist() == ["10", "2", "9"]  # str order


def test_the_scaling_benchmarks_release_reads_back_as_the_synthetic_data_it_was_made_from(tmp_path, monkeypatch):
    """benchmarks/export_scaling.py times the export on a release it writes once (ML-25M's format): loaded
    with the export's own loader, it must be the synthetic data, row for row, or the figures would be of
    other data."""
    import importlib.util

    from export.data.synthetic import SyntheticSpec, generate

    spec = importlib.util.spec_from_file_location("export_scaling", ROOT / "benchmarks" / "export_scaling.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(bench.SIZES, "tiny", (60, 150, 4000))
    folder, made = bench.release("tiny")
    assert made > 0 and folder == tmp_path / "retrieval-bundle" / "synthetic" / "tiny"
    assert bench.release("tiny") == (folder, 0.0)  # made once, then reused
    loaded, original = load(str(folder)), generate(SyntheticSpec(users=60, movies=150, ratings=4000, seed=0))
    for column in ("user_id", "movie_id", "movie_title", "user_rating", "timestamp"):
        assert getattr(loaded.ratings, column).tolist() == getattr(original.ratings, column).tolist(), column
    assert loaded.movies.movie_genres == original.movies.movie_genres
