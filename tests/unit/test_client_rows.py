"""What ``ep.predict`` / ``ep.send`` put on the wire: rows as the user has them.

A DataFrame goes column by column in its own dtype (no upcast of ints to floats when a frame
mixes ints and floats), missing values as null, numpy and pandas scalars as plain JSON; a list
of dicts is a table with those columns; lists of rows go as they are. ``method`` adds
``"parameters": {"method": ...}`` only when it is not the server's default ``predict``.
Pure encoding, no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from mlshift._client import _body, encode_rows
from mlshift._exceptions import InvalidArgumentError, InvalidDataError


def _doc(data: Any, method: str = "predict") -> Any:
    return orjson.loads(_body(data, method))


def test_a_frame_of_ints_and_floats_keeps_its_ints() -> None:
    frame = pd.DataFrame({"tenure": [68, 3], "spend": [1.5, 2.0]})
    data = _doc(frame)["dataframe_split"]["data"]
    assert data == [[68, 1.5], [3, 2.0]]
    assert [type(v) for v in data[0]] == [int, float]
    assert all(b'"tenure"' in body and b"[[68,1.5]]" in body for body in encode_rows(frame[:1]))


def test_every_column_goes_in_its_own_dtype_and_missing_values_are_null() -> None:
    frame = pd.DataFrame(
        {
            "n": np.array([1, 2], dtype="int32"),
            "x": [0.5, np.nan],
            "s": ["a", None],
            "b": [True, False],
            "ni": pd.array([7, None], dtype="Int64"),
            "t": pd.to_datetime(["2024-05-01 12:00", None], utc=True),
            "c": pd.Categorical(["lo", "hi"]),
        }
    )
    split = _doc(frame)["dataframe_split"]
    assert split["columns"] == ["n", "x", "s", "b", "ni", "t", "c"]
    assert split["data"] == [
        [1, 0.5, "a", True, 7, "2024-05-01T12:00:00+00:00", "lo"],
        [2, None, None, False, None, None, "hi"],
    ]


def test_a_list_of_dicts_is_a_list_of_rows() -> None:
    frame = pd.DataFrame({"tenure": [68, 3], "spend": [1.5, 2.0], "plan": ["pro", "basic"]})
    records = frame.to_dict(orient="records")
    assert _doc(records) == _doc(frame)
    ragged = [{"a": np.int64(1)}, {"b": np.float32(0.5), "a": 2}]
    assert _doc(ragged)["dataframe_split"] == {"columns": ["a", "b"], "data": [[1, None], [2, 0.5]]}
    assert len(encode_rows(records)) == 2


def test_a_dict_is_one_row_or_columns_of_lists() -> None:
    assert _doc({"a": 1, "b": "x"})["dataframe_split"] == {
        "columns": ["a", "b"],
        "data": [[1, "x"]],
    }
    assert _doc({"a": [1, 2], "b": [0.5, 1.5]})["dataframe_split"]["data"] == [[1, 0.5], [2, 1.5]]


def test_lists_go_as_they_are_and_arrays_through_numpy() -> None:
    assert _doc([[1, 2.5], [3, 4.5]]) == {"instances": [[1, 2.5], [3, 4.5]]}
    assert _doc([1, 2, 3]) == {"instances": [[1, 2, 3]]}
    assert _doc(np.ones((2, 2), dtype=np.int64)) == {"instances": [[1, 1], [1, 1]]}
    assert _doc([np.array([1.0, 2.0])]) == {"instances": [[1.0, 2.0]]}


def test_rows_mixing_dicts_and_lists_are_refused() -> None:
    with pytest.raises(InvalidDataError, match="mix dicts"):
        _body([{"a": 1}, [1]])


def test_method_is_sent_as_a_parameter_only_when_not_predict() -> None:
    frame = pd.DataFrame({"a": [1]})
    assert "parameters" not in _doc(frame)
    assert _doc(frame, "predict_proba")["parameters"] == {"method": "predict_proba"}
    assert orjson.loads(encode_rows([[1.0]], method="predict_proba")[0]) == {
        "instances": [[1.0]],
        "parameters": {"method": "predict_proba"},
    }
    with pytest.raises(InvalidArgumentError, match="predict_proba"):
        encode_rows([[1.0]], method="decision_function")
