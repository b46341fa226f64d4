"""JSON <-> tensors for the REST API, as TF Serving's ``util/json_tensor.cc`` converts them.

Request (``FillPredictRequestFromJson``): a JSON object with an optional string ``signature_name`` and
exactly one of ``instances`` (row format: a non-empty list, one element per example, objects keyed by input
name when the signature has several inputs) or ``inputs`` (columnar: one value, or an object holding every
input). Each tensor's dtype comes from the signature; a JSON value of another type is rejected with TF
Serving's message. DT_STRING values may be ``{"b64": "..."}``.

Response (``MakeJsonFromTensors``): ``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for
columnar ones; with several outputs each prediction (or the outputs value) is an object by output name.
Floats are written as ``WriteDecimal`` writes them: printf ``%g`` (six digits) when that reads back as the
same value, else ``%.9g`` for float32 / ``%.17g`` for float64, with ``.0`` added to whole numbers; NaN and
infinities as ``NaN``/``Infinity``. DT_STRING outputs are JSON strings, or ``{"b64": ...}`` when the output
name ends in ``_bytes``. The layout (indentation, single-line rows) is rapidjson's PrettyWriter's, as in TF
Serving.

Every error is a :class:`~serving.errors.StatusError` with TF Serving's code and message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from serving.errors import StatusError

ROW = "row"
COLUMNAR = "columnar"

# tensorflow/core/framework/types.proto (kept here so this module does not import TensorFlow).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT32, DT_UINT64 = 9, 10, 22, 23
_DTYPE_STRING = {  # DataTypeString()
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
_NUMPY = {
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
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT64_MAX = float(np.finfo(np.float64).max)


def dtype_string(dtype: int) -> str:
    return _DTYPE_STRING.get(dtype, f"unknown dtype enum ({dtype})")


def _invalid(*parts: object) -> StatusError:
    return StatusError("INVALID_ARGUMENT", "".join(str(p) for p in parts))


def _status_string(error: StatusError) -> str:
    """``absl::Status::ToString()``: ``INVALID_ARGUMENT: message``."""
    return f"{error.code}: {error.message}"


# --------------------------------------------------------------------------- writing JSON like rapidjson
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


def _format_decimals(array: np.ndarray, float32: bool) -> list[str]:
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


_json_string = json.encoder.encode_basestring  # '"..."' with JSON escapes, non-ASCII kept (ensure_ascii=False)


class _PrettyWriter:
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
        self.raw(_json_string(name))

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
            self.raw(_json_string(obj))
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
    writer = _PrettyWriter()
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


# --------------------------------------------------------------------------- parsing
_RAPIDJSON_MESSAGES = (  # Python's json message prefix -> rapidjson's GetParseError_En text
    ("Expecting value", "Invalid value."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
)


def _innermost_container(text: str, pos: int) -> str:
    """'{' or '[' enclosing ``pos`` (strings skipped), for rapidjson's comma messages."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "{"


def _parse_error(exc: json.JSONDecodeError, text: str) -> StatusError:
    message = exc.msg
    if message.startswith("Expecting ',' delimiter"):
        message = (
            "Missing a comma or '}' after an object member."
            if _innermost_container(text, exc.pos) == "{"
            else "Missing a comma or ']' after an array element."
        )
    else:
        for prefix, rapidjson_message in _RAPIDJSON_MESSAGES:
            if message.startswith(prefix):
                message = rapidjson_message
                break
    offset = len(text[: exc.pos].encode("utf-8"))
    return _invalid("JSON Parse error: ", message, " at offset: ", offset)


