"""Open Inference Protocol v2: decode infer requests (JSON and binary tensors), encode responses.

Named input tensors are checked (name, shape, datatype, data, values that fit the datatype) and
mapped onto the bundle's schema: one tensor for array models; one tensor per column (BYTES for
strings), or a single 2-D tensor in column order, for DataFrame models. A request names the
outputs it wants (``predict``, ``predict_proba``, or both) in ``outputs``, or one method in
``parameters.method``. The binary tensor data extension works both ways: binary inputs after an
``Inference-Header-Content-Length`` JSON header, and binary outputs when a request asks for them
(``parameters.binary_data_output``, or ``binary_data`` on a requested output). Shared checks
come from ``_protocol``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from model_server._dtypes import ACCEPTS as _ACCEPTS
from model_server._dtypes import METHODS
from model_server._dtypes import V2_TO_NUMPY as _V2_TO_NUMPY
from model_server._dtypes import cast as _cast
from model_server._dtypes import category as _category
from model_server._dtypes import numpy_dtype as _numpy_dtype
from model_server._errors import InvalidInput
from model_server._outputs import OutputSpec, conform, v2_datatype
from model_server._protocol import (
    Decoded,
    InputSchema,
    _check_columns,
    _check_shape,
    _decoded_columns,
    _jsonable,
    _loads,
    check_parameters,
    request_method,
)

__all__ = ["EXTENSIONS", "V2Request", "decode_v2", "encode_v2"]

EXTENSIONS = ("binary_tensor_data",)


@dataclass(frozen=True)
class V2Request:
    """What an infer request asks of the response besides its rows."""

    request_id: str | None = None
    binary: frozenset[str] = frozenset()  # outputs to send as binary tensor data


def _binary_tensor(raw: bytes, datatype: str, field: str) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        values: list[str] = []
        pos = 0
        while pos + 4 <= len(raw):
            size = int.from_bytes(raw[pos : pos + 4], "little")
            values.append(raw[pos + 4 : pos + 4 + size].decode("utf-8", "replace"))
            pos += 4 + size
        if pos != len(raw):
            raise InvalidInput(
                f"input {field!r}: binary BYTES data does not end on an element boundary",
                field=field,
            )
        return np.asarray(values, dtype=object)
    dtype = np.dtype(_V2_TO_NUMPY[datatype]).newbyteorder("<")
    if len(raw) % dtype.itemsize:
        raise InvalidInput(
            f"input {field!r}: binary data is not a whole number of {datatype}", field=field
        )
    return np.frombuffer(raw, dtype=dtype)


def _json_tensor(data: Any, datatype: str, name: str) -> np.ndarray[Any, Any]:
    """The tensor's JSON ``data`` as a flat array of ``datatype``, every value checked."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: data must be a JSON array", field=name)
    if datatype == "BYTES":
        try:
            arr = np.asarray(data, dtype=object).ravel()
        except ValueError as exc:
            raise InvalidInput(
                f"input {name!r}: data is not rectangular: {exc}", field=name
            ) from exc
        if not all(type(v) is str for v in arr):
            raise InvalidInput(f"input {name!r}: BYTES data must hold strings", field=name)
        return arr
    target = np.dtype(_V2_TO_NUMPY[datatype])
    if target.kind in "iu":  # Python ints beyond int64 would turn into floats: check them first
        return _json_ints(data, datatype, target, name)
    try:
        arr = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r}: data is not rectangular: {exc}", field=name) from exc
    kinds = "b" if datatype == "BOOL" else "fiu"
    if arr.size and arr.dtype.kind not in kinds:
        raise InvalidInput(
            f"input {name!r}: data does not match datatype {datatype}"
            f" (got {arr.dtype.name} values)",
            field=name,
        )
    return _cast(arr.ravel(), target, name, what=f"input {name!r}")


def _json_ints(
    data: list[Any], datatype: str, target: np.dtype[Any], name: str
) -> np.ndarray[Any, Any]:
    try:
        values = np.asarray(data, dtype=object).ravel()
    except ValueError as exc:
        raise InvalidInput(f"input {name!r}: data is not rectangular: {exc}", field=name) from exc
    if not all(type(v) is int for v in values):
        raise InvalidInput(
            f"input {name!r}: data does not match datatype {datatype} (integers only)", field=name
        )
    info = np.iinfo(target)
    for bad in (min(values, default=0), max(values, default=0)):
        if not info.min <= bad <= info.max:
            raise InvalidInput(
                f"input {name!r}: value {bad} does not fit {target.name}"
                f" (range {info.min} to {info.max})",
                field=name,
            )
    return values.astype(target)


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
    params = check_parameters(spec.get("parameters", {}), name)
    size = params.get("binary_data_size")
    if size is not None:
        if binary is None or type(size) is not int or size < 0 or offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: binary_data_size exceeds the body", field=name)
        arr = _binary_tensor(bytes(binary[offset : offset + size]), datatype, name)
        offset += size
    else:
        if "data" not in spec:
            raise InvalidInput(f"input {name!r} has no data", field=name)
        arr = _json_tensor(spec["data"], datatype, name)
    if arr.size != math.prod(shape):
        raise InvalidInput(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, data has {arr.size}",
            field=name,
        )
    try:
        arr = arr.reshape(shape)
    except ValueError as exc:  # dimensions numpy cannot index, even around a zero
        raise InvalidInput(
            f"input {name!r}: shape {shape} is not usable: {exc}", field=name
        ) from exc
    return name, arr, str(datatype), offset


def _flag(params: Mapping[str, Any], key: str, default: bool, where: str, field: str) -> bool:
    value = params.get(key, default)
    if type(value) is not bool:
        raise InvalidInput(f"{where}.{key} must be true or false", field=field)
    return value


