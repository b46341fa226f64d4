"""Tensors to the JSON of a ``:predict`` answer, as TF Serving's ``util/json_tensor.cc`` writes them.

``MakeJsonFromTensors``: ``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for columnar ones;
with several outputs each prediction (or the outputs value) is an object by output name, sorted by name.
DT_STRING outputs are JSON strings, or ``{"b64": ...}`` when the output name ends in ``_bytes``; floats and
the layout are :mod:`serving.json_writer`'s (rapidjson's, as in TF Serving).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import numpy as np

from serving.dtypes import is_string
from serving.errors import invalid_argument
from serving.json_to_tensor import COLUMNAR, ROW
from serving.json_writer import PrettyWriter, format_decimals, json_string


def _tokens(name: str, array: np.ndarray) -> list[str]:
    """Every value of ``array`` (row-major) as a JSON token, per ``AddSingleValueAndAdvance``."""
    kind = array.dtype.kind
    if is_string(array):
        values = array.ravel().tolist()
        if not all(type(v) is bytes for v in values):
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
            if not all(isinstance(v, bytes) for v in values):
                raise invalid_argument("Failed to write JSON value for tensor type: ", array.dtype)
        if name.endswith("_bytes"):
            return ['{"b64": "' + base64.b64encode(v).decode("ascii") + '"}' for v in values]
        return [json_string(v.decode("utf-8", errors="replace")) for v in values]
    if array.dtype == np.float32:
        return format_decimals(array, True)
    if array.dtype == np.float64:
        return format_decimals(array, False)
    if kind == "b":
        return ["true" if v else "false" for v in array.ravel().tolist()]
    if kind in ("i", "u") and array.dtype.itemsize <= 8:
        return [str(v) for v in array.ravel().tolist()]
    raise invalid_argument("Failed to write JSON value for tensor type: ", array.dtype)


def _write_tensor(writer: PrettyWriter, tokens: list[str], shape: tuple[int, ...], dim: int, offset: int) -> int:
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
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {n: np.asarray(outputs[n]) for n in names}
    writer = PrettyWriter()
    writer.start_object()
    several = len(names) > 1
    if request_format == ROW:
        batch = 0
        for name in names:
            shape = arrays[name].shape
            if not shape:
                raise invalid_argument("Tensor name: ", name, " has no shape information ")
            if shape[0] < 1:
                raise invalid_argument("Tensor name: ", name, " has invalid batch size: ", shape[0])
            if batch and batch != shape[0]:
                raise invalid_argument(
                    "Tensor name: ", name, " has inconsistent batch size: ", shape[0], " expecting: ", batch
                )
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
        raise invalid_argument("Invalid request format")
    writer.end_object()
    return writer.text()