def parse_json(body: bytes | str) -> dict:
    """``ParseJson``: the request body as a JSON object, or INVALID_ARGUMENT ``JSON Parse error: ...``."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _invalid("JSON Parse error: Invalid encoding in string. at offset: ", exc.start) from None
    else:
        text = body
    if not text.strip():
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _parse_error(exc, text) from None
    except (RecursionError, ValueError) as exc:  # absurd nesting, or an int too long to convert
        raise _invalid("JSON Parse error: ", exc) from None
    if not isinstance(doc, dict):
        raise _invalid("JSON Value: ", json_value_to_string(doc), " Is not object")
    return doc


def signature_name(doc: Mapping) -> str:
    """``FillSignature``: the request's ``signature_name`` ("" when absent)."""
    if "signature_name" not in doc:
        return ""
    value = doc["signature_name"]
    if not isinstance(value, str):
        raise _invalid(
            "JSON Value: ",
            json_value_to_string(doc),
            " not formatted correctly. 'signature_name' key must be a string value.",
        )
    return value


# --------------------------------------------------------------------------- JSON values -> tensors
def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def b64decode(text: str) -> bytes:
    """``absl::Base64Unescape``: standard alphabet, padding optional."""
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise _invalid("Unable to base64 decode")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


def _type_error(value, dtype: int) -> StatusError:
    return _invalid(
        "JSON Value: ",
        json_value_to_string(value),
        " Type: ",
        json_type(value),
        " is not of expected type: ",
        dtype_string(dtype),
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lossless(value, max_int: int, max_float: float) -> bool:
    """``IsLosslessDecimal``: integers up to 2**digits - 1, other numbers within the type's range."""
    if isinstance(value, int):
        if -(2**63) <= value <= _UINT64_MAX:
            return abs(value) <= max_int
        value = float(value)
    if not math.isfinite(value):
        return True
    return -max_float <= value <= max_float


def _convert_value(value, dtype: int):
    """``AddValueToTensor``: one JSON scalar as a value of ``dtype``."""
    if dtype == DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if not _is_number(value):
            raise _type_error(value, dtype)
        single = dtype == DT_FLOAT
        if not _lossless(value, 2**24 - 1 if single else 2**53 - 1, FLOAT32_MAX if single else _FLOAT64_MAX):
            raise _invalid(
                "Cannot convert JSON value: ",
                json_value_to_string(value),
                " to ",
                "float" if single else "double",
                " without loss of precision.",
            )
        return float(value)
    if dtype in (DT_INT32, DT_INT16, DT_INT8, DT_UINT8):
        ok = isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]
    elif dtype == DT_INT64:
        ok = isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]
    elif dtype == DT_BOOL:
        ok = isinstance(value, bool)
    elif dtype == DT_UINT32:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT32_MAX
    elif dtype == DT_UINT64:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT64_MAX
    else:
        raise StatusError(
            "UNIMPLEMENTED", f"Conversion of JSON Value: {json_value_to_string(value)} to type: {dtype_string(dtype)}"
        )
    if not ok:
        raise _type_error(value, dtype)
    return value


def _dense_shape(value) -> list[int]:
    """``GetDenseTensorShape``: sizes along the first element at every nesting level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], dtype: int, out: list) -> None:
    """``FillTensorProto``: append the leaves of ``value`` to ``out``, checking it is dense."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                "JSON Value: ",
                json_value_to_string(value),
                " found at incorrect level: ",
                level + 1,
                " in the JSON DOM. Expected at level: ",
                rank,
            )
        if isinstance(value, dict):
            if dtype != DT_STRING:
                raise _type_error(value, dtype)
            if not is_b64(value):
                raise _invalid("JSON Value: ", json_value_to_string(value), " not formatted correctly for base64 data")
            out.append(b64decode(value["b64"]))
        else:
            out.append(_convert_value(value, dtype))
        return
    if level >= rank:
        raise _invalid("Encountered list at unexpected level: ", level, " expected < ", rank)
    if len(value) != shape[level]:
        raise _invalid(
            "Encountered list at unexpected size: ", len(value), " at level: ", level, " expected size: ", shape[level]
        )
    if level == rank - 1 and dtype == DT_STRING and all(type(v) is str for v in value):
        out.extend(v.encode("utf-8") for v in value)  # fast path for the common list of strings
        return
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(values: list, shape: list[int], dtype: int) -> np.ndarray:
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=_NUMPY[dtype]).reshape(shape)


