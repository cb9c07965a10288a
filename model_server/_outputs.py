"""What a served model outputs: per method, the v2 datatype and shape its responses carry.

The bundle writer records the outputs in ``mlshift.json`` (``output.tensors``) by running the
sample through each method, so a float32 regressor or a multi-output model is described as it
behaves. Bundles without that record (older ones) get outputs derived from the model: a
classifier's ``predict`` returns labels of its ``classes_`` dtype, ``predict_proba`` is FP32
for XGBoost and FP64 otherwise, a regressor's ``predict`` FP32 for XGBoost and FP64 otherwise.
Responses are cast to the described datatype whenever that loses nothing (``conform``), so model
metadata and responses agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_server._dtypes import METHODS, V2_TO_NUMPY

__all__ = ["OutputSpec", "conform", "derive_outputs", "describe_outputs", "v2_datatype"]

log = logging.getLogger("mlshift.model_server")
_warned: set[tuple[str, str]] = set()  # (output, dtype) already logged: one warning, not one a call

_NUMPY = {k: v for k, v in V2_TO_NUMPY.items() if k != "BYTES"}


@dataclass(frozen=True)
class OutputSpec:
    """One output tensor as model metadata announces it.

    Example:
        >>> OutputSpec("predict_proba", "FP32", (-1, 2)).metadata()
        {'name': 'predict_proba', 'datatype': 'FP32', 'shape': [-1, 2]}
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        """The ``$metadata_tensor`` object of the Open Inference Protocol."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def v2_datatype(dtype: Any) -> str:
    """The Open Inference Protocol datatype of a numpy dtype (strings and objects are BYTES).

    Example:
        >>> v2_datatype(np.dtype("int64")), v2_datatype(np.dtype("<U3"))
        ('INT64', 'BYTES')
    """
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return "BOOL"
    if dt.kind in "iu":
        return f"{'INT' if dt.kind == 'i' else 'UINT'}{dt.itemsize * 8}"
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return f"FP{dt.itemsize * 8}"
    return "BYTES"


def _classes(model: Any) -> np.ndarray[Any, Any] | None:
    try:
        classes = getattr(model, "classes_", None)
    except AttributeError:  # a Pipeline whose last step has no classes_
        return None
    if classes is None:
        return None
    arr = np.asarray(classes)
    return arr if arr.ndim == 1 else None


def derive_outputs(model: Any, flavor: str) -> list[OutputSpec]:
    """Describe ``predict`` (and ``predict_proba`` when the model has it) from the model alone.

    Example:
        >>> derive_outputs(LogisticRegression().fit(X, ["a", "b"] * 5), "sklearn")  # doctest: +SKIP
        [OutputSpec(name='predict', datatype='BYTES', shape=(-1,)), ...FP64, shape=(-1, 2))]
    """
    classes = _classes(model)
    float_type = "FP32" if flavor == "xgboost" else "FP64"
    if classes is not None:
        outputs = [OutputSpec("predict", v2_datatype(classes.dtype), (-1,))]
    else:
        outputs = [OutputSpec("predict", float_type, (-1,))]
    if callable(getattr(model, "predict_proba", None)):
        width = len(classes) if classes is not None else -1
        outputs.append(OutputSpec("predict_proba", float_type, (-1, width)))
    return outputs


def _recorded(record: Any) -> list[OutputSpec] | None:
    """The outputs recorded at bundle time, or ``None`` when absent or malformed."""
    if not isinstance(record, list) or not record:
        return None
    specs = []
    for item in record:
        if not isinstance(item, dict):
            return None
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if name not in METHODS or not isinstance(datatype, str) or not isinstance(shape, list):
            return None
        if not all(type(d) is int for d in shape):
            return None
        specs.append(OutputSpec(str(name), datatype, tuple(shape)))
    return specs


def describe_outputs(model: Any, flavor: str, output: Mapping[str, Any]) -> dict[str, OutputSpec]:
    """Method -> output description: as recorded in the manifest, else derived from the model.

    Only methods the model has are described, so metadata never offers an output it cannot
    compute.
    """
    specs = _recorded(output.get("tensors")) or derive_outputs(model, flavor)
    return {s.name: s for s in specs if callable(getattr(model, s.name, None))}


def conform(arr: np.ndarray[Any, Any], spec: OutputSpec | None) -> np.ndarray[Any, Any]:
    """Cast ``arr`` to the datatype metadata announces when no value changes; else keep it.

    Example:
        >>> conform(np.array([1, 0], dtype=np.int32), OutputSpec("predict", "INT64", (-1,))).dtype
        dtype('int64')
    """
    if spec is None or v2_datatype(arr.dtype) == spec.datatype:
        return arr
    target = _NUMPY.get(spec.datatype)
    if target is not None and np.can_cast(arr.dtype, target, "safe"):
        return arr.astype(target)
    if spec.datatype == "BYTES" and arr.dtype.kind in "iub":  # labels: send them as text
        return arr.astype(str).astype(object)
    if (spec.name, arr.dtype.str) not in _warned:
        _warned.add((spec.name, arr.dtype.str))
        log.warning(
            "%s returned %s values but metadata announces %s; sending %s",
            spec.name,
            arr.dtype,
            spec.datatype,
            v2_datatype(arr.dtype),
        )
    return arr
