"""Plain Python values as tensors: nested lists in, nested lists out, no numpy.

``predict`` takes inputs as nested lists (or scalars) of str/bytes/bool/int/float; the dtype is inferred
(str/bytes: DT_STRING, bool: DT_BOOL, int: DT_INT64, float or int+float: DT_FLOAT) unless the value is
wrapped in ``Tensor.of(value, dtype="DT_INT32")``. Over REST the server converts JSON to the signature's
dtype anyway; over gRPC TF Serving wants the exact dtype, hence the wrapper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from retrieval_client.errors import InvalidArgumentError

SUPPORTED_DTYPES = frozenset(
    {
        "DT_FLOAT",
        "DT_DOUBLE",
        "DT_INT8",
        "DT_INT16",
        "DT_INT32",
        "DT_INT64",
        "DT_UINT8",
        "DT_UINT16",
        "DT_UINT32",
        "DT_UINT64",
        "DT_BOOL",
        "DT_STRING",
    }
)


@dataclass(frozen=True)
class Tensor:
    """A dense tensor: ``values`` flat in row-major order, ``shape``, and a TensorFlow dtype name."""

    values: tuple[Any, ...]
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in SUPPORTED_DTYPES:
            raise InvalidArgumentError(
                f"unsupported dtype {self.dtype!r}; use one of {', '.join(sorted(SUPPORTED_DTYPES))}"
            )
        size = 1
        for dim in self.shape:
            size *= dim
        if size != len(self.values):
            raise InvalidArgumentError(f"{len(self.values)} values do not fill shape {list(self.shape)}")

    @classmethod
    def of(cls, value: Any, dtype: str | None = None, *, name: str = "input") -> Tensor:
        """A tensor from a scalar or a (rectangular) nested list; ``name`` only serves error messages."""
        if isinstance(value, Tensor):
            return value if dtype is None or dtype == value.dtype else cls(value.values, value.shape, dtype)
        flat: list[Any] = []
        shape = _walk(value, flat, name)
        if dtype is None:
            dtype = _infer_dtype(flat, name)
        return cls(tuple(flat), shape, dtype)

    def nested(self) -> Any:
        return nest(self.values, self.shape)


def _walk(value: Any, flat: list[Any], name: str) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        shapes = {_walk(item, flat, name) for item in value}
        if len(shapes) > 1:
            raise InvalidArgumentError(
                f"{name!r} is ragged (rows of shapes {sorted(shapes)}); every row needs the same length"
            )
        return (len(value), *(shapes.pop() if shapes else ()))
    if isinstance(value, (str, bytes, bool, int, float)):
        flat.append(value)
        return ()
    raise InvalidArgumentError(
        f"{name!r} holds a {type(value).__name__}; inputs are nested lists of str, bytes, bool, int or float"
    )


def _infer_dtype(flat: list[Any], name: str) -> str:
    kinds = {
        "DT_STRING"
        if isinstance(v, (str, bytes))
        else "DT_BOOL"
        if isinstance(v, bool)
        else "DT_INT64"
        if isinstance(v, int)
        else "DT_FLOAT"
        for v in flat
    }
    if not kinds:
        raise InvalidArgumentError(f"{name!r} is empty: pass Tensor.of([], dtype=...) to say its dtype")
    if kinds == {"DT_INT64", "DT_FLOAT"}:
        return "DT_FLOAT"
    if len(kinds) > 1:
        raise InvalidArgumentError(f"{name!r} mixes value types {sorted(kinds)}; use one type per input")
    return kinds.pop()


def nest(flat: Iterable[Any], shape: tuple[int, ...]) -> Any:
    """Row-major ``flat`` values as nested lists of ``shape`` (a scalar for shape ())."""
    values = list(flat)
    if not shape:
        return values[0]
    if len(shape) == 1:
        return values
    step = len(values) // shape[0] if shape[0] else 0
    return [nest(values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]