def _requested_outputs(doc: dict[str, Any], default: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The outputs a request asks for, in its order, and which of them to send as binary."""
    method = request_method(doc, default)  # also checks parameters
    params = doc.get("parameters", {})
    binary_all = _flag(params, "binary_data_output", False, "parameters", "parameters")
    outputs = doc.get("outputs", [])
    if outputs == []:
        return (method,), frozenset({method} if binary_all else ())
    if not isinstance(outputs, list):
        raise InvalidInput(
            'outputs must be a list of {"name": ...} objects, e.g. [{"name": "predict_proba"}]',
            field="outputs",
        )
    names: list[str] = []
    binary: set[str] = set()
    for i, out in enumerate(outputs):
        name = out.get("name") if isinstance(out, dict) else None
        if not isinstance(name, str):
            raise InvalidInput(f'outputs[{i}] must be an object with a "name"', field="outputs")
        if name not in METHODS:
            raise InvalidInput(
                f"outputs[{i}] names {name!r}; the outputs are {', '.join(METHODS)}",
                field="outputs",
            )
        if name in names:
            raise InvalidInput(f"output {name!r} is asked for twice", field="outputs")
        out_params = check_parameters(out.get("parameters", {}), "outputs")
        if "classification" in out_params:
            raise InvalidInput(
                "the classification extension is not supported; ask for output"
                " 'predict_proba' for class probabilities",
                field="outputs",
            )
        if _flag(out_params, "binary_data", binary_all, f"outputs[{i}].parameters", "outputs"):
            binary.add(name)
        names.append(name)
    if "method" in params and method not in names:
        raise InvalidInput(
            f"parameters.method asks for {method!r} but outputs name {names}; send one of them",
            field="parameters.method",
        )
    return tuple(names), frozenset(binary)


def decode_v2(
    body: bytes, schema: InputSchema, method: str, *, header_length: int | None = None
) -> tuple[Decoded, V2Request]:
    """Decode an OIP v2 infer body (JSON, or JSON plus the binary tensor extension).

    ``method`` is the output sent when the request names none. Returns the decoded rows and
    what the response must carry (the request ``id`` to echo, outputs to send as binary).

    Raises:
        InvalidInput: Malformed tensors, unknown or missing inputs, wrong datatype or shape,
            values the datatype cannot hold, unknown outputs or parameters.

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
            raise InvalidInput("Inference-Header-Content-Length exceeds the body", field="body")
        binary = memoryview(body)[header_length:]
        body = body[:header_length]
    doc = _loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInput('request body must be {"inputs": [tensor, ...]}', field="inputs")
    request_id = doc.get("id")
    if "id" in doc and not isinstance(request_id, str):
        raise InvalidInput("id must be a string", field="id")
    methods, binary_outputs = _requested_outputs(doc, method)
    tensors: list[tuple[str, np.ndarray[Any, Any], str]] = []
    offset = 0
    for i, spec in enumerate(doc["inputs"]):
        name, arr, datatype, offset = _tensor(spec, i, binary, offset)
        tensors.append((name, arr, datatype))
    decoded = _tensors_to_decoded(tensors, schema, methods)
    return decoded, V2Request(request_id=request_id, binary=binary_outputs)


def _tensors_to_decoded(
    tensors: list[tuple[str, np.ndarray[Any, Any], str]],
    schema: InputSchema,
    methods: tuple[str, ...],
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
            arr = _cast(arr, _numpy_dtype(schema.dtype), name, what=f"input {name!r}")
        if arr.shape[0] == 0:
            raise InvalidInput(f"input {name!r} holds no rows", field=name)
        return Decoded(rows=int(arr.shape[0]), methods=methods, array=arr)
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
    return _decoded_columns(columns, methods, schema)


def _raw(arr: np.ndarray[Any, Any], datatype: str) -> bytes:
    """A tensor's binary form: little-endian values; BYTES as 4-byte length + UTF-8 each."""
    if datatype == "BYTES":
        parts = [str(v).encode() for v in arr.ravel().tolist()]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def encode_v2(
    outputs: Mapping[str, np.ndarray[Any, Any]],
    name: str,
    version: str,
    request: V2Request | None = None,
    specs: Mapping[str, OutputSpec] | None = None,
) -> tuple[bytes, int | None]:
    """Encode an OIP v2 infer response with one output per method, in the order given.

    Each output is cast to the datatype ``specs`` announce when that loses nothing. Returns the
    body and, when outputs are sent as binary tensor data, the length of its JSON header (for
    ``Inference-Header-Content-Length``), else ``None``.

    Example:
        >>> body, header = encode_v2({"predict": np.array([1.5])}, "m", "v1")
        >>> orjson.loads(body)["outputs"][0]["datatype"], header
        ('FP64', None)
    """
    request = request or V2Request()
    doc: dict[str, Any] = {"model_name": name, "model_version": version}
    if request.request_id is not None:
        doc["id"] = request.request_id
    tensors, raw = [], []
    for method, predictions in outputs.items():
        arr = conform(np.asarray(predictions), (specs or {}).get(method))
        datatype = v2_datatype(arr.dtype)
        tensor: dict[str, Any] = {"name": method, "shape": list(arr.shape), "datatype": datatype}
        if method in request.binary:
            raw.append(_raw(arr, datatype))
            tensor["parameters"] = {"binary_data_size": len(raw[-1])}
        else:
            tensor["data"] = _jsonable(arr.ravel())
        tensors.append(tensor)
    doc["outputs"] = tensors
    header = orjson.dumps(doc)
    if not raw:
        return header, None
    return header + b"".join(raw), len(header)
