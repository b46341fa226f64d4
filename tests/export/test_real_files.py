"""A corpus of real-world file defects, for every loader that reads files: each loads correctly or stops with
one line naming the file, the line and the fix; none loads part of a file silently (``source["rows"]``
counts what was read, kept and dropped).

The files are written here from clean text, one defect at a time (``DEFECTS``), in each format: your own
interactions (``--data FILE.csv`` + ``--items``), GroupLens' CSV releases (ml-latest-small, ML-20M/25M:
ratings.csv + movies.csv) and ml-100k (u.data + u.item + u.user). ML-1M's .dat files go through the same
reader as the CSV releases (export/data/text.py) and are checked for the defects that apply to them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from export.data import DataError, load
from export.data.own_files import Columns
from export.data.records import GENRES

# --------------------------------------------------------------------------- the clean data, in each format

RATINGS = [("1", "10", 4.0, 100), ("1", "20", 3.5, 200), ("2", "10", 5.0, 300), ("2", "30", 2.0, 400)]
TITLES = {"10": "Heat (1995)", "20": "American President, The (1995)", "30": 'Shawshank "Redemption" (1994)'}


def csv_release(tmp_path: Path, ratings_lines: list[str], movies_lines: list[str], *, ending: str = "\n") -> Path:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir(exist_ok=True)
    (folder / "ratings.csv").write_bytes(ending.join(ratings_lines).encode("utf-8") + ending.encode())
    (folder / "movies.csv").write_bytes(ending.join(movies_lines).encode("utf-8") + ending.encode())
    return folder


def ratings_csv() -> list[str]:
    return ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r},{t}" for u, m, r, t in RATINGS]


def movies_csv() -> list[str]:
    return ["movieId,title,genres", '10,Heat (1995),Action', '20,"American President, The (1995)",Comedy',
            '30,"Shawshank ""Redemption"" (1994)",Drama']  # fmt: skip


def own_files(tmp_path: Path, events: list[str], items: list[str]) -> tuple[Path, Columns]:
    (tmp_path / "events.csv").write_text("\n".join(events) + "\n", encoding="utf-8")
    (tmp_path / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")
    return tmp_path / "events.csv", Columns(items_file=str(tmp_path / "items.csv"))


def events_csv() -> list[str]:
    return ["user_id,item_id,timestamp"] + [f"{u},{m},{t}" for u, m, _, t in RATINGS]


def items_csv() -> list[str]:
    return ["item_id,title"] + [line.rsplit(",", 1)[0] for line in movies_csv()[1:]]


def ml100k(tmp_path: Path, data_lines: list[str], *, item_bytes: bytes | None = None, ending: str = "\n") -> Path:
    folder = tmp_path / "ml-100k"
    folder.mkdir(exist_ok=True)
    flags = "|".join("0" for _ in GENRES)
    items = [f"{m}|{t}|01-Jan-1995||http://x|{flags}" for m, t in TITLES.items()]
    (folder / "u.item").write_bytes(
        item_bytes if item_bytes is not None else "\n".join(items).encode("latin-1") + b"\n"
    )
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (folder / "u.data").write_bytes(ending.join(data_lines).encode("latin-1") + ending.encode())
    return folder


def u_data() -> list[str]:
    return [f"{u}\t{m}\t{int(r)}\t{t}" for u, m, r, t in RATINGS]


def check_clean(loaded, *, ratings: list[tuple] = RATINGS, titles: dict = TITLES) -> None:
    """The data loaded is the clean data: every rating, in order, with its title."""
    r = loaded.ratings
    got = list(zip(r.user_id.tolist(), r.movie_id.tolist(), r.timestamp.tolist(), strict=True))
    assert got == [(u, m, t) for u, m, _, t in ratings]
    assert r.movie_title.tolist() == [titles[m] for _, m, _, _ in ratings]


def assert_one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


# --------------------------------------------------------------------------- defects that load correctly


def test_empty_trailing_columns_load_in_a_csv_release_and_in_your_own_file(tmp_path):
    # ml-latest-small as a public copy has it: "userId,movieId,rating,timestamp,,,," and ",,,," on every row.
    folder = csv_release(tmp_path, [line + ",,,," for line in ratings_csv()], movies_csv())
    loaded = load(str(folder))
    check_clean(loaded)
    assert loaded.ratings.user_rating.tolist() == [r for _, _, r, _ in RATINGS]
    assert loaded.source["rows"] == {"read": 4, "kept": 4, "dropped": {"blank_lines": 0, "repeated_headers": 0,
                                                                       "duplicates": 0}}  # fmt: skip
    events, columns = own_files(tmp_path, [line + ",,," for line in events_csv()], items_csv())
    check_clean(load(str(events), columns=columns))


def test_a_value_in_a_column_the_header_leaves_unnamed_is_refused_naming_the_line(tmp_path):
    lines = [line + ",," for line in ratings_csv()]
    lines[3] += "oops"
    with pytest.raises(DataError) as error:
        load(str(csv_release(tmp_path, lines, movies_csv())))
    assert_one_line(error, "ratings.csv line 4: a value in column 6, which the header leaves unnamed", "delete")


def test_a_utf8_bom_is_skipped_everywhere(tmp_path):
    bom = "\ufeff"
    folder = csv_release(
        tmp_path, [bom + ratings_csv()[0], *ratings_csv()[1:]], [bom + movies_csv()[0], *movies_csv()[1:]]
    )
    check_clean(load(str(folder)))
    events, columns = own_files(tmp_path, [bom + events_csv()[0], *events_csv()[1:]], items_csv())
    check_clean(load(str(events), columns=columns))
    folder = ml100k(tmp_path, u_data())
    (folder / "u.data").write_bytes(b"\xef\xbb\xbf" + (folder / "u.data").read_bytes())  # UTF-8's BOM bytes
    check_clean(load(str(folder)))


@pytest.mark.parametrize("kind", ["release", "own", "ml-100k"])
def test_crlf_line_endings_load(tmp_path, kind):
    if kind == "release":
        loaded = load(str(csv_release(tmp_path, ratings_csv(), movies_csv(), ending="\r\n")))
    elif kind == "own":
        (tmp_path / "events.csv").write_bytes("\r\n".join(events_csv()).encode() + b"\r\n")
        (tmp_path / "items.csv").write_bytes("\r\n".join(items_csv()).encode() + b"\r\n")
        loaded = load(str(tmp_path / "events.csv"), columns=Columns(items_file=str(tmp_path / "items.csv")))
    else:
        loaded = load(str(ml100k(tmp_path, u_data(), ending="\r\n")))
    check_clean(loaded)


def test_quoted_titles_with_commas_and_quotes_load_as_written(tmp_path):
    loaded = load(str(csv_release(tmp_path, ratings_csv(), movies_csv())))
    assert sorted(loaded.movies.movie_title.tolist()) == sorted(TITLES.values())
    check_clean(loaded)
    events, columns = own_files(tmp_path, events_csv(), items_csv())
    check_clean(load(str(events), columns=columns))


def test_latin1_titles_load_from_ml100k_and_are_one_line_naming_the_line_in_a_utf8_csv(tmp_path):
    flags = "|".join("0" for _ in GENRES)
    items = "".join(f"{m}|{t}|01-Jan-1995||http://x|{flags}\n" for m, t in {**TITLES, "10": "Café (1995)"}.items())
    loaded = load(str(ml100k(tmp_path, u_data(), item_bytes=items.encode("latin-1"))))
    assert loaded.ratings.movie_title.tolist()[0] == "Café (1995)"  # u.item is latin-1: read as such
    movies = movies_csv()
    movies[1] = "10,Café (1995),Action"
    folder = csv_release(tmp_path, ratings_csv(), [])
    (folder / "movies.csv").write_bytes("\n".join(movies).encode("latin-1") + b"\n")
    with pytest.raises(DataError) as error:
        load(str(folder))
    assert_one_line(error, "movies.csv line 2: not UTF-8 text", "re-save the file as UTF-8")


def test_blank_lines_are_skipped_and_counted(tmp_path):
    ratings = ratings_csv()
    ratings[2:2] = ["", "   ", "\t"]
    loaded = load(str(csv_release(tmp_path, [*ratings, ""], movies_csv())))
    check_clean(loaded)
    assert loaded.source["rows"]["read"] == 8 and loaded.source["rows"]["dropped"]["blank_lines"] == 4
    assert loaded.source["rows"]["kept"] == 4
    data = u_data()
    data[1:1] = ["", "  "]
    loaded = load(str(ml100k(tmp_path, data)))
    check_clean(loaded)
    assert loaded.source["rows"]["dropped"]["blank_lines"] == 2 and loaded.source["rows"]["read"] == 6
    events = events_csv()
    events.insert(3, "")
    loaded = load(str(own_files(tmp_path, events, items_csv())[0]), columns=Columns())
    assert loaded.source["rows"]["dropped"]["blank_lines"] == 1 and len(loaded.ratings) == 4


def test_blank_lines_above_the_header_are_not_rows_and_lines_are_still_numbered_right(tmp_path):
    folder = csv_release(tmp_path, ["", "", *ratings_csv()], movies_csv())
    loaded = load(str(folder))
    check_clean(loaded)
    assert loaded.source["rows"]["read"] == 4 and loaded.source["rows"]["dropped"]["repeated_headers"] == 0
    csv_release(tmp_path, ["", "", *ratings_csv()[:3], "1,30,x,5", *ratings_csv()[3:]], movies_csv())
    with pytest.raises(DataError) as error:
        load(str(folder))
    assert_one_line(error, "ratings.csv line 6: rating 'x' is not a rating")


def test_a_repeated_header_row_is_dropped_and_counted(tmp_path):
    # Two files concatenated with `cat`: the second one's header is a row in the middle.
    ratings = ratings_csv()
    ratings.insert(3, ratings[0])
    loaded = load(str(csv_release(tmp_path, ratings, movies_csv())))
    check_clean(loaded)
    assert loaded.source["rows"]["dropped"]["repeated_headers"] == 1 and loaded.source["rows"]["read"] == 5
    events = events_csv()
    events.insert(2, events[0])
    loaded = load(str(own_files(tmp_path, events, items_csv())[0]), columns=Columns())
    assert "user_id" not in loaded.ratings.user_id.tolist()  # never a user called "user_id"
    assert loaded.source["rows"]["dropped"]["repeated_headers"] == 1


def test_duplicate_user_item_rows_keep_the_first_and_are_counted(tmp_path):
    ratings = ratings_csv()
    ratings.append("1,10,1.0,999")  # user 1 rated movie 10 again
    loaded = load(str(csv_release(tmp_path, ratings, movies_csv())))
    check_clean(loaded)
    assert loaded.ratings.user_rating.tolist()[0] == 4.0  # the first row of the pair
    assert loaded.source["rows"] == {"read": 5, "kept": 4, "dropped": {"blank_lines": 0, "repeated_headers": 0,
                                                                       "duplicates": 1}}  # fmt: skip
    loaded = load(str(ml100k(tmp_path, [*u_data(), "2\t10\t1\t999"])))
    check_clean(loaded)
    assert loaded.source["rows"]["dropped"]["duplicates"] == 1
    events, _ = own_files(tmp_path, [*events_csv(), "2,30,999", "2,30,1000"], items_csv())
    loaded = load(str(events), columns=Columns())
    assert len(loaded.ratings) == 4 and loaded.source["rows"]["dropped"]["duplicates"] == 2


def test_what_was_dropped_is_said_in_one_warning_line_per_file(tmp_path, caplog):
    ratings = [*ratings_csv(), "", "1,10,1.0,999", ratings_csv()[0]]
    with caplog.at_level("WARNING", logger="export.data"):
        load(str(csv_release(tmp_path, ratings, movies_csv())))
    [said] = [r.getMessage() for r in caplog.records]
    assert said.endswith(
        "ratings.csv: 7 lines read, 4 kept; dropped 1 blank line(s), 1 repeated header row(s), 1 repeated "
        "(user, item) row(s), the first of each kept"
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="export.data"):
        load(str(ml100k(tmp_path, [*u_data(), "1\t10\t2\t5"])))
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'ml-100k' / 'u.data'}: 5 lines read, 4 kept; dropped 1 repeated (user, item) row(s), the "
        "first of each kept"
    ]


def test_ratings_and_times_written_as_floats_load(tmp_path):
    ratings = ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r:.1f},{t}.0" for u, m, r, t in RATINGS]
    loaded = load(str(csv_release(tmp_path, ratings, movies_csv())))
    check_clean(loaded)
    assert loaded.ratings.user_rating.tolist() == [4.0, 3.5, 5.0, 2.0]
    data = [f"{u}\t{m}\t{r:.1f}\t{t}.0" for u, m, r, t in RATINGS]
    loaded = load(str(ml100k(tmp_path, data)))
    check_clean(loaded)
    assert loaded.ratings.user_rating.tolist() == [4.0, 3.5, 5.0, 2.0]


def test_a_time_that_is_not_whole_seconds_is_one_line_naming_the_line(tmp_path):
    ratings = ratings_csv()
    ratings[2] = "1,20,3.5,200.5"
    with pytest.raises(DataError) as error:
        load(str(csv_release(tmp_path, ratings, movies_csv())))
    assert_one_line(error, "ratings.csv line 3: timestamp '200.5' is not a time in whole seconds", "correct or delete")


def test_ids_with_spaces_around_them_are_trimmed(tmp_path):
    ratings = ["userId, movieId ,rating,timestamp"] + [f" {u} , {m},{r} , {t}" for u, m, r, t in RATINGS]
    movies = ["movieId,title,genres", " 10 ,Heat (1995),Action", *movies_csv()[2:]]
    check_clean(load(str(csv_release(tmp_path, ratings, movies))))
    data = [f" {u} \t {m}\t{int(r)} \t{t}" for u, m, r, t in RATINGS]
    check_clean(load(str(ml100k(tmp_path, data))))
    events, columns = own_files(tmp_path, ["user_id,item_id"] + [f"{u} ,  {m}" for u, m, _, _ in RATINGS],
                                items_csv())  # fmt: skip
    loaded = load(str(events), columns=columns)
    assert loaded.ratings.user_id.tolist() == ["1", "1", "2", "2"]  # two users, not four


def test_a_last_line_without_a_newline_that_is_complete_loads(tmp_path):
    folder = csv_release(tmp_path, ratings_csv(), movies_csv())
    path = folder / "ratings.csv"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    check_clean(load(str(folder)))


# --------------------------------------------------------------------------- defects that stop, in one line

TRUNCATED = "the file is truncated; download or copy it again"


@pytest.mark.parametrize(
    "cut, expected",
    [
        ("2,30,2.", "ratings.csv line 5: the last line has 3 of 4 fields"),  # cut inside a number
        ("2,3", "ratings.csv line 5: the last line has 2 of 4 fields"),
    ],
)
def test_a_truncated_ratings_file_is_one_line_naming_the_line(tmp_path, cut, expected):
    folder = csv_release(tmp_path, ratings_csv(), movies_csv())
    path = folder / "ratings.csv"
    path.write_bytes("\n".join([*ratings_csv()[:-1], cut]).encode())
    with pytest.raises(DataError) as error:
        load(str(folder))
    assert_one_line(error, expected, TRUNCATED)


def test_a_movies_file_cut_inside_a_quoted_title_is_truncated_not_a_shorter_title(tmp_path):
    # pyarrow alone reads '30,"Shawshank' (end of file inside the quotes) as the title "Shawshank".
    folder = csv_release(tmp_path, ratings_csv(), movies_csv())
    (folder / "movies.csv").write_bytes("\n".join([*movies_csv()[:-1], '30,"Shawshank']).encode())
    with pytest.raises(DataError) as error:
        load(str(folder))
    assert_one_line(error, "movies.csv line 4: the last line ends inside a quoted field", TRUNCATED)


def test_a_truncated_file_in_your_own_data_and_in_ml100k_is_one_line(tmp_path):
    (tmp_path / "events.csv").write_bytes("\n".join([*events_csv(), "3,"]).encode())
    (tmp_path / "events2.csv").write_bytes("\n".join([*events_csv(), "3"]).encode())
    with pytest.raises(DataError) as error:
        load(str(tmp_path / "events2.csv"))
    assert_one_line(error, "events2.csv line 6: the last line has 1 of 3 fields", TRUNCATED)
    with pytest.raises(DataError) as error:  # "3," has 2 fields: its item is empty
        load(str(tmp_path / "events.csv"))
    assert_one_line(error, "events.csv line 6: the last line has 2 of 3 fields", TRUNCATED)
    folder = ml100k(tmp_path, u_data())
    (folder / "u.data").write_bytes("\n".join([*u_data(), "2\t2"]).encode())
    with pytest.raises(DataError) as error:
        load(str(folder))
    assert_one_line(error, "u.data line 5: the last line has 2 of 4 fields", TRUNCATED)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: csv_release(p, [*ratings_csv()[:2], "1,20", *ratings_csv()[3:]], movies_csv()),
         "ratings.csv line 3: 2 fields where the header's 4 are expected ('1,20'); correct or delete that line"),
        (lambda p: csv_release(p, [*ratings_csv()[:2], "1,20,four,200", *ratings_csv()[3:]], movies_csv()),
         "ratings.csv line 3: rating 'four' is not a rating; correct or delete that line"),
        (lambda p: csv_release(p, [*ratings_csv()[:2], ",20,3,200", *ratings_csv()[3:]], movies_csv()),
         "ratings.csv line 3 has no value in column 'userId'; fill it or delete that line"),
        (lambda p: csv_release(p, ["user,movie,rating,timestamp", *ratings_csv()[1:]], movies_csv()),
         "ratings.csv: no column 'userId' (columns: user, movie, rating, timestamp); a GroupLens ratings.csv has "
         "the header userId,movieId,rating,timestamp"),
        (lambda p: ml100k(p, [*u_data()[:1], "1\t20\t3", *u_data()[2:]]),
         "u.data line 2: expected 4 '\\t'-separated fields, got 3"),
    ],
)  # fmt: skip
def test_a_malformed_line_in_the_middle_is_one_line_naming_file_line_and_fix(tmp_path, make, expected):
    with pytest.raises(DataError) as error:
        load(str(make(tmp_path)))
    assert_one_line(error, expected)


def test_ml_1m_dat_files_read_through_the_same_reader(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    movies = "\r\n".join(f"{m}::{t}::Drama" for m, t in {**TITLES, "10": "Café (1995)"}.items()) + "\r\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    ratings = [f"{u}::{m}::{int(r)}::{t}" for u, m, r, t in RATINGS]
    (folder / "ratings.dat").write_bytes(("\r\n".join([ratings[0], "", *ratings[1:], ratings[0]]) + "\r\n").encode())
    loaded = load(str(folder))
    check_clean(loaded, titles={**TITLES, "10": "Café (1995)"})
    assert loaded.source["rows"]["dropped"] == {"blank_lines": 1, "repeated_headers": 0, "duplicates": 1}
    (folder / "ratings.dat").write_bytes("\n".join([*ratings, "2::30"]).encode())
    with pytest.raises(DataError) as error:
        load(str(folder))
    assert_one_line(error, "ratings.dat line 5: the last line has 2 of 4 fields", TRUNCATED)


def test_the_cli_prints_a_data_error_as_one_export_error_line(tmp_path):
    """What the issue found: `--data DIR` with empty trailing columns stopped with pyarrow's rename error.
    Now it loads; a truncated copy stops with `export: error:` and the line (the CLI's DataError path)."""
    import contextlib
    import io

    from export.cli import main

    folder = csv_release(tmp_path, ratings_csv(), movies_csv())
    (folder / "ratings.csv").write_bytes("\n".join([*ratings_csv(), "2,3"]).encode())
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--data", str(folder), "--model-base-path", str(tmp_path / "models"), "--tune-budget", "0"])
    captured = stderr.getvalue().strip().splitlines()
    assert code == 1
    assert captured[-1].startswith("export: error: ") and "ratings.csv line 6: the last line has 2 of 4" in captured[-1]
