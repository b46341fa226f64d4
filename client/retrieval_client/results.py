"""What calls return: small frozen records, the same over REST and gRPC."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Hit:
    """One recommended movie; lists of hits are best first. ``id``: its catalogue id (the ``movie_ids``
    output; "" from a model exported without it)."""

    title: str
    score: float
    id: str = ""


class Recommendations(list[Hit]):
    """One query's hits, best first: a ``list`` of :class:`Hit` that also says how the model answered.

    ``fallback``: True when the answer is the popularity fallback (the user id, title or movie id is unknown to
    the model, or no item of the history is known), False when it is the model's own; None when the version
    that answered does not say (exported before the ``fallback`` output). ``unmatched``: how many non-empty
    exclusions or history items of the query matched no movie and were ignored (0 when the version does not
    say). Equality and everything else are the list's: the flags ride along, they do not change what it holds.
    """

    __slots__ = ("fallback", "unmatched")

    def __init__(self, hits: Iterable[Hit] = (), *, fallback: bool | None = None, unmatched: int = 0) -> None:
        super().__init__(hits)
        self.fallback = fallback
        self.unmatched = unmatched

    def __repr__(self) -> str:
        return f"Recommendations({super().__repr__()}, fallback={self.fallback!r}, unmatched={self.unmatched!r})"

    def to_pandas(self) -> Any:
        """The hits as a pandas DataFrame (rank, id, title, score; ``attrs``: fallback, unmatched); needs
        pandas, which the client does not install (:mod:`retrieval_client.frames`)."""
        from retrieval_client.frames import hits_frame

        return hits_frame(self)


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version of a model as the server sees it (``state``: START, LOADING, AVAILABLE, UNLOADING, END)."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A signature input or output; ``shape`` uses -1 for unknown sizes and is None for unknown rank."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)
    method_name: str = ""


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """The signatures of the version that answered."""

    name: str
    version: int
    signatures: dict[str, Signature] = field(default_factory=dict)
