"""What a request may ask and what it is refused for, decided before the model is called.

Covers choosing outputs (``predict`` and ``predict_proba`` together over v2, ``parameters.method``
over v1 and v2), refusing values that overflow the model's dtype instead of wrapping them or
turning them into ``inf``, refusing malformed JSON shapes with a 400, the ``any`` dtype of a
schema read from a model, binary tensor outputs, and casting outputs to the datatype metadata
announces. Pure functions of bytes and schemas; no server, no I/O.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from model_server._errors import InvalidInput
from model_server._oip import V2Request, decode_v2, encode_v2
from model_server._outputs import OutputSpec, conform, derive_outputs
from model_server._protocol import (
    Decoded,
    InputSchema,
    decode_v1,
    split_predictions,
    to_model_input,
)

F64 = InputSchema.from_manifest({"kind": "array", "shape": [None, 2], "dtype": "float64"})
F32 = InputSchema.from_manifest({"kind": "array", "shape": [None, 2], "dtype": "float32"})
I64 = InputSchema.from_manifest({"kind": "array", "shape": [None, 2], "dtype": "int64"})
FRAME = InputSchema.from_manifest(
    {
        "kind": "dataframe",
        "columns": [
            {"name": "small", "dtype": "int8"},
            {"name": "count", "dtype": "int64"},
            {"name": "ratio", "dtype": "float32"},
        ],
    }
)
LOOSE = InputSchema.from_manifest(
    {"kind": "dataframe", "columns": [{"name": "a", "dtype": "any"}, {"name": "b", "dtype": "any"}]}
)
ROW = {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}


def _v2(doc: Any, schema: InputSchema = F64) -> tuple[Decoded, V2Request]:
    return decode_v2(orjson.dumps(doc), schema, "predict")


def _refused(call: Any, *args: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value


# ---------------------------------------------------------------- outputs and methods


@pytest.mark.parametrize(
    ("extra", "methods"),
    [
        ({}, ("predict",)),
        ({"outputs": []}, ("predict",)),
        (
            {"outputs": [{"name": "predict"}, {"name": "predict_proba"}]},
            ("predict", "predict_proba"),
        ),
        (
            {"outputs": [{"name": "predict_proba"}, {"name": "predict"}]},
            ("predict_proba", "predict"),
        ),
        ({"parameters": {"method": "predict_proba"}}, ("predict_proba",)),
        (
            {"parameters": {"method": "predict_proba"}, "outputs": [{"name": "predict_proba"}]},
            ("predict_proba",),
        ),
    ],
)
def test_v2_outputs_choose_the_methods(extra: dict[str, Any], methods: tuple[str, ...]) -> None:
    decoded, _ = _v2({"inputs": [ROW], **extra})
    assert decoded.methods == methods


def test_v1_parameters_method_chooses_predict_proba() -> None:
    body = orjson.dumps({"instances": [[1, 2]], "parameters": {"method": "predict_proba"}})
    assert decode_v1(body, F64, "predict").methods == ("predict_proba",)
    assert decode_v1(b'{"instances": [[1, 2]]}', F64, "predict").methods == ("predict",)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"outputs": 5}, "outputs"),
        ({"outputs": "predict"}, "outputs"),
        ({"outputs": [5]}, "outputs"),
        ({"outputs": [{"name": "explain"}]}, "outputs"),
        ({"outputs": [{"name": "predict"}, {"name": "predict"}]}, "outputs"),
        ({"outputs": [{"name": "predict", "parameters": 3}]}, "outputs"),
        ({"outputs": [{"name": "predict_proba", "parameters": {"classification": 2}}]}, "outputs"),
        ({"outputs": [{"name": "predict", "parameters": {"binary_data": "yes"}}]}, "outputs"),
        ({"parameters": {"method": "transform"}}, "parameters.method"),
        ({"parameters": ["method"]}, "parameters"),
        ({"parameters": {"binary_data_output": 1}}, "parameters"),
        (
            {"parameters": {"method": "predict_proba"}, "outputs": [{"name": "predict"}]},
            "parameters.method",
        ),
        ({"id": 5}, "id"),
        ({"id": None}, "id"),
        ({"outputs": None}, "outputs"),
        ({"parameters": None}, "parameters"),
        ({"parameters": {"tags": ["a"]}}, "parameters"),
        ({"outputs": [{"name": "predict", "parameters": {"x": {}}}]}, "outputs"),
    ],
)
def test_v2_malformed_requests_are_400(extra: dict[str, Any], field: str) -> None:
    error = _refused(_v2, {"inputs": [ROW], **extra})
    assert error.field == field


@pytest.mark.parametrize(
    "doc",
    [
        {"instances": [[1, 2]], "parameters": {"method": "decision_function"}},
        {"instances": [[1, 2]], "parameters": "predict_proba"},
    ],
)
def test_v1_bad_parameters_are_400(doc: dict[str, Any]) -> None:
    assert _refused(decode_v1, orjson.dumps(doc), F64, "predict").field.startswith("parameters")


# ---------------------------------------------------------------- malformed tensors


@pytest.mark.parametrize(
    "tensor",
    [
        {**ROW, "data": 5},
        {**ROW, "data": {"a": 1}},
        {**ROW, "data": [[1.0], [2.0, 3.0]]},
        {**ROW, "data": [{"a": 1}, 2]},
        {**ROW, "data": [1.0, None]},
        {**ROW, "datatype": "BYTES", "data": ["a", 1]},
        {**ROW, "datatype": "INT64", "data": [1, 2.5]},
        {**ROW, "parameters": "binary"},
        {**ROW, "parameters": None},
        {**ROW, "parameters": {"note": None}},
        {**ROW, "shape": [1, -2]},
        {**ROW, "shape": [11020, 53336008, 4071481399, 0], "data": []},  # found by schemathesis
        {**ROW, "shape": [1, 2.0]},
        {**ROW, "name": 7},
    ],
)
def test_malformed_tensors_are_400(tensor: dict[str, Any]) -> None:
    _refused(_v2, {"inputs": [tensor]})


def test_negative_binary_size_is_400() -> None:
    tensor = {"name": "x", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": -8}}
    body = orjson.dumps({"inputs": [tensor]})
    tail = np.zeros(1).tobytes()
    with pytest.raises(InvalidInput, match="binary_data_size") as caught:
        decode_v2(body + tail, F64, "predict", header_length=len(body))
    assert caught.value.status == 400


# ---------------------------------------------------------------- values that do not fit


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("FP16", [70000.0, 1.0], "float16"),
        ("FP32", [1e308, 1.0], "float32"),
        ("UINT8", [300, 1], "uint8"),
        ("UINT8", [-1, 1], "uint8"),
        ("INT8", [-129, 1], "int8"),
        ("INT64", [2**63, 1], "int64"),
    ],
)
def test_tensor_values_that_overflow_their_datatype_are_400(
    datatype: str, data: list[Any], words: str
) -> None:
    tensor = {"name": "feats", "shape": [1, 2], "datatype": datatype, "data": data}
    error = _refused(_v2, {"inputs": [tensor]})
    assert error.field == "feats"
    assert words in error.message and "input 'feats'" in error.message


def test_values_that_overflow_the_models_dtype_are_400() -> None:
    big = {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1e308, 0.0]}
    error = _refused(_v2, {"inputs": [big]}, F32)
    assert error.field == "x" and "float32" in error.message
    huge = {"name": "x", "shape": [1, 2], "datatype": "UINT64", "data": [2**64 - 1, 0]}
    assert "int64" in _refused(_v2, {"inputs": [huge]}, I64).message
    v1 = _refused(decode_v1, b'{"instances": [[1e308, 0]]}', F32, "predict")
    assert v1.field == "instances" and "float32" in v1.message
    # Within range the same requests pass, cast to the model's dtype.
    ok = _v2({"inputs": [{**big, "data": [3e38, 0.0]}]}, F32)[0]
    assert ok.array is not None and ok.array.dtype == np.float32


@pytest.mark.parametrize(
    ("column", "value"),
    [("small", 300), ("small", -200), ("count", 2**63), ("ratio", 1e308), ("ratio", -1e39)],
)
def test_column_values_that_overflow_are_400_naming_the_column(column: str, value: Any) -> None:
    record = {"small": 1, "count": 2, "ratio": 0.5, column: value}
    body = orjson.dumps({"dataframe_records": [record]})
    error = _refused(decode_v1, body, FRAME, "predict")
    assert error.field == column
    assert f"column {column!r}" in error.message


def test_in_range_columns_become_the_schemas_dtypes() -> None:
    body = orjson.dumps({"dataframe_records": [{"small": -128, "count": 2**62, "ratio": 3e38}]})
    frame = to_model_input([decode_v1(body, FRAME, "predict")], FRAME)
    assert frame.dtypes.astype(str).tolist() == ["int8", "int64", "float32"]


# ---------------------------------------------------------------- schemas read from a model


def test_any_columns_take_every_value_as_sent() -> None:
    a = decode_v1(b'{"dataframe_records": [{"a": "x", "b": 1}]}', LOOSE, "predict")
    b = decode_v1(b'{"dataframe_records": [{"a": "y", "b": 2.5}]}', LOOSE, "predict")
    frame = to_model_input([a, b], LOOSE)
    assert isinstance(frame, pd.DataFrame)
    assert frame["a"].tolist() == ["x", "y"] and frame["b"].tolist() == [1.0, 2.5]
    columns = {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["z"]}
    numbers = {"name": "b", "shape": [1], "datatype": "INT32", "data": [4]}
    assert _v2({"inputs": [columns, numbers]}, LOOSE)[0].columns == {"a": ["z"], "b": [4]}
    missing = _refused(decode_v1, b'{"dataframe_records": [{"a": 1}]}', LOOSE, "predict")
    assert missing.field == "b" and "missing" in missing.message


# ---------------------------------------------------------------- outputs


def test_each_request_gets_its_own_rows_of_each_output() -> None:
    both = ("predict", "predict_proba")
    a = Decoded(rows=1, methods=both, array=np.zeros((1, 2)))
    b = Decoded(rows=2, methods=both, array=np.ones((2, 2)))
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    parts = split_predictions({"predict": np.array([0, 1, 1]), "predict_proba": proba}, [a, b])
    assert list(parts[0]) == ["predict", "predict_proba"]
    assert parts[1]["predict"].tolist() == [1, 1]
    np.testing.assert_array_equal(parts[1]["predict_proba"], proba[1:])


def test_binary_outputs_follow_the_json_header() -> None:
    labels = np.array(["no", "yes"], dtype=object)
    proba = np.array([[0.75, 0.25], [0.5, 0.5]])
    request = V2Request(binary=frozenset({"predict", "predict_proba"}))
    body, header = encode_v2({"predict": labels, "predict_proba": proba}, "m", "v1", request)
    assert header is not None
    doc = orjson.loads(body[:header])
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert all("data" not in o for o in doc["outputs"])
    raw = body[header:]
    assert raw[: sizes[0]] == struct.pack("<I", 2) + b"no" + struct.pack("<I", 3) + b"yes"
    np.testing.assert_array_equal(np.frombuffer(raw[sizes[0] :], "<f8").reshape(2, 2), proba)


def test_outputs_are_cast_to_what_metadata_announces() -> None:
    assert conform(np.array([1], np.int32), OutputSpec("predict", "INT64", (-1,))).dtype == "int64"
    assert conform(np.array([1.5], np.float32), OutputSpec("p", "FP64", (-1,))).dtype == "float64"
    # Narrowing would change values: the response keeps the model's own dtype.
    assert conform(np.array([0.1]), OutputSpec("p", "FP32", (-1,))).dtype == "float64"
    body, _ = encode_v2(
        {"predict": np.array([0, 1], np.int32)},
        "m",
        "v",
        specs={"predict": OutputSpec("predict", "INT64", (-1,))},
    )
    assert orjson.loads(body)["outputs"][0]["datatype"] == "INT64"


class _Labels:
    classes_ = np.array(["no", "yes"])

    def predict(self, X: Any) -> Any:
        return self.classes_[np.zeros(len(X), dtype=int)]

    def predict_proba(self, X: Any) -> Any:
        return np.full((len(X), 2), 0.5)


class _Values:
    def predict(self, X: Any) -> Any:
        return np.zeros(len(X))


def test_outputs_derived_from_a_model_without_a_record() -> None:
    labels = [s.metadata() for s in derive_outputs(_Labels(), "sklearn")]
    assert labels == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert derive_outputs(_Labels(), "xgboost")[1].datatype == "FP32"
    assert [s.datatype for s in derive_outputs(_Values(), "sklearn")] == ["FP64"]
    assert [s.datatype for s in derive_outputs(_Values(), "xgboost")] == ["FP32"]


def test_metadata_datatypes_of_schema_dtypes() -> None:
    from model_server._app import _v2_type

    expected = {
        "float64": "FP64",
        "float32": "FP32",
        "int8": "INT8",
        "uint16": "UINT16",
        "bool": "BOOL",
        "object": "BYTES",
        "str": "BYTES",
        "category": "BYTES",
        "any": "BYTES",  # takes every datatype; values reach the model as sent
    }
    assert {d: _v2_type(d) for d in expected} == expected
