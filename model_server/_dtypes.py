"""Datatypes on the wire: Open Inference Protocol datatypes, numpy dtypes, and safe casts.

Owns the tables both protocols share (v2 datatype -> numpy dtype, which datatypes may feed a
schema column of a given kind, which JSON values a column accepts) and the checks that refuse
a value the model's dtype cannot hold (``cast``, ``check_range``) with ``InvalidInput`` (a
400) naming the input, rather than wrapping it or turning it into ``inf``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_server._errors import InvalidInput

__all__ = [
    "ACCEPTS",
    "ANY",
    "ANY_DTYPE",
    "BOOL",
    "FLOAT",
    "INT",
    "JSON_KINDS",
    "METHODS",
    "STR",
    "V2_TO_NUMPY",
    "cast",
    "category",
    "check_range",
    "numpy_dtype",
    "value_ok",
]

METHODS = ("predict", "predict_proba")
ANY_DTYPE = "any"

# numpy dtype -> kind of JSON value accepted
FLOAT, INT, BOOL, STR, ANY = "float", "int", "bool", "string", "any"
V2_TO_NUMPY = {
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
ACCEPTS = {  # schema category -> v2 datatypes that may feed it
    FLOAT: {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16"},
    INT: {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"},
    BOOL: {"BOOL"},
    STR: {"BYTES"},
    ANY: set(V2_TO_NUMPY),
}
JSON_KINDS = {FLOAT: "fiu", INT: "iu", BOOL: "b", STR: "UO", ANY: "fiubUO"}


def category(dtype: str) -> str:
    d = dtype.lower()
    if d.startswith(("float", "double")):
        return FLOAT
    if d.startswith(("int", "uint")):
        return INT
    if d in ("bool", "boolean"):
        return BOOL
    if d in ("object", "string", "str", "category") or d.startswith(("datetime", "string")):
        return STR
    return ANY


def numpy_dtype(dtype: str) -> Any:
    """The numpy dtype a schema dtype casts to; ``None`` for ``any`` (values stay as sent)."""
    kind = category(dtype)
    if kind == STR:
        return object
    if kind == ANY:
        return None
    try:
        return np.dtype(dtype.lower().replace("boolean", "bool"))
    except TypeError:  # a pandas extension name such as "Int64": keep the values as sent
        return None


def cast(
    arr: np.ndarray[Any, Any], dtype: Any, field: str, *, what: str | None = None
) -> np.ndarray[Any, Any]:
    """``arr`` as ``dtype``, refusing values the dtype cannot hold (no wrapping, no ``inf``).

    ``what`` names the culprit in the message (default: ``field``).
    """
    if dtype is None or arr.dtype == dtype:
        return arr
    what = what or field
    target = np.dtype(dtype)
    if arr.size and arr.dtype.kind in "iu" and target.kind in "iu":
        info = np.iinfo(target)
        low, high = arr.min(), arr.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidInput(
                f"{what}: value {bad} does not fit {target.name} (range {info.min} to {info.max})",
                field=field,
            )
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked just below
        out = arr.astype(target, copy=False)
    if target.kind == "f" and arr.dtype.kind in "fiu" and arr.size:
        overflow = ~np.isfinite(out)
        if arr.dtype.kind == "f":
            overflow &= np.isfinite(arr)
        if overflow.any():
            bad = arr[overflow].flat[0]
            raise InvalidInput(
                f"{what}: value {bad} does not fit {target.name}"
                f" (largest magnitude {np.finfo(target).max:g})",
                field=field,
            )
    return out


def check_range(values: list[Any], dtype: str, name: str) -> None:
    """Refuse column values outside what the column's numeric dtype can hold."""
    target = numpy_dtype(dtype)
    if target is None or target is object or target.kind not in "iuf":
        return
    present = [v for v in values if v is not None]
    if not present:
        return
    what = f"column {name!r}"
    if target.kind in "iu":
        info = np.iinfo(target)
        for bad in (min(present), max(present)):  # Python ints: no overflow while comparing
            if not info.min <= bad <= info.max:
                raise InvalidInput(
                    f"{what}: value {bad} does not fit {target.name}"
                    f" (range {info.min} to {info.max})",
                    field=name,
                )
    elif target.itemsize < 8:
        cast(np.asarray([max(present, key=abs)], dtype=np.float64), target, name, what=what)


def value_ok(value: Any, category: str) -> bool:
    kind = type(value)
    if category == FLOAT:
        return kind is float or kind is int or value is None
    if category == INT:
        return kind is int
    if category == BOOL:
        return kind is bool
    if category == STR:
        return kind is str or value is None
    return True
