"""Wire protocols: input schemas, KServe v1 and pandas dataframe requests, batch merging.

Every request is checked against the bundle's input schema and turned into a ``Decoded`` value:
either a numeric array (array schemas) or columns of plain values (dataframe schemas). Bad input
raises ``InvalidInput`` naming the field, never anything that would become a 500. Batches of
``Decoded`` values are merged into one model input here too (``to_model_input``), and
predictions are encoded back into v1 bodies. Open Inference Protocol v2 lives in ``_oip``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from model_server._errors import InvalidInput

__all__ = [
    "METHODS",
    "Decoded",
    "InputSchema",
    "decode_v1",
    "encode_v1",
    "split_predictions",
    "to_model_input",
]

METHODS = ("predict", "predict_proba")

# numpy dtype -> kind of JSON value accepted
_FLOAT, _INT, _BOOL, _STR, _ANY = "float", "int", "bool", "string", "any"
_V2_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_ACCEPTS = {  # schema category -> v2 datatypes that may feed it
    _FLOAT: {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16"},
    _INT: {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"},
    _BOOL: {"BOOL"},
    _STR: {"BYTES"},
    _ANY: set(_V2_TO_NUMPY),
}
_JSON_KINDS = {_FLOAT: "fiu", _INT: "iu", _BOOL: "b", _STR: "UO", _ANY: "fiubUO"}


def _category(dtype: str) -> str:
    d = dtype.lower()
    if d.startswith(("float", "double")):
        return _FLOAT
    if d.startswith(("int", "uint")):
        return _INT
    if d in ("bool", "boolean"):
        return _BOOL
    if d in ("object", "string", "str", "category") or d.startswith(("datetime", "string")):
        return _STR
    return _ANY


def _numpy_dtype(dtype: str) -> Any:
    category = _category(dtype)
    if category in (_STR, _ANY):
        return object
    return np.dtype(dtype.lower().replace("boolean", "bool"))


def _value_ok(value: Any, category: str) -> bool:
    kind = type(value)
    if category == _FLOAT:
        return kind is float or kind is int or value is None
    if category == _INT:
        return kind is int
    if category == _BOOL:
        return kind is bool
    if category == _STR:
        return kind is str or value is None
    return True


@dataclass(frozen=True)
class InputSchema:
    """The bundle's input schema, compiled for fast checks.

    Example:
        >>> s = InputSchema.from_manifest({"kind": "array", "shape": [None, 2], "dtype": "float64"})
        >>> s.kind, s.shape
        ('array', (None, 2))
    """

    kind: str  # "array" | "dataframe" | "none"
    columns: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    shape: tuple[int | None, ...] = ()
    dtype: str = "float64"

    @classmethod
    def from_manifest(cls, schema: dict[str, Any] | None) -> InputSchema:
        """Compile the manifest's ``input_schema`` (``None`` means: accept any rows)."""
        if not schema:
            return cls(kind="none")
        if schema.get("kind") == "dataframe":
            cols = schema.get("columns") or []
            return cls(
                kind="dataframe",
                columns=tuple(str(c["name"]) for c in cols),
                dtypes=tuple(str(c.get("dtype", "object")) for c in cols),
            )
        shape = tuple(None if d is None else int(d) for d in schema.get("shape") or [None])
        return cls(kind="array", shape=shape, dtype=str(schema.get("dtype", "float64")))

    def categories(self) -> dict[str, str]:
        """Column name -> accepted value category."""
        return {c: _category(d) for c, d in zip(self.columns, self.dtypes, strict=True)}


