"""What the calls take as several ids, titles, exclusions or histories: any iterable, numpy arrays and pandas
Series included, each answered exactly as the same values in a list are (against the local server, over both
transports; the async client through one, as it shares the request building, retrieval_client/calls.py).
Sets: refused for queries (no order), taken for one user's exclusions and one history. numpy and pandas are
the tests' (the client imports neither)."""

from __future__ import annotations

import asyncio
import collections

import pytest

import retrieval_client as client

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

USERS = ["1", "2", "3"]


def same(a, b) -> bool:
    """The same answers: titles and ids in order, scores to float32 rounding (a batch of another size, or a
    history's titles averaged in another order, may differ in the last bit), and the same flags."""
    if isinstance(a, client.Recommendations):
        return (
            isinstance(b, client.Recommendations)
            and [(h.title, h.id) for h in a] == [(h.title, h.id) for h in b]
            and [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-5, abs=1e-7)
            and (a.fallback, a.unmatched) == (b.fallback, b.unmatched)
        )
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module", params=["rest", "grpc"])
def c(request, local_server):
    with client.connect(local_server.url(request.param), timeout=30) as made:
        yield made


@pytest.fixture(scope="module")
def reference(c):
    """The answers to plain lists, and some catalogue titles and ids to ask with."""
    by_user = c.recommend(USERS, k=4)
    hits = by_user[0]
    return {"by_user": by_user, "titles": [h.title for h in hits], "ids": [h.id for h in hits]}


@pytest.mark.parametrize(
    "make",
    [
        tuple,
        iter,
        lambda users: (u for u in users),  # a generator, consumed once
        lambda users: collections.deque(users),
        lambda users: dict.fromkeys(users).keys(),  # a dict's keys keep their order
        lambda users: range(1, 4),  # ints are ids
        lambda users: [np.str_(u) for u in users],
        lambda users: np.array(users),  # <U1
        lambda users: np.array(users, dtype=object),
        lambda users: np.array([u.encode() for u in users]),  # S1: bytes, UTF-8
        lambda users: np.array([int(u) for u in users], dtype=np.int32),
        lambda users: np.arange(1, 4, dtype=np.uint64),
        lambda users: pd.Series(users),
        lambda users: pd.Series([int(u) for u in users]),
        lambda users: pd.Index(users),
        lambda users: pd.DataFrame({"user": users})["user"],
        lambda users: [u.encode() for u in users],
    ],
    ids=[
        "tuple",
        "iterator",
        "generator",
        "deque",
        "dict-keys",
        "range",
        "numpy-str-scalars",
        "numpy-str",
        "numpy-object",
        "numpy-bytes",
        "numpy-int32",
        "numpy-uint64",
        "series-str",
        "series-int",
        "index",
        "dataframe-column",
        "bytes",
    ],
)
def test_several_user_ids_in_any_iterable_are_answered_as_a_list(c, reference, make):
    assert c.recommend(make(USERS), k=4) == reference["by_user"]


@pytest.mark.parametrize("one", ["1", 1, b"1", np.str_("1"), np.bytes_(b"1"), np.int64(1), np.array("1"), np.array(1)])
def test_one_id_of_any_kind_is_one_query(c, reference, one):
    answer = c.recommend(one, k=4)
    assert isinstance(answer, client.Recommendations) and same(answer, reference["by_user"][0])


def test_titles_and_movie_ids_take_the_same_kinds(c, reference):
    titles, ids = reference["titles"][:2], reference["ids"][:2]
    by_title, by_id = c.similar(titles, k=3), c.similar_by_id(ids, k=3)
    assert c.similar(np.array(titles), k=3) == by_title
    assert c.similar(pd.Series([t.encode() for t in titles]), k=3) == by_title
    assert c.similar(t for t in titles) == c.similar(titles)
    assert c.similar(titles[0].encode(), k=3) == by_title[0]
    assert c.similar_by_id(np.array([int(i) for i in ids]), k=3) == by_id
    assert c.similar_by_id(pd.Series(ids), k=3) == by_id


