"""TensorFlow's DataType facts the local server needs without importing TensorFlow.

The enum numbers and ``DataTypeString`` names of ``tensorflow/core/framework/types.proto`` (``types.cc``),
the numpy type each numeric DataType converts to, the value ranges TF Serving's JSON conversion checks
(``util/json_tensor.cc``), and TensorFlow's ``TensorShape::DebugString``-style shape text. Every other
module of serving/ takes these facts from here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT32, DT_UINT64 = 9, 10, 22, 23

_NAMES = {  # DataTypeString()
    1: "float",
    2: "double",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    8: "complex64",
    9: "int64",
    10: "bool",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    14: "bfloat16",
    15: "qint16",
    16: "quint16",
    17: "uint16",
    18: "complex128",
    19: "half",
    20: "resource",
    21: "variant",
    22: "uint32",
    23: "uint64",
}

NUMPY = {  # the numpy type a numeric DataType's values are held in
    DT_FLOAT: np.float32,
    DT_DOUBLE: np.float64,
    DT_INT32: np.int32,
    DT_UINT8: np.uint8,
    DT_INT16: np.int16,
    DT_INT8: np.int8,
    DT_INT64: np.int64,
    DT_BOOL: np.bool_,
    DT_UINT32: np.uint32,
    DT_UINT64: np.uint64,
}

INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)


def dtype_string(dtype: int) -> str:
    """``DataTypeString``: DT_FLOAT -> "float", DT_STRING -> "string"."""
    return _NAMES.get(dtype, f"unknown dtype enum ({dtype})")


def is_string(array: np.ndarray) -> bool:
    """Whether a numpy array holds DT_STRING values (object, bytes or str arrays)."""
    return array.dtype.kind in ("O", "S", "U")


def format_shape(shape: Iterable[int]) -> str:
    """A shape as TensorFlow writes it in messages: ``[2,-1]``."""
    return "[" + ",".join(str(d) for d in shape) + "]"