@dataclass
class Decoded:
    """One request's rows, validated, in the layout the schema asks for.

    Exactly one of ``array`` and ``columns`` is set. ``key`` groups requests that may share a
    predict call (same layout, same columns, same method).
    """

    rows: int
    method: str
    array: np.ndarray[Any, Any] | None = None
    columns: dict[str, list[Any]] | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys can be concatenated into one predict call."""
        if self.columns is not None:
            return ("columns", self.method, tuple(self.columns))
        assert self.array is not None
        return ("array", self.method, self.array.shape[1:], self.array.dtype.str)


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"request body is not valid JSON: {exc}", field="body", status=400
        ) from exc


# ---------------------------------------------------------------- shared checks


def _check_columns(columns: dict[str, list[Any]], schema: InputSchema, where: str) -> None:
    if schema.kind != "dataframe":
        return
    given, wanted = set(columns), set(schema.columns)
    for name in schema.columns:
        if name not in given:
            raise InvalidInput(
                f"{where}: column {name!r} is missing; the model needs {list(schema.columns)}",
                field=name,
            )
    for name in columns:
        if name not in wanted:
            raise InvalidInput(
                f"{where}: column {name!r} is unknown; the model takes {list(schema.columns)}",
                field=name,
            )
    for name, category in schema.categories().items():
        values = columns[name]
        for i, value in enumerate(values):
            if not _value_ok(value, category):
                dtype = schema.dtypes[schema.columns.index(name)]
                raise InvalidInput(
                    f"{where}: column {name!r} expects {dtype} values but row {i} holds"
                    f" {type(value).__name__} {value!r}",
                    field=name,
                )


def _array_from_rows(rows: Any, schema: InputSchema, field: str) -> np.ndarray[Any, Any]:
    try:
        arr = np.asarray(rows)
    except ValueError as exc:
        raise InvalidInput(
            f"{field} must be a rectangular array of numbers: {exc}", field=field
        ) from exc
    if arr.size == 0 or arr.ndim == 0:
        raise InvalidInput(f"{field} holds no rows; send at least one", field=field)
    if schema.kind != "array":
        return arr
    category = _category(schema.dtype)
    if arr.dtype.kind not in _JSON_KINDS[category]:
        raise InvalidInput(
            f"{field} must hold {schema.dtype} values, got {arr.dtype.name} data"
            " (strings, nulls or mixed types)",
            field=field,
        )
    _check_shape(arr.shape, schema, field)
    return arr.astype(_numpy_dtype(schema.dtype), copy=False)


def _check_shape(shape: Sequence[int], schema: InputSchema, field: str) -> None:
    want = schema.shape
    ok = len(shape) == len(want) and all(
        w is None or w == s for s, w in zip(shape[1:], want[1:], strict=True)
    )
    if not ok:
        expected = ["n" if w is None else w for w in want]
        raise InvalidInput(
            f"{field} has shape {list(shape)} but the model takes {expected}"
            " (n rows of the sample's shape)",
            field=field,
        )


def _rows_to_columns(rows: list[Any], schema: InputSchema, field: str) -> dict[str, list[Any]]:
    """Positional rows (lists) mapped onto the schema's columns."""
    width = len(schema.columns)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise InvalidInput(
                f"{field}[{i}] must be a list of {width} values in the column order"
                f" {list(schema.columns)}",
                field=field,
            )
    return {name: [row[j] for row in rows] for j, name in enumerate(schema.columns)}


def _records_to_columns(records: list[Any], field: str) -> dict[str, list[Any]]:
    if not all(isinstance(r, dict) for r in records):
        raise InvalidInput(f"{field} must be a list of objects, one per row", field=field)
    names: list[str] = list(records[0])
    for i, record in enumerate(records[1:], start=1):
        if len(record) != len(names) or any(n not in record for n in names):
            missing = [n for n in names if n not in record] or [n for n in record if n not in names]
            raise InvalidInput(
                f"{field}[{i}] has different columns than {field}[0] (column {missing[0]!r})",
                field=missing[0],
            )
    return {name: [r[name] for r in records] for name in names}


def _decoded_columns(columns: dict[str, list[Any]], method: str, schema: InputSchema) -> Decoded:
    if schema.kind == "array":
        raise InvalidInput(
            "this model takes an array (send instances as lists of numbers), not named columns",
            field="instances",
        )
    rows = len(next(iter(columns.values()))) if columns else 0
    if rows == 0:
        raise InvalidInput("the request holds no rows; send at least one", field="body")
    if schema.kind == "dataframe":  # schema order, so the model sees its training layout
        columns = {name: columns[name] for name in schema.columns if name in columns} | columns
    return Decoded(rows=rows, method=method, columns=columns)


# ---------------------------------------------------------------- KServe v1 / pandas