def test_one_user_s_exclusions_may_be_a_set_or_an_array(c, reference):
    titles, ids = reference["titles"][:2], reference["ids"][:2]
    by_title = c.recommend("1", k=4, exclude=titles)
    assert not set(titles) & {h.title for h in by_title}
    for exclude in (set(titles), frozenset(titles), np.array(titles), pd.Series(titles), (t for t in titles)):
        assert same(c.recommend("1", k=4, exclude=exclude), by_title)
    by_id = c.recommend("1", k=4, exclude_ids=ids)
    assert not set(ids) & {h.id for h in by_id}
    mixed = {int(ids[0]), ids[1]}  # a set of an int and a str: sent sorted, as one row
    for exclude_ids in (set(ids), mixed, np.array([int(i) for i in ids]), pd.Series(ids)):
        assert same(c.recommend("1", k=4, exclude_ids=exclude_ids), by_id)
    # several users: one row each, a 2-D array too; the rows may be sets
    two = c.recommend(["1", "2"], k=4, exclude=[titles, titles[:1]])
    assert c.recommend(np.array(["1", "2"]), k=4, exclude=[set(titles), {titles[0]}]) == two
    assert c.recommend(["1", "2"], k=4, exclude_ids=np.array([ids, ids])) == c.recommend(
        ["1", "2"], k=4, exclude_ids=[ids, ids]
    )


def test_a_history_may_be_a_set_an_array_or_a_series_and_several_a_2d_array(c, reference):
    titles, ids = reference["titles"][:3], reference["ids"][:3]
    one = c.recommend_for_history(titles, k=4)
    assert isinstance(one, client.Recommendations) and one.fallback is not True
    for history in (
        set(titles),
        np.array(titles),
        pd.Series(titles),
        (t for t in titles),
        [t.encode() for t in titles],
    ):
        assert same(c.recommend_for_history(history, k=4), one)
    by_ids = c.recommend_for_history_ids(ids, k=4)
    assert c.recommend_for_history_ids(np.array([int(i) for i in ids]), k=4) == by_ids
    assert same(c.recommend_for_history_ids(set(ids), k=4), by_ids)
    several = c.recommend_for_history_ids([ids, ids[:1]], k=4)
    assert same(c.recommend_for_history_ids([set(ids), (i for i in ids[:1])], k=4), several)
    assert same(c.recommend_for_history_ids(np.array([[int(i) for i in ids]] * 2), k=4), [by_ids, by_ids])


@pytest.mark.parametrize(
    "call, args, text",
    [
        ("recommend", ({"1", "2"},), "user_ids must be a list, not a set: a set has no order"),
        ("recommend", (frozenset({"1"}),), "user_ids must be a list, not a frozenset"),
        ("similar", ({"Movie"},), "titles must be a list, not a set"),
        ("similar_by_id", ({1, 2},), "movie_ids must be a list, not a set"),
        ("recommend_for_history", ({frozenset({"a"}), frozenset({"b"})},), "history must be a list, not a set"),
        ("recommend", ({"1": "a"},), r"user_ids must be a list, not a dict .*list\(d.keys\(\)\)"),
        ("recommend", (np.array([1.0, 2.0]),), "a user id is a str or an int"),
        ("recommend", ([b"\xff"],), "a user id must be UTF-8 text"),
        ("recommend", (object(),), "user_ids must be a list or another iterable"),
        ("recommend", ("1",), None),  # one str: one query, not a list of characters
    ],
)
def test_what_cannot_be_a_list_of_queries_is_refused_before_any_call(c, call, args, text):
    if text is None:
        assert isinstance(getattr(c, call)(*args), client.Recommendations)
        return
    with pytest.raises(client.InvalidArgumentError, match=text):
        getattr(c, call)(*args)


def test_a_dataframe_is_refused_with_what_to_pass(c):
    frame = pd.DataFrame({"user": USERS})
    with pytest.raises(client.InvalidArgumentError, match=r"2-D DataFrame\): pass a column, or .to_numpy\(\)"):
        c.recommend(frame)


def test_the_async_client_takes_the_same_inputs(local_server, reference):
    async def main():
        async with client.connect_async(local_server.grpc_url, timeout=30) as c:
            answers = await asyncio.gather(
                c.recommend(np.array(USERS), k=4),
                c.recommend(pd.Series([int(u) for u in USERS]), k=4),
                c.recommend((u for u in USERS), k=4),
                c.recommend_for_history(set(reference["titles"][:3]), k=4),
            )
            with pytest.raises(client.InvalidArgumentError, match="not a set"):
                await c.recommend(set(USERS))
            return answers

    array, series, generator, history = asyncio.run(main())
    assert array == series == generator == reference["by_user"]
    with client.connect(local_server.grpc_url) as c:
        assert same(history, c.recommend_for_history(reference["titles"][:3], k=4))
