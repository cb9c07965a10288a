"""Wire protocols: input schemas, KServe v1 and pandas dataframe requests, batch merging.

Every request is checked against the bundle's input schema and turned into a ``Decoded`` value:
either a numeric array (array schemas) or columns of plain values (dataframe schemas), plus the
model methods it asks for (``predict``, ``predict_proba`` or both). Bad input raises
``InvalidInput`` (a 400) naming the field, never anything that would become a 500: values that
would overflow the model's dtype are refused here rather than wrapped or turned into ``inf``.
Batches of ``Decoded`` values are merged into one model input here too (``to_model_input``), and
predictions are encoded back into v1 bodies. Open Inference Protocol v2 lives in ``_oip``.

A column or array dtype ``"any"`` (a schema read from a model that does not record its input
dtypes) accepts every value and hands it to the model as given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from model_server._dtypes import ANY as _ANY
from model_server._dtypes import ANY_DTYPE, METHODS
from model_server._dtypes import BOOL as _BOOL
from model_server._dtypes import FLOAT as _FLOAT
from model_server._dtypes import INT as _INT
from model_server._dtypes import JSON_KINDS as _JSON_KINDS
from model_server._dtypes import STR as _STR
from model_server._dtypes import cast as _cast
from model_server._dtypes import category as _category
from model_server._dtypes import check_range as _check_range
from model_server._dtypes import numpy_dtype as _numpy_dtype
from model_server._dtypes import value_ok as _value_ok
from model_server._errors import InvalidInput

__all__ = [
    "ANY_DTYPE",
    "METHODS",
    "Decoded",
    "InputSchema",
    "check_parameters",
    "decode_v1",
    "encode_v1",
    "request_method",
    "split_predictions",
    "to_model_input",
]


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

    Exactly one of ``array`` and ``columns`` is set. ``methods`` are the model methods whose
    outputs the caller wants, in the order asked. ``key`` groups requests that may share one
    model call per method (same layout, same columns, same methods).
    """

    rows: int
    methods: tuple[str, ...]
    array: np.ndarray[Any, Any] | None = None
    columns: dict[str, list[Any]] | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys can be concatenated into one call of each method."""
        if self.columns is not None:
            return ("columns", self.methods, tuple(self.columns))
        assert self.array is not None
        return ("array", self.methods, self.array.shape[1:], self.array.dtype.str)


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from exc


def request_method(doc: dict[str, Any], default: str) -> str:
    """The method a body's ``parameters.method`` names (``predict_proba``...), else ``default``.

    Raises:
        InvalidInput: ``parameters`` is not an object or ``method`` is not a known method.

    Example:
        >>> request_method({"parameters": {"method": "predict_proba"}}, "predict")
        'predict_proba'
    """
    if "parameters" not in doc:
        return default
    params = check_parameters(doc["parameters"], "parameters")
    method = params.get("method", default)
    if method not in METHODS:
        raise InvalidInput(
            f"parameters.method must be one of {', '.join(METHODS)}, got {method!r}",
            field="parameters.method",
        )
    return str(method)


def check_parameters(params: Any, field: str) -> dict[str, Any]:
    """A ``parameters`` object: names to a string, number or boolean each, as the protocol says.

    Raises:
        InvalidInput: ``params`` is not such an object (``field`` names it).
    """
    if not isinstance(params, dict):
        raise InvalidInput(f"{field} must be an object of name: value pairs", field=field)
    for key, value in params.items():
        if not isinstance(value, str | int | float):  # bool is an int
            raise InvalidInput(
                f"{field}.{key} must be a string, number or boolean, got {type(value).__name__}",
                field=field,
            )
    return params


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
        dtype = schema.dtypes[schema.columns.index(name)]
        for i, value in enumerate(values):
            if not _value_ok(value, category):
                raise InvalidInput(
                    f"{where}: column {name!r} expects {dtype} values but row {i} holds"
                    f" {type(value).__name__} {value!r}",
                    field=name,
                )
        if category in (_FLOAT, _INT):
            _check_range(values, dtype, name)


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
    return _cast(arr, _numpy_dtype(schema.dtype), field)


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


def _decoded_columns(
    columns: dict[str, list[Any]], methods: tuple[str, ...], schema: InputSchema
) -> Decoded:
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
    return Decoded(rows=rows, methods=methods, columns=columns)


# ---------------------------------------------------------------- KServe v1 / pandas


def decode_v1(body: bytes, schema: InputSchema, method: str) -> Decoded:
    """Decode a v1 body: ``instances``/``inputs``, ``dataframe_split`` or ``dataframe_records``.

    ``method`` is the default; ``"parameters": {"method": "predict_proba"}`` in the body asks
    for another one.

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
    methods = (request_method(doc, method),)
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
                rows=len(rows), methods=methods, array=_array_from_rows(rows, schema, field)
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
    return _decoded_columns(columns, methods, schema)


def encode_v1(
    predictions: np.ndarray[Any, Any],
    name: str,
    version: str,
    classes: Sequence[Any] | None = None,
) -> bytes:
    """Encode a v1 response body; ``classes`` (for probabilities) labels the columns.

    Example:
        >>> encode_v1(np.array([[0.9, 0.1]]), "churn", "v1", classes=["no", "yes"])
        b'{"predictions":[[0.9,0.1]],"model":"churn","version":"v1","classes":["no","yes"]}'
    """
    doc: dict[str, Any] = {"predictions": _jsonable(predictions), "model": name, "version": version}
    if classes is not None:
        doc["classes"] = list(classes)
    return orjson.dumps(doc)


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
        category = _ANY if dtype is None else _category(dtype)
        target = None if dtype is None else _numpy_dtype(dtype)
        if category == _ANY or (category == _STR and dtype == "str"):
            data[name] = values  # as sent: pandas infers the column's dtype
        elif category == _FLOAT and target is not None:
            data[name] = np.asarray([np.nan if v is None else v for v in values], dtype=target)
        elif category in (_INT, _BOOL) and target is not None:
            data[name] = np.asarray(values, dtype=target)
        else:  # strings, categories, datetimes and pandas' nullable dtypes ("Int64"...)
            data[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data)


def split_predictions(
    outputs: Mapping[str, Any], items: Sequence[Decoded]
) -> list[dict[str, np.ndarray[Any, Any]]]:
    """Cut one batch's outputs (method -> what it returned) back into each request's rows.

    Each request gets the outputs it asked for, in its own order.
    """
    total = sum(it.rows for it in items)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for method, predictions in outputs.items():
        arr = np.asarray(predictions)
        if arr.ndim == 0 or arr.shape[0] != total:
            raise ValueError(
                f"{method}() returned {arr.shape[0] if arr.ndim else 'a scalar'} rows"
                f" for {total} input rows"
            )
        arrays[method] = arr
    out, start = [], 0
    for it in items:
        out.append({m: arrays[m][start : start + it.rows] for m in it.methods})
        start += it.rows
    return out
