"""A model's input schema, read from a sample or, when there is none, from the fitted model itself.

The schema is what ``mlshift.json`` records under ``input_schema`` and model_server validates every
request against, so a request that misses a column is refused with a 400 naming it instead of
reaching ``predict`` and failing there as a 500. A DataFrame sample gives column names and
dtypes, an array sample its shape and dtype. Without a sample the names come from what the
fitted model remembers: ``feature_names_in_`` (scikit-learn estimators and Pipelines fitted on a
DataFrame, XGBoost and LightGBM wrappers), XGBoost's ``get_booster().feature_names``, LightGBM's
``feature_name_`` (its generated ``Column_<i>`` names mean an unnamed array); else the width
from ``n_features_in_``. Models do not record their input dtypes, so a column's dtype is taken
from the evidence the model holds, and is ``"any"`` (every value accepted, passed on as sent)
where it holds none:

- XGBoost and LightGBM: numeric (``float64``, which also takes integers and nulls), or
  ``category`` for categorical features;
- an encoder (``OneHotEncoder``, ``OrdinalEncoder``...) or imputer in front of a Pipeline or in
  a ``ColumnTransformer``: the dtype of its learned categories or statistics (``object`` for
  strings, ``float64`` for numbers); a text vectorizer: ``object``;
- a scaler, or a numeric scikit-learn estimator (linear models, trees, ensembles, SVMs...) that
  receives the column directly: ``float64``.

Pure: it reads attributes of the objects it is given, no I/O.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

from mlshift._exceptions import BundleError

__all__ = ["ANY", "infer_schema", "schema_from_model"]

ANY = "any"  # model_server's ANY_DTYPE: a column whose dtype the model does not record
_FLOAT = "float64"
_STRING = "object"
_LIGHTGBM_NAME = re.compile(r"Column_\d+")
# scikit-learn subpackages whose estimators take numeric input only (they validate X as floats).
_NUMERIC_FAMILIES = {
    "cluster", "covariance", "cross_decomposition", "decomposition", "discriminant_analysis",
    "ensemble", "gaussian_process", "isotonic", "kernel_approximation", "kernel_ridge",
    "linear_model", "manifold", "mixture", "naive_bayes", "neighbors", "neural_network",
    "random_projection", "semi_supervised", "svm", "tree",
}  # fmt: skip
_NUMERIC_PREPROCESSORS = {
    "Binarizer", "KBinsDiscretizer", "MaxAbsScaler", "MinMaxScaler", "Normalizer",
    "PolynomialFeatures", "PowerTransformer", "QuantileTransformer", "RobustScaler",
    "SplineTransformer", "StandardScaler",
}  # fmt: skip


def infer_schema(sample: Any, model: Any = None) -> dict[str, Any] | None:
    """Infer the input schema from a sample, else (``sample=None``) from the fitted model.

    Returns ``None`` when neither tells anything (model_server then accepts any rows).

    Raises:
        BundleError: The sample is neither a DataFrame nor a numeric array of rows.

    Example:
        >>> infer_schema(np.zeros((5, 20)))  # doctest: +SKIP
        {'kind': 'array', 'shape': [None, 20], 'dtype': 'float64'}
    """
    if sample is None:
        return None if model is None else schema_from_model(model)
    import numpy as np
    import pandas as pd

    if isinstance(sample, pd.DataFrame):
        return {
            "kind": "dataframe",
            "columns": [{"name": str(c), "dtype": str(t)} for c, t in sample.dtypes.items()],
        }
    try:
        arr = np.asarray(sample)
    except ValueError as exc:
        raise BundleError(
            f"cannot read the sample as an array ({exc}); pass a DataFrame or a 2-D array"
        ) from exc
    if arr.ndim == 0 or arr.dtype.kind not in "fiub":
        raise BundleError(
            f"sample must be a pandas DataFrame or a numeric array of rows, got {arr.dtype} with"
            f" shape {arr.shape}; pass e.g. X_test[:5]"
        )
    return {"kind": "array", "shape": [None, *arr.shape[1:]], "dtype": str(arr.dtype)}


def schema_from_model(model: Any) -> dict[str, Any] | None:
    """The input schema a fitted model remembers: named columns, or the width of its rows.

    Example:
        >>> schema_from_model(RandomForestClassifier().fit(frame, y))  # doctest: +SKIP
        {'kind': 'dataframe', 'columns': [{'name': 'age', 'dtype': 'float64'}, ...]}
    """
    names = _feature_names(model)
    if names:
        dtypes = _column_dtypes(model, names)
        return {
            "kind": "dataframe",
            "columns": [{"name": n, "dtype": dtypes.get(n, ANY)} for n in names],
        }
    width = _width(model)
    if width is None:
        return None
    numeric = _library(model) in ("xgboost", "lightgbm") or _numeric_estimator(_front(model))
    return {"kind": "array", "shape": [None, width], "dtype": _FLOAT if numeric else ANY}


# ---------------------------------------------------------------- names and width


def _attr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # fitted-only properties raise on unfitted models (sklearn, LightGBM)
        return None


def _library(model: Any) -> str:
    return type(model).__module__.split(".")[0]


def _strings(values: Any) -> list[str] | None:
    if values is None:
        return None
    names = list(values)
    return [str(n) for n in names] if names and all(isinstance(n, str) for n in names) else None


def _feature_names(model: Any) -> list[str] | None:
    names = _strings(_attr(model, "feature_names_in_"))
    if names is None and _library(model) == "xgboost":
        booster = _call(model, "get_booster")
        names = _strings(_attr(booster, "feature_names"))
    if names is None and _library(model) == "lightgbm":
        names = _strings(_attr(model, "feature_name_"))
        if names is None:
            names = _strings(_call(_attr(model, "booster_"), "feature_name"))
    if names and _library(model) == "lightgbm" and all(_LIGHTGBM_NAME.fullmatch(n) for n in names):
        return None  # LightGBM's names for an unnamed array
    return names


def _call(obj: Any, method: str) -> Any:
    fn = _attr(obj, method)
    if not callable(fn):
        return None
    try:
        return fn()
    except Exception:  # an unfitted model: it remembers nothing
        return None


def _width(model: Any) -> int | None:
    width = _attr(model, "n_features_in_")
    if width is None and _library(model) == "xgboost":
        width = _call(_call(model, "get_booster"), "num_features")
    if width is None and _library(model) == "lightgbm":
        width = _call(_attr(model, "booster_"), "num_feature")
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        return None
    return int(width)


# ---------------------------------------------------------------- dtypes


def _column_dtypes(model: Any, names: list[str]) -> dict[str, str]:
    library = _library(model)
    if library == "xgboost":
        types = _attr(_call(model, "get_booster"), "feature_types") or ["float"] * len(names)
        return {n: "category" if t == "c" else _FLOAT for n, t in zip(names, types, strict=False)}
    if library == "lightgbm":
        categorical = _lightgbm_categorical(model)
        return {n: "category" if i in categorical else _FLOAT for i, n in enumerate(names)}
    front = _front(model)
    if _attr(front, "transformers_") is not None:  # a ColumnTransformer
        return _column_transformer_dtypes(front, names, _numeric_after(model))
    found = _transformer_dtypes(front, len(names))
    if found is None and _numeric_estimator(front):
        found = [_FLOAT] * len(names)
    return dict(zip(names, found, strict=True)) if found else {}


def _front(model: Any) -> Any:
    """The object that first sees the input: a Pipeline's first step, a search's best model."""
    while True:
        steps = _attr(model, "steps")
        best = _attr(model, "best_estimator_")
        if isinstance(steps, list) and steps:
            live = [s[1] for s in steps if s[1] not in (None, "passthrough")]
            if not live:
                return model
            model = live[0]
        elif best is not None:
            model = best
        else:
            return model


def _numeric_after(model: Any) -> bool:
    """Whether every Pipeline step after the first takes numbers only (passthrough columns)."""
    steps = _attr(model, "steps")
    if not isinstance(steps, list) or len(steps) < 2:
        return False
    rest = [s[1] for s in steps[1:] if s[1] not in (None, "passthrough")]
    return bool(rest) and all(_numeric_estimator(s) for s in rest)


def _numeric_estimator(obj: Any) -> bool:
    """A scikit-learn estimator (or XGBoost/LightGBM model) that validates its input as numbers."""
    module = type(obj).__module__.split(".")
    if module[0] in ("xgboost", "lightgbm"):
        return True
    if module[0] != "sklearn" or len(module) < 2:
        return False
    if module[1] == "preprocessing":
        return type(obj).__name__ in _NUMERIC_PREPROCESSORS
    if module[1] not in _NUMERIC_FAMILIES:
        return False
    # Meta-estimators (voting, stacking, bagging...) accept what their inner models accept;
    # histogram boosting with categorical features takes pandas categories.
    params = _call(obj, "get_params") or {}
    wraps = any(params.get(a) is not None for a in ("estimator", "estimators", "base_estimator"))
    categorical = _attr(obj, "is_categorical_")
    return not wraps and not (categorical is not None and bool(categorical.any()))


def _kind_dtype(kind: str) -> str:
    if kind in "OUS":
        return _STRING
    return "bool" if kind == "b" else _FLOAT if kind in "iuf" else ANY


def _transformer_dtypes(obj: Any, count: int) -> list[str] | None:
    """Dtypes of the ``count`` columns a transformer receives, from what it learned; or None."""
    import numpy as np

    if obj is None or isinstance(obj, str):  # "passthrough", "drop"
        return None
    steps = _attr(obj, "steps")
    if isinstance(steps, list):  # a Pipeline inside a ColumnTransformer: its first step decides
        for _, step in steps:
            found = _transformer_dtypes(step, count)
            if found is not None:
                return found
        return None
    categories = _attr(obj, "categories_")
    if isinstance(categories, list) and len(categories) == count:
        return [_kind_dtype(np.asarray(c).dtype.kind) for c in categories]
    statistics = _attr(obj, "statistics_")
    if statistics is not None and np.asarray(statistics).size == count:
        return [_kind_dtype(np.asarray(statistics).dtype.kind)] * count
    if _attr(obj, "vocabulary_") is not None:  # a text vectorizer: one string column
        return [_STRING] * count
    if _numeric_estimator(obj):
        return [_FLOAT] * count
    return None


def _column_transformer_dtypes(
    transformer: Any, names: list[str], numeric_after: bool
) -> dict[str, str]:
    dtypes: dict[str, str] = {}
    # Where the fitted transformer resolved each entry's columns (callables included) to input
    # positions; older scikit-learn keeps only the selections as given.
    resolved = _attr(transformer, "_transformer_to_input_indices")
    for label, inner, columns in transformer.transformers_:
        if isinstance(resolved, dict) and label in resolved:
            selected = [names[int(i)] for i in resolved[label] if 0 <= int(i) < len(names)]
        else:
            selected = _selected(columns, names)
        if not selected:
            continue
        found = _transformer_dtypes(inner, len(selected))
        passed_through = inner == "passthrough" or label == "remainder"
        if found is None and passed_through and numeric_after:
            found = [_FLOAT] * len(selected)  # straight into steps that take numbers only
        for name, dtype in zip(selected, found or [ANY] * len(selected), strict=True):
            dtypes[name] = dtype
    return dtypes


def _selected(columns: Any, names: list[str]) -> list[str]:
    """The column names a ColumnTransformer entry selects (names, positions, mask or slice)."""
    import numpy as np

    if isinstance(columns, str):
        return [columns] if columns in names else []
    if isinstance(columns, int):
        return [names[columns]] if -len(names) <= columns < len(names) else []
    if isinstance(columns, slice):
        return (
            names[columns]
            if all(isinstance(b, int | None) for b in (columns.start, columns.stop))
            else []
        )
    try:
        items = list(columns)
    except TypeError:  # a callable selector: cannot be replayed here
        return []
    if items and all(isinstance(c, bool | np.bool_) for c in items):
        return [n for n, keep in zip(names, items, strict=False) if keep]
    if all(isinstance(c, int | np.integer) for c in items):
        return [names[int(c)] for c in items if -len(names) <= int(c) < len(names)]
    return [str(c) for c in items if str(c) in names]


def _lightgbm_categorical(model: Any) -> set[int]:
    booster = _attr(model, "booster_")
    if _attr(booster, "pandas_categorical") is None:
        return set()
    text = _call(booster, "model_to_string") or ""
    match = re.search(r"\[categorical_feature: ([\d,]*)\]", text)
    return {int(i) for i in match.group(1).split(",") if i} if match else set()