def _shape_string(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class _Instances:
    """Per-input accumulation of ``AddInstanceItem`` across the elements of ``instances``."""

    def __init__(self, dtypes: Mapping[str, int]) -> None:
        self.dtypes = dtypes
        self.values: dict[str, list] = {}
        self.shapes: dict[str, list[int]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, item, name: str) -> None:
        if name not in self.dtypes:
            raise _invalid("JSON object: does not have named input: ", name)
        dtype = self.dtypes[name]
        shape = _dense_shape(item)
        leaves: list = []
        _fill(item, 0, shape, dtype, leaves)
        if name not in self.shapes:
            self.shapes[name] = shape
            self.values[name] = leaves
            self.sizes[name] = len(leaves)
            return
        if self.sizes[name] != len(leaves):
            raise _invalid("Expecting tensor size: ", self.sizes[name], " but got: ", len(leaves))
        if self.shapes[name] != shape:
            raise _invalid("Expecting shape ", _shape_string(self.shapes[name]), " but got: ", _shape_string(shape))
        self.values[name].extend(leaves)

    def tensors(self, count: int) -> dict[str, np.ndarray]:
        return {
            name: _to_array(self.values[name], [count] + self.shapes[name], self.dtypes[name]) for name in self.values
        }


def _from_instances(doc: Mapping, instances, dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """``FillTensorMapFromInstancesList``."""
    if not isinstance(instances, list):
        raise _invalid("JSON Value: ", json_value_to_string(doc), " Excepting 'instances' to be an list/array")
    if not instances:
        raise _invalid("JSON Value: ", json_value_to_string(doc), " No values in 'instances' array")
    names = sorted(dtypes)
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_element_object(value) -> bool:
        return isinstance(value, dict) and not is_b64(value)

    objects = is_element_object(instances[0])
    acc = _Instances(dtypes)
    for index, element in enumerate(instances):
        if objects:
            if not is_element_object(element):
                raise _invalid("Expecting object but got list at item ", index, " of input list")
            for name, item in element.items():
                try:
                    acc.add(item, name)
                except StatusError as exc:
                    raise _invalid(
                        "Failed to process element: ",
                        index,
                        " key: ",
                        name,
                        " of 'instances' list. Error: ",
                        _status_string(exc),
                    ) from None
            if set(element) != set(names):
                raise _invalid(
                    "Failed to process element: ",
                    index,
                    " of 'instances' list. JSON object: ",
                    json_value_to_string(element),
                    " must only have keys: ",
                    ",".join(names),
                )
        else:
            if is_element_object(element):
                raise _invalid("Expecting value/list but got object at item ", index, " of input list")
            try:
                acc.add(element, names[0])
            except StatusError as exc:
                raise _invalid(
                    "Failed to process element: ", index, " of 'instances' list. Error: ", _status_string(exc)
                ) from None
    return acc.tensors(len(instances))


def _column(value, dtype: int) -> np.ndarray:
    shape = _dense_shape(value)
    leaves: list = []
    _fill(value, 0, shape, dtype, leaves)
    return _to_array(leaves, shape, dtype)


def _from_inputs(value, dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """``FillTensorMapFromInputsMap``."""
    names = sorted(dtypes)
    if not isinstance(value, dict) or is_b64(value):
        if len(dtypes) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: _column(value, dtypes[names[0]])}
    tensors = {}
    for name in names:
        if name not in value:
            raise _invalid("Missing named input: ", name, " in 'inputs' object.")
        tensors[name] = _column(value[name], dtypes[name])
    return tensors


@dataclass(frozen=True)
class PredictRequest:
    """A parsed ``:predict`` body: the signature asked for, tensors by input name, and the request format."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    format: str  # ROW or COLUMNAR


def predict_request_from_json(doc: Mapping, input_dtypes: Callable[[str], Mapping[str, int]]) -> PredictRequest:
    """``FillPredictRequestFromJson``: ``input_dtypes(signature_name)`` gives the signature's input dtypes."""
    name = signature_name(doc)
    dtypes = input_dtypes(name)
    if not dtypes:
        raise _invalid("Failed to get input map for signature: ", name or "DEFAULT")
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise _invalid(
            "JSON Value: ",
            json_value_to_string(doc),
            " Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        return PredictRequest(name, _from_instances(doc, doc["instances"], dtypes), ROW)
    if has_inputs:
        return PredictRequest(name, _from_inputs(doc["inputs"], dtypes), COLUMNAR)
    raise _invalid("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------- tensors -> JSON
def _tokens(name: str, array: np.ndarray) -> list[str]:
    """Every value of ``array`` (row-major) as a JSON token, per ``AddSingleValueAndAdvance``."""
    kind = array.dtype.kind
    if kind in ("O", "S", "U"):
        values = array.ravel().tolist()
        if not all(type(v) is bytes for v in values):
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
            if not all(isinstance(v, bytes) for v in values):
                raise _invalid("Failed to write JSON value for tensor type: ", array.dtype)
        if name.endswith("_bytes"):
            return ['{"b64": "' + base64.b64encode(v).decode("ascii") + '"}' for v in values]
        return [_json_string(v.decode("utf-8", errors="replace")) for v in values]
    if array.dtype == np.float32:
        return _format_decimals(array, True)
    if array.dtype == np.float64:
        return _format_decimals(array, False)
    if kind == "b":
        return ["true" if v else "false" for v in array.ravel().tolist()]
    if kind in ("i", "u") and array.dtype.itemsize <= 8:
        return [str(v) for v in array.ravel().tolist()]
    raise _invalid("Failed to write JSON value for tensor type: ", array.dtype)


def _write_tensor(writer: _PrettyWriter, tokens: list[str], shape: tuple[int, ...], dim: int, offset: int) -> int:
    """``AddTensorValues``: nested arrays from dimension ``dim`` on; returns the next offset."""
    if dim > len(shape) - 1:
        writer.raw(tokens[offset])
        return offset + 1
    if dim == len(shape) - 1:
        writer.leaf_array(tokens[offset : offset + shape[dim]])
        return offset + shape[dim]
    writer.start_array()
    for _ in range(shape[dim]):
        offset = _write_tensor(writer, tokens, shape, dim + 1, offset)
    writer.end_array()
    return offset


def predict_response_json(outputs: Mapping[str, np.ndarray], request_format: str) -> str:
    """``MakeJsonFromTensors``: the response body for the request's format."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {n: np.asarray(outputs[n]) for n in names}
    writer = _PrettyWriter()
    writer.start_object()
    several = len(names) > 1
    if request_format == ROW:
        batch = 0
        for name in names:
            shape = arrays[name].shape
            if not shape:
                raise _invalid("Tensor name: ", name, " has no shape information ")
            if shape[0] < 1:
                raise _invalid("Tensor name: ", name, " has invalid batch size: ", shape[0])
            if batch and batch != shape[0]:
                raise _invalid("Tensor name: ", name, " has inconsistent batch size: ", shape[0], " expecting: ", batch)
            batch = shape[0]
        tokens = {n: _tokens(n, arrays[n]) for n in names}
        offsets = dict.fromkeys(names, 0)
        writer.key("predictions")
        writer.start_array()
        for _ in range(batch):
            if several:
                writer.start_object()
            writer.single_line = True
            for name in names:
                if several:
                    writer.key(name)
                offsets[name] = _write_tensor(writer, tokens[name], arrays[name].shape, 1, offsets[name])
            writer.single_line = False
            if several:
                writer.end_object()
        writer.end_array()
    elif request_format == COLUMNAR:
        writer.key("outputs")
        if several:
            writer.start_object()
        for name in names:
            if several:
                writer.key(name)
            _write_tensor(writer, _tokens(name, arrays[name]), arrays[name].shape, 0, 0)
        if several:
            writer.end_object()
    else:
        raise _invalid("Invalid request format")
    writer.end_object()
    return writer.text()


def error_json(message: str) -> str:
    """The error body: ``{ "error": "<message>" }`` (JSON-escaped)."""
    return '{ "error": ' + _json_string(message) + " }"
