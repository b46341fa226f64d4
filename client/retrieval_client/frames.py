"""Results as pandas DataFrames, for notebooks and batch jobs: optional, pandas is imported only when asked.

:meth:`client.Recommendations.to_pandas` is one query's hits; :func:`to_pandas` the answers of a batch (the
list a call returns for a list of queries, or a mapping of query to answer) in long form, one row per hit,
as ``pandas.concat`` of the per-query frames with the query as a column. pandas is never a dependency of the
client (``pip install pandas`` to use these); without it they raise ImportError saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval_client.results import Recommendations

HIT_COLUMNS = ("rank", "id", "title", "score")  # rank: 1 for the best hit
QUERY_COLUMNS = ("query", *HIT_COLUMNS, "fallback", "unmatched")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            "DataFrame output needs pandas, which the client does not install: pip install pandas"
        ) from exc
    return pandas


def hits_frame(hits: Recommendations) -> Any:
    """One query's hits: columns rank, id, title, score (best first); ``attrs`` holds ``fallback`` and
    ``unmatched``, the answer's flags."""
    pd = _pandas()
    frame = pd.DataFrame(
        {
            "rank": pd.Series(range(1, len(hits) + 1), dtype="int64"),
            "id": pd.Series([h.id for h in hits], dtype="string"),
            "title": pd.Series([h.title for h in hits], dtype="string"),
            "score": pd.Series([h.score for h in hits], dtype="float64"),
        },
        columns=list(HIT_COLUMNS),
    )
    frame.attrs.update(fallback=hits.fallback, unmatched=hits.unmatched)
    return frame


def to_pandas(
    results: Sequence[Recommendations] | Mapping[Any, Recommendations], queries: Sequence[Any] | None = None
) -> Any:
    """A batch's answers, one row per hit: columns query, rank, id, title, score, fallback (nullable boolean:
    missing when the version does not say), unmatched. ``results`` is the list a call returned for a list of
    queries (give ``queries``, the list it was called with; default 0, 1, ...) or a mapping of query to answer."""
    pd = _pandas()
    if isinstance(results, Mapping):
        if queries is not None:
            raise ValueError("give queries only with a list of results (a mapping's keys are its queries)")
        pairs = list(results.items())
    else:
        keys = list(range(len(results))) if queries is None else list(queries)
        if len(keys) != len(results):
            raise ValueError(f"{len(keys)} queries for {len(results)} results")
        pairs = list(zip(keys, results, strict=True))
    frames = []
    for query, hits in pairs:
        frame = hits_frame(hits)
        frame.insert(0, "query", query)
        frame["fallback"] = pd.Series([hits.fallback] * len(hits), dtype="boolean")
        frame["unmatched"] = pd.Series([hits.unmatched] * len(hits), dtype="int64")
        frames.append(frame)
    if not frames:
        return pd.DataFrame({name: [] for name in QUERY_COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {}  # per-query flags are columns here
    return out
