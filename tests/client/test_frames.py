"""DataFrame output: one answer (``Recommendations.to_pandas``) and a batch (``client.to_pandas``), and a clear
ImportError without pandas, which the client never installs."""

from __future__ import annotations

import sys

import pytest

import retrieval_client as client
from retrieval_client import Hit, Recommendations

pd = pytest.importorskip("pandas")

ANSWERS = [
    Recommendations([Hit("Star Wars (1977)", 4.5, "50"), Hit("Fargo (1996)", 3.25, "100")], fallback=False),
    Recommendations([Hit("Titanic (1997)", 0.5, "313")], fallback=True, unmatched=2),
]


def test_one_answer_is_a_frame_of_its_hits_with_its_flags_in_attrs():
    frame = ANSWERS[0].to_pandas()
    assert list(frame.columns) == ["rank", "id", "title", "score"]
    assert frame.to_dict("records") == [
        {"rank": 1, "id": "50", "title": "Star Wars (1977)", "score": 4.5},
        {"rank": 2, "id": "100", "title": "Fargo (1996)", "score": 3.25},
    ]
    assert frame.attrs == {"fallback": False, "unmatched": 0}
    assert Recommendations([]).to_pandas().empty


def test_a_batch_is_one_row_per_hit_keyed_by_its_query():
    frame = client.to_pandas(ANSWERS, ["42", "nosuchuser"])
    assert list(frame.columns) == ["query", "rank", "id", "title", "score", "fallback", "unmatched"]
    assert frame[["query", "rank", "title", "fallback", "unmatched"]].values.tolist() == [
        ["42", 1, "Star Wars (1977)", False, 0],
        ["42", 2, "Fargo (1996)", False, 0],
        ["nosuchuser", 1, "Titanic (1997)", True, 2],
    ]
    assert client.to_pandas(dict(zip(["a", "b"], ANSWERS, strict=True)))["query"].tolist() == ["a", "a", "b"]
    assert client.to_pandas(ANSWERS)["query"].tolist() == [0, 0, 1]
    unknown = client.to_pandas([Recommendations([Hit("x", 1.0)])])  # a version that does not say: missing
    assert unknown["fallback"].isna().all() and str(unknown["fallback"].dtype) == "boolean"
    with pytest.raises(ValueError, match="1 queries for 2 results"):
        client.to_pandas(ANSWERS, ["42"])


def test_without_pandas_it_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        ANSWERS[0].to_pandas()
    with pytest.raises(ImportError, match="needs pandas"):
        client.to_pandas(ANSWERS)


def test_a_served_answer_round_trips(local_server):
    with client.Client(local_server.grpc_url, timeout=30) as c:
        rows = c.recommend(["1", "2"], k=3)
    frame = client.to_pandas(rows, ["1", "2"])
    assert len(frame) == 6 and frame.groupby("query")["rank"].max().tolist() == [3, 3]
    assert frame[frame["query"] == "2"]["title"].tolist() == [h.title for h in rows[1]]
