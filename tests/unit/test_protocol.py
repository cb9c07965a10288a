"""Wire protocol decoding and encoding: v1, dataframe forms, OIP v2 (JSON and binary), merging.

Pure functions of bytes and schemas; no server, no I/O.
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
from model_server._protocol import (
    Decoded,
    InputSchema,
    decode_v1,
    encode_v1,
    split_predictions,
    to_model_input,
)

ARRAY = InputSchema.from_manifest({"kind": "array", "shape": [None, 3], "dtype": "float64"})
FRAME = InputSchema.from_manifest(
    {
        "kind": "dataframe",
        "columns": [
            {"name": "age", "dtype": "int64"},
            {"name": "income", "dtype": "float64"},
            {"name": "plan", "dtype": "str"},
        ],
    }
)
NONE = InputSchema.from_manifest(None)


def _v1(doc: Any, schema: InputSchema = ARRAY) -> Decoded:
    return decode_v1(orjson.dumps(doc), schema, "predict")


def _v2(
    doc: Any, schema: InputSchema = ARRAY, header: int | None = None, tail: bytes = b""
) -> Decoded:
    body = orjson.dumps(doc)
    return decode_v2(body + tail, schema, "predict", header_length=len(body) if header else None)[0]


def test_v1_instances_array() -> None:
    decoded = _v1({"instances": [[1, 2, 3], [4, 5, 6]]})
    assert decoded.rows == 2
    assert decoded.array is not None
    assert decoded.array.dtype == np.float64
    np.testing.assert_array_equal(decoded.array, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "doc",
    [
        {"instances": [[30, 1.5, "pro"]]},
        {"inputs": [{"age": 30, "income": 1.5, "plan": "pro"}]},
        {"dataframe_split": {"columns": ["age", "income", "plan"], "data": [[30, 1.5, "pro"]]}},
        {"dataframe_split": {"data": [[30, 1.5, "pro"]]}},
        {"dataframe_records": [{"plan": "pro", "income": 1.5, "age": 30}]},
    ],
)
def test_v1_dataframe_forms_agree(doc: dict[str, Any]) -> None:
    decoded = _v1(doc, FRAME)
    assert decoded.columns == {"age": [30], "income": [1.5], "plan": ["pro"]}
    assert list(decoded.columns) == ["age", "income", "plan"]  # schema order


@pytest.mark.parametrize(
    ("doc", "schema", "field", "status"),
    [
        (b"[1,", ARRAY, "body", 400),
        ([1, 2], ARRAY, "body", 400),
        ({"instances": "x"}, ARRAY, "instances", 400),
        ({"instances": [[1, 2]]}, ARRAY, "instances", 400),
        ({"instances": [[1, None, 3]]}, ARRAY, "instances", 400),
        ({"instances": [[1, 2, 3], [1, 2]]}, ARRAY, "instances", 400),
        ({"instances": [{"a": 1}]}, ARRAY, "instances", 400),
        ({"instances": [[30, 1.5]]}, FRAME, "instances", 400),
        ({"dataframe_records": [{"age": 1, "income": 2.0}]}, FRAME, "plan", 400),
        ({"dataframe_records": [{"age": True, "income": 2.0, "plan": "a"}]}, FRAME, "age", 400),
        (
            {"dataframe_records": [{"age": 1, "income": 2.0, "plan": "a"}, {"age": 1}]},
            FRAME,
            "income",
            400,
        ),
        (
            {"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}},
            FRAME,
            "dataframe_split.data",
            400,
        ),
        ({"dataframe_records": [{"x": "a"}]}, NONE, None, None),
    ],
)
def test_v1_refusals_name_the_field(
    doc: Any, schema: InputSchema, field: str | None, status: int | None
) -> None:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    if field is None:
        assert decode_v1(body, schema, "predict").rows == 1  # no schema: anything goes
        return
    with pytest.raises(InvalidInput) as caught:
        decode_v1(body, schema, "predict")
    assert caught.value.field == field
    assert caught.value.status == status


def test_v2_json_array_and_requested_output() -> None:
    doc = {
        "id": "a",
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    decoded, request = decode_v2(orjson.dumps(doc), ARRAY, "predict")
    assert request == V2Request(request_id="a")
    assert decoded.methods == ("predict_proba",)
    assert decoded.array is not None and decoded.array.dtype == np.float64
    assert decoded.array.shape == (2, 3)


def test_v2_columns_and_one_2d_tensor_for_a_frame() -> None:
    columns = _v2(
        {
            "inputs": [
                {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
                {"name": "age", "shape": [2, 1], "datatype": "INT32", "data": [1, 2]},
                {"name": "income", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]},
            ]
        },
        FRAME,
    )
    assert columns.columns == {"age": [1, 2], "income": [0.5, 1.5], "plan": ["a", "b"]}
    with pytest.raises(InvalidInput) as caught:
        _v2({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}, FRAME)
    assert caught.value.field == "x"


def test_v2_binary_tensors() -> None:
    floats = np.arange(6, dtype="<f8").tobytes()
    decoded = _v2(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(floats)},
                }
            ]
        },
        ARRAY,
        header=1,
        tail=floats,
    )
    assert decoded.array is not None
    np.testing.assert_array_equal(decoded.array, np.arange(6.0).reshape(2, 3))
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"xyz"))
    doc = {
        "inputs": [
            {
                "name": "plan",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(strings)},
            },
            {"name": "age", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "income", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
        ]
    }
    assert _v2(doc, FRAME, header=1, tail=strings).columns == {
        "age": [1, 2],
        "income": [1.0, 2.0],
        "plan": ["ab", "xyz"],
    }


@pytest.mark.parametrize(
    ("inputs", "schema", "field"),
    [
        ([{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2]}], ARRAY, "x"),
        ([{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}], ARRAY, "x"),
        ([{"name": "x", "shape": [1, 3], "datatype": "FP128", "data": [1, 2, 3]}], ARRAY, "x"),
        ([{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ["a", "b", "c"]}], ARRAY, "x"),
        ([{"name": "x", "shape": [1, 3], "datatype": "BOOL", "data": [True] * 3}], ARRAY, "x"),
        ([{"name": "x", "shape": "1", "datatype": "FP64", "data": [1]}], ARRAY, "x"),
        ([{"shape": [1], "datatype": "FP64", "data": [1]}], ARRAY, "inputs"),
        ([{"name": "age", "shape": [1], "datatype": "BYTES", "data": ["1"]}], FRAME, "age"),
        (
            [
                {"name": "age", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "income", "shape": [2], "datatype": "FP64", "data": [1, 2]},
            ],
            FRAME,
            "income",
        ),
        ([{"name": "age", "shape": [1], "datatype": "INT64", "data": [1]}], FRAME, "income"),
    ],
)
def test_v2_refusals_name_the_input(inputs: list[Any], schema: InputSchema, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _v2({"inputs": inputs}, schema)
    assert caught.value.field == field
    assert caught.value.status == 400


def test_v2_unknown_output_and_empty_inputs() -> None:
    with pytest.raises(InvalidInput, match="outputs") as caught:
        _v2(
            {
                "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
                "outputs": [{"name": "shap"}],
            }
        )
    assert caught.value.field == "outputs"
    with pytest.raises(InvalidInput):
        _v2({"inputs": []})


def test_merge_and_split_keep_each_callers_rows() -> None:
    a, b = _v1({"instances": [[1, 1, 1]]}), _v1({"instances": [[2, 2, 2], [3, 3, 3]]})
    assert a.key == b.key
    merged = to_model_input([a, b], ARRAY)
    np.testing.assert_array_equal(merged[:, 0], [1, 2, 3])
    parts = split_predictions({"predict": merged[:, 0]}, [a, b])
    assert [p["predict"].tolist() for p in parts] == [[1.0], [2.0, 3.0]]
    with pytest.raises(ValueError, match=r"predict\(\) returned 2 rows for 3 input rows"):
        split_predictions({"predict": [1, 2]}, [a, b])


def test_frame_merge_uses_schema_dtypes_and_order() -> None:
    a = _v1({"dataframe_records": [{"plan": "a", "income": 1, "age": 3}]}, FRAME)
    b = _v1({"dataframe_records": [{"plan": "b", "income": None, "age": 4}]}, FRAME)
    frame = to_model_input([a, b], FRAME)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["age", "income", "plan"]
    assert frame["age"].dtype == np.int64
    assert frame["income"].dtype == np.float64 and np.isnan(frame["income"][1])
    assert frame["plan"].tolist() == ["a", "b"]


def test_encoders() -> None:
    v1 = orjson.loads(encode_v1(np.array(["yes", "no"], dtype=object), "churn", "v2"))
    assert v1 == {"predictions": ["yes", "no"], "model": "churn", "version": "v2"}
    body, header = encode_v2(
        {"predict_proba": np.array([[0.25, 0.75]])}, "churn", "v2", V2Request(request_id="id-1")
    )
    v2 = orjson.loads(body)
    assert header is None
    assert v2["id"] == "id-1"
    assert v2["outputs"] == [
        {"name": "predict_proba", "shape": [1, 2], "datatype": "FP64", "data": [0.25, 0.75]}
    ]
    ints = orjson.loads(encode_v2({"predict": np.array([1, 0], dtype=np.int32)}, "m", "v")[0])
    assert ints["outputs"][0]["datatype"] == "INT32"
    nan = orjson.loads(encode_v1(np.array([np.nan, 1.0]), "m", "v"))
    assert nan["predictions"] == [None, 1.0]
