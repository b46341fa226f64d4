"""JSON text as TF Serving writes it with rapidjson (``util/json_tensor.cc``, ``http_rest_api_handler.cc``).

Floats as ``WriteDecimal`` writes them: printf ``%g`` (six digits) when that reads back as the same value,
else ``%.9g`` for float32 / ``%.17g`` for float64, with ``.0`` added to whole numbers; NaN and infinities as
``NaN``/``Infinity``. :class:`PrettyWriter` is rapidjson's ``PrettyWriter`` (indent 4) with its
``kFormatSingleLineArray`` option; :func:`json_value_to_string` is ``JsonValueToString``, which TF Serving's
error messages quote parsed values with; :func:`error_json` is the error body of every REST answer.
"""

from __future__ import annotations

import json
import math

import numpy as np

from serving.dtypes import FLOAT32_MAX


def format_decimal(value: float, *, float32: bool = True) -> str:
    """One float as ``WriteDecimal`` writes it (see the module docstring)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(np.float32(float(text))) if float32 else float(text)
    if back != value:
        text = ("%.9g" if float32 else "%.17g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def format_decimals(array: np.ndarray, float32: bool) -> list[str]:
    """``format_decimal`` over a whole array, with the round-trip test vectorized."""
    flat = array.ravel()
    values = flat.tolist()
    texts = [f"{v:g}" for v in values]
    finite = np.isfinite(flat)
    if finite.all():
        back = np.array(texts, dtype=np.float64)
        if float32:
            back = back.astype(np.float32)
        exact = back == flat
    else:
        exact = np.zeros(flat.shape, dtype=bool)
    wide = "%.9g" if float32 else "%.17g"
    out = []
    for i, text in enumerate(texts):
        if not exact[i]:
            if not finite[i]:
                out.append(format_decimal(values[i], float32=float32))
                continue
            text = wide % values[i]
        if "." not in text and "e" not in text:
            text += ".0"
        out.append(text)
    return out


json_string = json.encoder.encode_basestring  # '"..."' with JSON escapes, non-ASCII kept (ensure_ascii=False)


class PrettyWriter:
    """rapidjson::PrettyWriter (indent 4) with its kFormatSingleLineArray option, writing raw tokens."""

    __slots__ = ("_parts", "_stack", "single_line")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._stack: list[list] = []  # [in_array, value_count]
        self.single_line = False

    def _prefix(self) -> None:
        if not self._stack:
            return
        level = self._stack[-1]
        put = self._parts.append
        if level[0]:
            if level[1] > 0:
                put(", " if self.single_line else ",")
            if not self.single_line:
                put("\n" + " " * (4 * len(self._stack)))
        else:
            if level[1] > 0:
                put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                put("\n")
            if level[1] % 2 == 0:
                put(" " * (4 * len(self._stack)))
        level[1] += 1

    def raw(self, token: str) -> None:
        self._prefix()
        self._parts.append(token)

    def leaf_array(self, tokens: list[str]) -> None:
        """An array of scalar tokens (what the element-by-element calls would write, in one go)."""
        self._prefix()
        if not tokens:
            self._parts.append("[]")
        elif self.single_line:
            self._parts.append("[" + ", ".join(tokens) + "]")
        else:
            inner = "\n" + " " * (4 * (len(self._stack) + 1))
            self._parts.append("[" + inner + ("," + inner).join(tokens) + "\n" + " " * (4 * len(self._stack)) + "]")

    def key(self, name: str) -> None:
        self.raw(json_string(name))

    def start_array(self) -> None:
        self._prefix()
        self._stack.append([True, 0])
        self._parts.append("[")

    def end_array(self) -> None:
        empty = self._stack.pop()[1] == 0
        if not empty and not self.single_line:
            self._parts.append("\n" + " " * (4 * len(self._stack)))
        self._parts.append("]")

    def start_object(self) -> None:
        self._prefix()
        self._stack.append([False, 0])
        self._parts.append("{")

    def end_object(self) -> None:
        empty = self._stack.pop()[1] == 0
        if not empty:
            self._parts.append("\n" + " " * (4 * len(self._stack)))
        self._parts.append("}")

    def value(self, obj) -> None:
        """A parsed JSON value (for error messages), written as rapidjson's Writer would."""
        if isinstance(obj, dict):
            self.start_object()
            for k, v in obj.items():
                self.key(k)
                self.value(v)
            self.end_object()
        elif isinstance(obj, list):
            self.start_array()
            for v in obj:
                self.value(v)
            self.end_array()
        elif obj is True:
            self.raw("true")
        elif obj is False:
            self.raw("false")
        elif obj is None:
            self.raw("null")
        elif isinstance(obj, str):
            self.raw(json_string(obj))
        elif isinstance(obj, int):
            self.raw(str(obj))
        else:
            self.raw(_double_token(obj))

    def text(self) -> str:
        return "".join(self._parts)


def _double_token(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return repr(value)


def json_value_to_string(value) -> str:
    """``JsonValueToString``: a parsed value pretty-printed, scalars floats via ``WriteDecimal``."""
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) <= FLOAT32_MAX and float(np.float32(value)) == value:
            return format_decimal(value, float32=True)
        return format_decimal(value, float32=False)
    writer = PrettyWriter()
    writer.value(value)
    return writer.text()


def json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def error_json(message: str) -> str:
    """The error body: ``{ "error": "<message>" }`` (JSON-escaped)."""
    return '{ "error": ' + json_string(message) + " }"
