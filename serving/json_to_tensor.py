"""JSON request bodies to tensors, as TF Serving's ``util/json_tensor.cc`` reads them.

:func:`parse_json` is ``ParseJson`` (Python's parser, its errors translated to rapidjson's
``GetParseError_En`` wording and byte offsets). :func:`predict_request_from_json` is
``FillPredictRequestFromJson``: a JSON object with an optional string ``signature_name`` and exactly one of
``instances`` (row format: a non-empty list, one element per example, objects keyed by input name when the
signature has several inputs) or ``inputs`` (columnar: one value, or an object holding every input). Each
tensor's dtype comes from the signature; a JSON value of another type is rejected with TF Serving's
message. DT_STRING values may be ``{"b64": "..."}``.

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

from serving.dtypes import (
    DT_BOOL,
    DT_DOUBLE,
    DT_FLOAT,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_STRING,
    DT_UINT8,
    DT_UINT32,
    DT_UINT64,
    FLOAT32_MAX,
    FLOAT64_MAX,
    INT32_RANGE,
    INT64_RANGE,
    NUMPY,
    UINT32_MAX,
    UINT64_MAX,
    dtype_string,
    format_shape,
)
from serving.errors import StatusError, invalid_argument
from serving.json_writer import json_type, json_value_to_string

ROW = "row"
COLUMNAR = "columnar"


def _status_string(error: StatusError) -> str:
    """``absl::Status::ToString()``: ``INVALID_ARGUMENT: message``."""
    return f"{error.code}: {error.message}"


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
    return invalid_argument("JSON Parse error: ", message, " at offset: ", offset)


def parse_json(body: bytes | str) -> dict:
    """``ParseJson``: the request body as a JSON object, or INVALID_ARGUMENT ``JSON Parse error: ...``."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid_argument("JSON Parse error: Invalid encoding in string. at offset: ", exc.start) from None
    else:
        text = body
    if not text.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _parse_error(exc, text) from None
    except (RecursionError, ValueError) as exc:  # absurd nesting, or an int too long to convert
        raise invalid_argument("JSON Parse error: ", exc) from None
    if not isinstance(doc, dict):
        raise invalid_argument("JSON Value: ", json_value_to_string(doc), " Is not object")
    return doc


def signature_name(doc: Mapping) -> str:
    """``FillSignature``: the request's ``signature_name`` ("" when absent)."""
    if "signature_name" not in doc:
        return ""
    value = doc["signature_name"]
    if not isinstance(value, str):
        raise invalid_argument(
            "JSON Value: ",
            json_value_to_string(doc),
            " not formatted correctly. 'signature_name' key must be a string value.",
        )
    return value


def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def b64decode(text: str) -> bytes:
    """``absl::Base64Unescape``: standard alphabet, padding optional."""
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise invalid_argument("Unable to base64 decode")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _type_error(value, dtype: int) -> StatusError:
    return invalid_argument(
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
        if -(2**63) <= value <= UINT64_MAX:
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
        if not _lossless(value, 2**24 - 1 if single else 2**53 - 1, FLOAT32_MAX if single else FLOAT64_MAX):
            raise invalid_argument(
                "Cannot convert JSON value: ",
                json_value_to_string(value),
                " to ",
                "float" if single else "double",
                " without loss of precision.",
            )
        return float(value)
    if dtype in (DT_INT32, DT_INT16, DT_INT8, DT_UINT8):
        ok = isinstance(value, int) and not isinstance(value, bool) and INT32_RANGE[0] <= value <= INT32_RANGE[1]
    elif dtype == DT_INT64:
        ok = isinstance(value, int) and not isinstance(value, bool) and INT64_RANGE[0] <= value <= INT64_RANGE[1]
    elif dtype == DT_BOOL:
        ok = isinstance(value, bool)
    elif dtype == DT_UINT32:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT32_MAX
    elif dtype == DT_UINT64:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT64_MAX
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
            raise invalid_argument(
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
                raise invalid_argument(
                    "JSON Value: ", json_value_to_string(value), " not formatted correctly for base64 data"
                )
            out.append(b64decode(value["b64"]))
        else:
            out.append(_convert_value(value, dtype))
        return
    if level >= rank:
        raise invalid_argument("Encountered list at unexpected level: ", level, " expected < ", rank)
    if len(value) != shape[level]:
        raise invalid_argument(
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
    return np.array(values, dtype=NUMPY[dtype]).reshape(shape)


class _Instances:
    """Per-input accumulation of ``AddInstanceItem`` across the elements of ``instances``."""

    def __init__(self, dtypes: Mapping[str, int]) -> None:
        self.dtypes = dtypes
        self.values: dict[str, list] = {}
        self.shapes: dict[str, list[int]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, item, name: str) -> None:
        if name not in self.dtypes:
            raise invalid_argument("JSON object: does not have named input: ", name)
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
            raise invalid_argument("Expecting tensor size: ", self.sizes[name], " but got: ", len(leaves))
        if self.shapes[name] != shape:
            raise invalid_argument(
                "Expecting shape ", format_shape(self.shapes[name]), " but got: ", format_shape(shape)
            )
        self.values[name].extend(leaves)

    def tensors(self, count: int) -> dict[str, np.ndarray]:
        return {
            name: _to_array(self.values[name], [count] + self.shapes[name], self.dtypes[name]) for name in self.values
        }


def _from_instances(doc: Mapping, instances, dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """``FillTensorMapFromInstancesList``."""
    if not isinstance(instances, list):
        raise invalid_argument("JSON Value: ", json_value_to_string(doc), " Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("JSON Value: ", json_value_to_string(doc), " No values in 'instances' array")
    names = sorted(dtypes)
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise invalid_argument(
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
                raise invalid_argument("Expecting object but got list at item ", index, " of input list")
            for name, item in element.items():
                try:
                    acc.add(item, name)
                except StatusError as exc:
                    raise invalid_argument(
                        "Failed to process element: ",
                        index,
                        " key: ",
                        name,
                        " of 'instances' list. Error: ",
                        _status_string(exc),
                    ) from None
            if set(element) != set(names):
                raise invalid_argument(
                    "Failed to process element: ",
                    index,
                    " of 'instances' list. JSON object: ",
                    json_value_to_string(element),
                    " must only have keys: ",
                    ",".join(names),
                )
        else:
            if is_element_object(element):
                raise invalid_argument("Expecting value/list but got object at item ", index, " of input list")
            try:
                acc.add(element, names[0])
            except StatusError as exc:
                raise invalid_argument(
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
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: _column(value, dtypes[names[0]])}
    tensors = {}
    for name in names:
        if name not in value:
            raise invalid_argument("Missing named input: ", name, " in 'inputs' object.")
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
        raise invalid_argument("Failed to get input map for signature: ", name or "DEFAULT")
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            "JSON Value: ",
            json_value_to_string(doc),
            " Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        return PredictRequest(name, _from_instances(doc, doc["instances"], dtypes), ROW)
    if has_inputs:
        return PredictRequest(name, _from_inputs(doc["inputs"], dtypes), COLUMNAR)
    raise invalid_argument("Missing 'inputs' or 'instances' key")
