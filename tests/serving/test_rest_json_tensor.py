"""serving.json_to_tensor, tensor_to_json and json_writer against the cases of TF Serving's
util/json_tensor_test.cc and of its REST API guide
(https://github.com/tensorflow/serving/blob/master/tensorflow_serving/g3doc/api_rest.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from serving import json_to_tensor, json_writer, tensor_to_json
from serving.errors import StatusError

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64, DT_BOOL, DT_UINT8, DT_COMPLEX64 = 1, 2, 3, 7, 9, 10, 4, 8


def request(body: str, dtypes: dict[str, int]) -> json_to_tensor.PredictRequest:
    return json_to_tensor.predict_request_from_json(json_to_tensor.parse_json(body.encode()), lambda name: dtypes)


def error_of(body: str, dtypes: dict[str, int]) -> StatusError:
    with pytest.raises(StatusError) as info:
        request(body, dtypes)
    return info.value


# --------------------------------------------------------------------------- request: row format
def test_row_single_unnamed_int_tensor_is_batched_along_instances():
    req = request('{"instances": [[1,2],[3,4],[5,6]]}', {"default": DT_INT32})
    assert req.format == json_to_tensor.ROW
    assert req.inputs["default"].dtype == np.int32
    np.testing.assert_array_equal(req.inputs["default"], [[1, 2], [3, 4], [5, 6]])


def test_row_mixed_ints_and_decimals_feed_a_float_tensor():
    req = request('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', {"default": DT_FLOAT})
    np.testing.assert_array_equal(req.inputs["default"], np.array([1, 2, 3, 4, 5.003, 0.007, 0], dtype=np.float32))
    assert req.inputs["default"].dtype == np.float32


def test_signature_name_is_read_from_the_body():
    req = request('{"signature_name": "predict_images", "instances": [[1,2]]}', {"default": DT_INT32})
    assert req.signature_name == "predict_images"
    assert req.inputs["default"].shape == (1, 2)


def test_b64_scalars_and_lists_decode_to_bytes():
    scalars = request('{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', {"default": DT_STRING})
    assert scalars.inputs["default"].tolist() == [b"hello", b"world"]
    lists = request('{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}', {"default": DT_STRING})
    assert lists.inputs["default"].shape == (2, 1)
    assert lists.inputs["default"].ravel().tolist() == [b"hello", b"world"]


def test_b64_keeps_arbitrary_bytes():
    req = request('{"instances": [{"b64": "AP8Q"}]}', {"x": DT_STRING})
    assert req.inputs["x"].tolist() == [b"\x00\xff\x10"]


def test_row_multiple_named_tensors_with_nan_and_infinity():
    req = request(
        """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN],
         "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity],
         "dbl_tensor": [2.0]}]}""",
        {"int_tensor": DT_INT32, "str_tensor": DT_STRING, "float_tensor": DT_FLOAT, "dbl_tensor": DT_DOUBLE},
    )
    assert req.inputs["int_tensor"].shape == (2, 3, 2)
    assert req.inputs["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    floats = req.inputs["float_tensor"]
    assert floats.dtype == np.float32 and floats[0, 0] == 1.0 and math.isnan(floats[0, 1]) and math.isinf(floats[1, 1])
    assert req.inputs["dbl_tensor"].dtype == np.float64 and req.inputs["dbl_tensor"].shape == (2, 1)


# --------------------------------------------------------------------------- request: columnar format
def test_columnar_named_and_unnamed_inputs():
    named = request('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', {"int_tensor": DT_INT32})
    unnamed = request('{"inputs": [[[1,2],[3,4],[5,6]]]}', {"int_tensor": DT_INT32})
    assert named.format == unnamed.format == json_to_tensor.COLUMNAR
    for req in (named, unnamed):
        np.testing.assert_array_equal(req.inputs["int_tensor"], [[[1, 2], [3, 4], [5, 6]]])


def test_columnar_several_inputs_b64_scalar_and_extra_keys_ignored():
    req = request(
        '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"], '
        '"bin_tensor": {"b64": "aGVsbG8="}, "unused": 1}}',
        {"int_tensor": DT_INT32, "str_tensor": DT_STRING, "bin_tensor": DT_STRING},
    )
    assert set(req.inputs) == {"int_tensor", "str_tensor", "bin_tensor"}
    assert req.inputs["bin_tensor"].shape == ()
    assert req.inputs["bin_tensor"].item() == b"hello"


def test_columnar_missing_input_is_named():
    err = error_of('{"inputs": {"user_id": ["1"]}}', {"user_id": DT_STRING, "exclude_titles": DT_STRING})
    assert err.code == "INVALID_ARGUMENT"
    assert err.message == "Missing named input: exclude_titles in 'inputs' object."


def test_columnar_plain_value_needs_a_single_input_signature():
    err = error_of('{"inputs": ["1"]}', {"a": DT_STRING, "b": DT_STRING})
    assert err.message == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map"
    )


# --------------------------------------------------------------------------- request errors
def test_empty_body_is_a_parse_error():
    with pytest.raises(StatusError) as info:
        json_to_tensor.parse_json(b"")
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.message == "JSON Parse error: The document is empty"


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"instances": [1,]}', "Invalid value."),
        ('{"instances" [1]}', "Missing a colon after a name of object member."),
        ('{"instances": [1 2]}', "Missing a comma or ']' after an array element."),
        ('{"a": 1 "b": 2}', "Missing a comma or '}' after an object member."),
        ('{"a": 1} x', "The document root must not be followed by other values."),
        ('{"a": "x', "Missing a closing quotation mark in string."),
    ],
)
def test_parse_errors_use_rapidjson_messages(body, message):
    with pytest.raises(StatusError) as info:
        json_to_tensor.parse_json(body.encode())
    assert info.value.message.startswith(f"JSON Parse error: {message} at offset: ")


def test_top_level_must_be_an_object():
    with pytest.raises(StatusError) as info:
        json_to_tensor.parse_json(b"[1, 2]")
    assert info.value.message == "JSON Value: [\n    1,\n    2\n] Is not object"


def test_signature_name_must_be_a_string():
    err = error_of('{"signature_name": 5, "instances": [[1,2]]}', {"default": DT_INT32})
    assert "not formatted correctly. 'signature_name' key must be a string value." in err.message


def test_both_instances_and_inputs_is_rejected():
    err = error_of('{"instances": [1], "inputs": [1]}', {"default": DT_INT32})
    assert err.message.endswith(" Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")


def test_neither_instances_nor_inputs_is_rejected():
    assert error_of('{"signature_name": "x"}', {"default": DT_INT32}).message == "Missing 'inputs' or 'instances' key"


def test_empty_instances_has_tf_serving_message():
    err = error_of('{"instances": []}', {"user_id": DT_STRING})
    assert err.message == "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"


def test_instances_must_be_a_list():
    err = error_of('{"instances": "1"}', {"user_id": DT_STRING})
    assert err.message.endswith(" Excepting 'instances' to be an list/array")


def test_ragged_instances_size_and_shape_errors():
    size = error_of('{"instances": [[1,2],[3,4],[5,6,7]]}', {"default": DT_INT32})
    assert size.message == (
        "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"
    )
    shape = error_of('{"instances": [[1,2],[3,4],[[5,6]]]}', {"default": DT_INT32})
    assert shape.message.endswith("Expecting shape [2] but got: [1,2]")
    ragged_inside = error_of('{"inputs": [[1,2],[3]]}', {"default": DT_INT32})
    assert ragged_inside.message == "Encountered list at unexpected size: 1 at level: 1 expected size: 2"


def test_wrong_json_type_for_the_signature_dtype():
    err = error_of('{"instances": [[1,2],["a", "b"]]}', {"default": DT_INT32})
    assert err.message == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: int32'
    )
    number_for_string = error_of('{"instances": [42]}', {"user_id": DT_STRING})
    assert number_for_string.message.endswith("JSON Value: 42 Type: Number is not of expected type: string")
    decimal_for_int = error_of('{"inputs": [1.5]}', {"x": DT_INT64})
    assert decimal_for_int.message == "JSON Value: 1.5 Type: Number is not of expected type: int64"
    object_for_float = error_of('{"inputs": [{"b64": "AA=="}]}', {"x": DT_FLOAT})
    assert "Type: Object is not of expected type: float" in object_for_float.message


@pytest.mark.parametrize(
    "value, dtype", [(1.7976931348623157e308, DT_FLOAT), (16777217, DT_FLOAT), (9007199254740993, DT_DOUBLE)]
)
def test_lossy_decimals_are_rejected(value, dtype):
    err = error_of(f'{{"instances": [{value!r}]}}', {"default": dtype})
    assert "without loss of precision." in err.message


def test_mixing_objects_and_lists_in_instances_is_rejected():
    err = error_of(
        '{"instances": [{"int_tensor": [1], "str_tensor": ["a"]}, [1, 20, 30]]}',
        {"int_tensor": DT_INT32, "str_tensor": DT_STRING},
    )
    assert err.message == "Expecting object but got list at item 1 of input list"
    err = error_of('{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}', {"str_tensor": DT_STRING})
    assert err.message == "Expecting value/list but got object at item 1 of input list"


def test_unknown_and_missing_names_in_instance_objects():
    unknown = error_of('{"instances": [{"userid": "1"}]}', {"user_id": DT_STRING})
    assert unknown.message == (
        "Failed to process element: 0 key: userid of 'instances' list. Error: "
        "INVALID_ARGUMENT: JSON object: does not have named input: userid"
    )
    missing = error_of('{"instances": [{"user_id": "1"}]}', {"user_id": DT_STRING, "exclude_titles": DT_STRING})
    assert missing.message.startswith("Failed to process element: 0 of 'instances' list. JSON object: ")
    assert missing.message.endswith(" must only have keys: exclude_titles,user_id")


def test_plain_instances_need_a_single_input_signature():
    err = error_of('{"instances": ["1"]}', {"a": DT_STRING, "b": DT_STRING})
    assert err.message.startswith("instances is a plain list, but expecting list of objects")


def test_bad_base64_is_rejected():
    err = error_of('{"inputs": {"b64": "%%%"}}', {"x": DT_STRING})
    assert err.message == "Unable to base64 decode"
    err = error_of('{"inputs": [{"b64": "AA==", "x": 1}]}', {"x": DT_STRING})
    assert err.message.endswith(" not formatted correctly for base64 data")


def test_unsupported_dtype_is_unimplemented():
    err = error_of('{"inputs": [1]}', {"x": DT_COMPLEX64})
    assert err.code == "UNIMPLEMENTED"
    assert err.message == "Conversion of JSON Value: 1 to type: complex64"


def test_empty_signature_inputs_are_rejected():
    err = error_of('{"instances": [1]}', {})
    assert err.message == "Failed to get input map for signature: DEFAULT"


# --------------------------------------------------------------------------- response
def test_row_response_layout_matches_rapidjson_pretty_writer():
    tensor = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], dtype=np.int32)
    text = tensor_to_json.predict_response_json({"int_tensor": tensor}, json_to_tensor.ROW)
    assert text == '{\n    "predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]\n    ]\n}'
    assert json.loads(tensor_to_json.predict_response_json({"int_tensor": tensor}, json_to_tensor.COLUMNAR)) == {
        "outputs": tensor.tolist()
    }


def test_single_output_vector_is_a_flat_list_of_predictions():
    tensor = np.array([1, 2, 3, 4, 5], dtype=np.int32)
    assert json.loads(tensor_to_json.predict_response_json({"t": tensor}, json_to_tensor.ROW)) == {
        "predictions": [1, 2, 3, 4, 5]
    }
    assert json.loads(tensor_to_json.predict_response_json({"t": tensor}, json_to_tensor.COLUMNAR)) == {
        "outputs": [1, 2, 3, 4, 5]
    }


def test_bytes_outputs_are_base64_objects_and_strings_are_plain():
    strings = np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object)
    as_bytes = json.loads(tensor_to_json.predict_response_json({"str_tensor_bytes": strings}, json_to_tensor.ROW))
    assert as_bytes == {
        "predictions": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]
    }
    plain = json.loads(tensor_to_json.predict_response_json({"str_tensor": strings}, json_to_tensor.ROW))
    assert plain == {"predictions": [["hello", "world"], ["tf", "serving"]]}


def test_float32_six_digit_precision_as_tf_serving_prints_it():
    tensor = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], dtype=np.float32)
    text = tensor_to_json.predict_response_json({"float_tensor": tensor}, json_to_tensor.ROW)
    assert "[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]" in text


def test_non_finite_floats():
    tensor = np.array([[np.nan, np.inf], [3, -np.inf]], dtype=np.float32)
    text = tensor_to_json.predict_response_json({"float_tensor": tensor}, json_to_tensor.ROW)
    assert "[NaN, Infinity], [3.0, -Infinity]" in text


def test_float32_values_that_need_more_than_six_digits_round_trip():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(2000).astype(np.float32) * 1000
    tokens = tensor_to_json.predict_response_json({"x": values}, json_to_tensor.COLUMNAR)
    parsed = np.array(json.loads(tokens)["outputs"], dtype=np.float32)
    np.testing.assert_array_equal(parsed, values)
    assert json_writer.format_decimal(float(np.float32(3.14159265))) == "3.14159274"  # %.9g
    assert json_writer.format_decimal(0.1, float32=False) == "0.1"
    assert json_writer.format_decimal(0.30000000000000004, float32=False) == "0.30000000000000004"


def test_multiple_outputs_row_and_columnar():
    outputs = {
        "double_scalar_tensor": np.array([8.0, 9.0]),
        "float_tensor": np.array([[1.0], [2.0]], dtype=np.float32),
        "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], dtype=np.int32),
        "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
        "str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object),
    }
    row = json.loads(tensor_to_json.predict_response_json(outputs, json_to_tensor.ROW))
    assert row == {
        "predictions": [
            {
                "double_scalar_tensor": 8.0,
                "float_tensor": [1.0],
                "int_tensor": [[1, 2], [3, 4], [5, 6]],
                "str_tensor": ["foo", "bar"],
                "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            },
            {
                "double_scalar_tensor": 9.0,
                "float_tensor": [2.0],
                "int_tensor": [[7, 8], [9, 0], [1, 2]],
                "str_tensor": ["baz", "bat"],
                "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            },
        ]
    }
    columnar = json.loads(tensor_to_json.predict_response_json(outputs, json_to_tensor.COLUMNAR))
    assert columnar["outputs"]["double_scalar_tensor"] == [8.0, 9.0]
    assert columnar["outputs"]["str_tensor_bytes"] == [
        [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
        [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
    ]


def test_bools_and_int64_outputs():
    out = json.loads(
        tensor_to_json.predict_response_json(
            {"b": np.array([True, False]), "l": np.array([2**40, -1])}, json_to_tensor.ROW
        )
    )
    assert out == {"predictions": [{"b": True, "l": 2**40}, {"b": False, "l": -1}]}


def test_response_errors():
    with pytest.raises(StatusError, match="Cannot convert empty tensor map to JSON"):
        tensor_to_json.predict_response_json({}, json_to_tensor.ROW)
    with pytest.raises(StatusError, match="tensor type: complex64"):
        tensor_to_json.predict_response_json({"t": np.array([1 + 2j], dtype=np.complex64)}, json_to_tensor.ROW)
    with pytest.raises(StatusError, match="has no shape information"):
        tensor_to_json.predict_response_json({"t": np.array(1, dtype=np.int32)}, json_to_tensor.ROW)
    with pytest.raises(StatusError, match="inconsistent batch size: 1 expecting: 2"):
        tensor_to_json.predict_response_json(
            {"int_tensor": np.zeros((2, 3)), "str_tensor": np.zeros((1, 3))}, json_to_tensor.ROW
        )


def test_error_json_is_valid_json_with_one_key():
    body = json_writer.error_json('bad "thing"\nhere')
    assert json.loads(body) == {"error": 'bad "thing"\nhere'}
    assert body.startswith('{ "error": ')
