"""Open Inference Protocol v2: decode infer requests (JSON and binary tensors), encode responses.

Named input tensors are checked (name, shape, datatype, data size) and mapped onto the bundle's
schema: one tensor for array models; one tensor per column (BYTES for strings), or a single 2-D
tensor in column order, for DataFrame models. Shared checks come from ``_protocol``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from model_server._errors import InvalidInput
from model_server._protocol import (
    _ACCEPTS,
    _V2_TO_NUMPY,
    METHODS,
    Decoded,
    InputSchema,
    _category,
    _check_columns,
    _check_shape,
    _decoded_columns,
    _jsonable,
    _loads,
    _numpy_dtype,
)

__all__ = ["decode_v2", "encode_v2"]


def _binary_tensor(raw: bytes, datatype: str, field: str) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        values: list[str] = []
        pos = 0
        while pos + 4 <= len(raw):
            size = int.from_bytes(raw[pos : pos + 4], "little")
            values.append(raw[pos + 4 : pos + 4 + size].decode("utf-8", "replace"))
            pos += 4 + size
        return np.asarray(values, dtype=object)
    dtype = np.dtype(_V2_TO_NUMPY[datatype]).newbyteorder("<")
    if len(raw) % dtype.itemsize:
        raise InvalidInput(
            f"input {field!r}: binary data is not a whole number of {datatype}", field=field
        )
    return np.frombuffer(raw, dtype=dtype)


def _tensor(
    spec: Any, i: int, binary: memoryview | None, offset: int
) -> tuple[str, np.ndarray[Any, Any], str, int]:
    if not isinstance(spec, dict):
        raise InvalidInput(
            f"inputs[{i}] must be an object with name, shape, datatype, data", field="inputs"
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{i}] has no name", field="inputs")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or not shape
    ):
        raise InvalidInput(
            f"input {name!r}: shape must be a list of non-negative integers", field=name
        )
    datatype = spec.get("datatype")
    if datatype not in _V2_TO_NUMPY:
        raise InvalidInput(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(_V2_TO_NUMPY)}",
            field=name,
        )
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if binary is None or type(size) is not int or offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: binary_data_size exceeds the body", field=name)
        arr = _binary_tensor(bytes(binary[offset : offset + size]), datatype, name)
        offset += size
    else:
        if "data" not in spec:
            raise InvalidInput(f"input {name!r} has no data", field=name)
        try:
            arr = np.asarray(spec["data"])
        except ValueError as exc:
            raise InvalidInput(
                f"input {name!r}: data is not rectangular: {exc}", field=name
            ) from exc
        kinds = (
            "UO"
            if datatype == "BYTES"
            else (
                "b"
                if datatype == "BOOL"
                else "iu"
                if datatype.startswith(("INT", "UINT"))
                else "fiu"
            )
        )
        if arr.size and arr.dtype.kind not in kinds:
            raise InvalidInput(
                f"input {name!r}: data does not match datatype {datatype}"
                f" (got {arr.dtype.name} values)",
                field=name,
            )
        arr = arr.ravel().astype(_V2_TO_NUMPY[datatype], copy=False)
    if arr.size != math.prod(shape):
        raise InvalidInput(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, data has {arr.size}",
            field=name,
        )
    return name, arr.reshape(shape), str(datatype), offset


def decode_v2(
    body: bytes, schema: InputSchema, method: str, *, header_length: int | None = None
) -> tuple[Decoded, Any]:
    """Decode an OIP v2 infer body (JSON, or JSON plus the binary tensor extension).

    Returns the decoded rows and the request ``id`` to echo (or ``None``).

    Raises:
        InvalidInput: Malformed tensors, unknown or missing inputs, wrong datatype or shape.

    Example:
        >>> s = InputSchema.from_manifest(None)
        >>> tensor = b'{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}'
        >>> body = b'{"inputs": [' + tensor + b']}'
        >>> decode_v2(body, s, "predict")[0].rows
        1
    """
    binary: memoryview | None = None
    if header_length is not None:
        if header_length > len(body):
            raise InvalidInput(
                "Inference-Header-Content-Length exceeds the body", field="body", status=400
            )
        binary = memoryview(body)[header_length:]
        body = body[:header_length]
    doc = _loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInput('request body must be {"inputs": [tensor, ...]}', field="inputs")
    outputs = doc.get("outputs")
    if outputs:
        names = [o.get("name") if isinstance(o, dict) else None for o in outputs]
        if len(names) != 1 or names[0] not in METHODS:
            raise InvalidInput(
                f"outputs must name exactly one of {', '.join(METHODS)}, got {names}",
                field="outputs",
            )
        method = str(names[0])
    tensors: list[tuple[str, np.ndarray[Any, Any], str]] = []
    offset = 0
    for i, spec in enumerate(doc["inputs"]):
        name, arr, datatype, offset = _tensor(spec, i, binary, offset)
        tensors.append((name, arr, datatype))
    return _tensors_to_decoded(tensors, schema, method), doc.get("id")


def _tensors_to_decoded(
    tensors: list[tuple[str, np.ndarray[Any, Any], str]], schema: InputSchema, method: str
) -> Decoded:
    if schema.kind == "array" or (schema.kind == "none" and len(tensors) == 1):
        if len(tensors) != 1:
            raise InvalidInput(
                f"this model takes one input tensor, got {len(tensors)}", field=tensors[1][0]
            )
        name, arr, datatype = tensors[0]
        if schema.kind == "array":
            category = _category(schema.dtype)
            if datatype not in _ACCEPTS[category]:
                raise InvalidInput(
                    f"input {name!r}: datatype {datatype} cannot feed {schema.dtype} features",
                    field=name,
                )
            _check_shape(arr.shape, schema, name)
            arr = arr.astype(_numpy_dtype(schema.dtype), copy=False)
        if arr.shape[0] == 0:
            raise InvalidInput(f"input {name!r} holds no rows", field=name)
        return Decoded(rows=int(arr.shape[0]), method=method, array=arr)
    categories = schema.categories()
    if schema.kind == "dataframe" and len(tensors) == 1 and tensors[0][0] not in categories:
        # One 2-D tensor whose columns follow the schema's column order.
        name, arr, datatype = tensors[0]
        if arr.ndim != 2 or arr.shape[1] != len(schema.columns):
            raise InvalidInput(
                f"input {name!r} is not a column of this model; send one input per column"
                f" {list(schema.columns)} or one [n, {len(schema.columns)}] tensor",
                field=name,
            )
        tensors = [(c, arr[:, j], datatype) for j, c in enumerate(schema.columns)]
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for name, tensor, datatype in tensors:
        arr = tensor[:, 0] if tensor.ndim == 2 and tensor.shape[1] == 1 else tensor
        if arr.ndim != 1:
            raise InvalidInput(
                f"input {name!r} must have shape [n] or [n, 1] (one column), got {list(arr.shape)}",
                field=name,
            )
        if rows is not None and arr.shape[0] != rows:
            raise InvalidInput(
                f"input {name!r} has {arr.shape[0]} rows but the other inputs have {rows}",
                field=name,
            )
        rows = int(arr.shape[0])
        column_category = categories.get(name)
        if column_category is not None and datatype not in _ACCEPTS[column_category]:
            dtype = schema.dtypes[schema.columns.index(name)]
            raise InvalidInput(
                f"input {name!r}: datatype {datatype} cannot feed a {dtype} column", field=name
            )
        if name in columns:
            raise InvalidInput(f"input {name!r} is given twice", field=name)
        columns[name] = arr.tolist()
    _check_columns(columns, schema, "request")
    return _decoded_columns(columns, method, schema)


def _v2_datatype(arr: np.ndarray[Any, Any]) -> str:
    kind = arr.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'INT' if kind == 'i' else 'UINT'}{arr.dtype.itemsize * 8}"
    if kind == "f":
        return f"FP{arr.dtype.itemsize * 8}"
    return "BYTES"


def encode_v2(
    predictions: np.ndarray[Any, Any], method: str, name: str, version: str, request_id: Any = None
) -> bytes:
    """Encode an OIP v2 infer response with one output named after the method."""
    doc: dict[str, Any] = {"model_name": name, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = [
        {
            "name": method,
            "shape": list(predictions.shape),
            "datatype": _v2_datatype(predictions),
            "data": _jsonable(predictions.ravel()),
        }
    ]
    return orjson.dumps(doc)
