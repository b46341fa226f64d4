"""What calls return: small frozen records, the same over REST and gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Hit:
    """One recommended movie; lists of hits are best first. ``id``: its catalogue id (the ``movie_ids``
    output; "" from a model exported without it)."""

    title: str
    score: float
    id: str = ""


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