def decode_v1(body: bytes, schema: InputSchema, method: str) -> Decoded:
    """Decode a v1 body: ``instances``/``inputs``, ``dataframe_split`` or ``dataframe_records``.

    Raises:
        InvalidInput: The body is not JSON, has no known key, or does not fit the schema.

    Example:
        >>> s = InputSchema.from_manifest({"kind": "array", "shape": [None, 2], "dtype": "float64"})
        >>> decode_v1(b'{"instances": [[1, 2]]}', s, "predict").rows
        1
    """
    doc = _loads(body)
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    if "instances" in doc or "inputs" in doc:
        field = "instances" if "instances" in doc else "inputs"
        rows = doc[field]
        if not isinstance(rows, list) or not rows:
            raise InvalidInput(f"{field} must be a non-empty list of rows", field=field)
        if isinstance(rows[0], dict):
            columns = _records_to_columns(rows, field)
        elif schema.kind == "dataframe":
            columns = _rows_to_columns(rows, schema, field)
        else:
            return Decoded(
                rows=len(rows), method=method, array=_array_from_rows(rows, schema, field)
            )
    elif "dataframe_split" in doc:
        split = doc["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise InvalidInput(
                'dataframe_split must be {"columns": [...], "data": [[...], ...]}',
                field="dataframe_split",
            )
        names = split.get("columns")
        if names is None and schema.kind == "dataframe":
            names = list(schema.columns)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput("dataframe_split.columns must be a list of names", field="columns")
        data = split["data"]
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(names):
                raise InvalidInput(
                    f"dataframe_split.data[{i}] must hold {len(names)} values, one per column",
                    field="dataframe_split.data",
                )
        columns = {name: [row[j] for row in data] for j, name in enumerate(names)}
    elif "dataframe_records" in doc:
        records = doc["dataframe_records"]
        if not isinstance(records, list) or not records:
            raise InvalidInput(
                "dataframe_records must be a non-empty list of objects", field="dataframe_records"
            )
        columns = _records_to_columns(records, "dataframe_records")
    else:
        raise InvalidInput(
            "request body needs one of instances, inputs, dataframe_split, dataframe_records",
            field="body",
        )
    _check_columns(columns, schema, "request")
    return _decoded_columns(columns, method, schema)


def encode_v1(predictions: np.ndarray[Any, Any], name: str, version: str) -> bytes:
    """Encode a v1 response body."""
    return orjson.dumps({"predictions": _jsonable(predictions), "model": name, "version": version})


# ---------------------------------------------------------------- batching helpers


def _jsonable(arr: np.ndarray[Any, Any]) -> Any:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return [None if isinstance(v, float) and not math.isfinite(v) else v for v in arr.tolist()]
    if arr.dtype.kind in "OUS":
        return (
            [
                v if isinstance(v, str | int | float | bool) or v is None else str(v)
                for v in arr.ravel().tolist()
            ]
            if arr.ndim == 1
            else arr.tolist()
        )
    return arr.tolist()


def to_model_input(items: Sequence[Decoded], schema: InputSchema) -> Any:
    """Merge same-key requests into one model input (ndarray or pandas DataFrame)."""
    first = items[0]
    if first.array is not None:
        if len(items) == 1:
            return first.array
        return np.concatenate([it.array for it in items if it.array is not None])
    import pandas as pd

    assert first.columns is not None
    data: dict[str, Any] = {}
    dtypes = dict(zip(schema.columns, schema.dtypes, strict=True))
    for name in first.columns:
        values: list[Any] = []
        for it in items:
            assert it.columns is not None
            values.extend(it.columns[name])
        dtype = dtypes.get(name)
        if dtype is None:
            data[name] = values
        elif _category(dtype) == _FLOAT:
            data[name] = np.asarray([np.nan if v is None else v for v in values], dtype=dtype)
        elif _category(dtype) in (_INT, _BOOL):
            data[name] = np.asarray(values, dtype=dtype)
        else:
            data[name] = pd.Series(values, dtype=dtype) if dtype != "str" else values
    return pd.DataFrame(data)


def split_predictions(predictions: Any, items: Sequence[Decoded]) -> list[np.ndarray[Any, Any]]:
    """Cut one predict call's output back into each request's own rows."""
    arr = np.asarray(predictions)
    total = sum(it.rows for it in items)
    if arr.ndim == 0 or arr.shape[0] != total:
        raise ValueError(
            f"the model returned {arr.shape[0] if arr.ndim else 'a scalar'} predictions"
            f" for {total} rows"
        )
    out, start = [], 0
    for it in items:
        out.append(arr[start : start + it.rows])
        start += it.rows
    return out
