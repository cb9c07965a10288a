"""Bundles: round trips for every flavor, digest tampering, schema inference, version warnings.

Schema inference covers samples and, without one, what the fitted model remembers (feature
names of estimators, Pipelines, XGBoost and LightGBM; the width of unnamed arrays); the output
datatypes recorded for model metadata are checked for classifiers with int and string labels,
a regressor, XGBoost and LightGBM.

Writes bundles into pytest's tmp_path and reads them back with model_server's reader; no
network, no processes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlshift._bundle import (
    BundleInfo,
    as_bundle,
    bundle,
    detect_requirements,
    infer_schema,
    read_bundle,
    write_bundle,
)
from mlshift._exceptions import BundleError, DigestMismatchError, InvalidNameError
from model_server._bundle import check_requirements, load_bundle, read_manifest
from model_server._errors import BundleReadError, DigestMismatch
from tests.fixtures.serving import EchoModel


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 5))
    return X, (X[:, 0] > 0).astype(np.int64)


def _models(X: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> dict[str, Any]:
    import lightgbm
    import xgboost
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "sklearn-forest": RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y),
        "sklearn-pipeline": make_pipeline(StandardScaler(), Ridge()).fit(X, X[:, 1]),
        "xgboost": xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y),
        "lightgbm": lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, X[:, 2]),
        "pyfunc": EchoModel(),
    }


@pytest.mark.slow  # first use of xgboost and lightgbm imports them (~2-5 s)
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sklearn-forest", ("sklearn", "skops", "scikit-learn")),
        ("sklearn-pipeline", ("sklearn", "skops", "scikit-learn")),
        ("xgboost", ("xgboost", "skops", "xgboost")),
        ("lightgbm", ("lightgbm", "skops", "lightgbm")),
        ("pyfunc", ("pyfunc", "cloudpickle", "numpy")),
    ],
)
def test_round_trip_every_flavor(
    tmp_path: Path, data: Any, kind: str, expected: tuple[str, str, str]
) -> None:
    flavor, serializer, library = expected
    X, y = data
    model = _models(X, y)[kind]
    trust = kind == "pyfunc"  # a class of the tests' own: only a pickle holds it
    info = write_bundle(
        model, "v1", sample=X[:5], dest=tmp_path / kind, name="m", trust_pickle=trust
    )
    assert (info.flavor, info.serializer) == (flavor, serializer)
    if kind != "pyfunc":  # EchoModel holds no numpy objects: nothing to require
        assert _distribution(library) in info.requirements
    manifest = read_manifest(info.path)
    assert manifest["sha256"] == info.sha256
    assert manifest["format_version"] == 1
    assert manifest["python"].count(".") == 2
    loaded = load_bundle(info.path, trust_pickle=trust)
    np.testing.assert_allclose(loaded.model.predict(X), model.predict(X))


def test_manifest_fields_for_a_classifier(tmp_path: Path, data: Any) -> None:
    X, y = data
    info = write_bundle(_models(X, y)["sklearn-forest"], "v2", sample=X[:3], dest=tmp_path / "b")
    m = info.manifest
    assert m["output"] == {
        "method": "predict",
        "task": "classification",
        "classes": [0, 1],
        "tensors": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
        ],
    }
    assert m["input_schema"] == {"kind": "array", "shape": [None, 5], "dtype": "float64"}
    assert m["requirements"]["scikit-learn"].count(".") >= 1
    assert m["version"] == "v2"
    assert m["file"] == "model.skops"
    assert set(m["trusted_types"]) >= {"sklearn.tree._tree.Tree"}


def test_regressor_buckets_come_from_the_sample(tmp_path: Path, data: Any) -> None:
    X, _ = data
    info = write_bundle(EchoModel(), "v1", sample=X[:10], dest=tmp_path / "b", trust_pickle=True)
    buckets = info.manifest["output"]["buckets"]
    assert buckets == sorted(buckets)
    assert buckets[0] < X[:10, 0].min() and buckets[-1] > X[:10, 0].max()
    assert info.manifest["output"]["task"] == "regression"


def test_dataframe_schema_inference() -> None:
    frame = pd.DataFrame(
        {"age": [30, 40], "income": [1.5, 2.5], "plan": ["a", "b"], "vip": [True, False]}
    )
    schema = infer_schema(frame)
    assert schema is not None
    assert schema["kind"] == "dataframe"
    dtypes = {c["name"]: c["dtype"] for c in schema["columns"]}
    assert dtypes["age"] == "int64"
    assert dtypes["income"] == "float64"
    assert dtypes["vip"] == "bool"
    assert dtypes["plan"] in ("object", "str", "string")


def test_array_schema_inference_and_refusals() -> None:
    assert infer_schema([[1, 2, 3]]) == {"kind": "array", "shape": [None, 3], "dtype": "int64"}
    assert infer_schema(None) is None
    with pytest.raises(BundleError, match="numeric array"):
        infer_schema([["a", "b"]])


def test_tampered_model_file_is_refused(tmp_path: Path, data: Any) -> None:
    X, y = data
    info = write_bundle(_models(X, y)["sklearn-forest"], "v1", dest=tmp_path / "b")
    model_file = info.path / info.manifest["file"]
    model_file.write_bytes(model_file.read_bytes()[:-1] + b"x")
    with pytest.raises(DigestMismatch, match="refusing to load"):
        load_bundle(info.path)
    with pytest.raises(DigestMismatchError, match="sha256"):
        read_bundle(info.path)
    with pytest.raises(DigestMismatchError):
        as_bundle(info, "v1")


def test_as_bundle_reads_existing_bundles_without_rewriting(tmp_path: Path) -> None:
    info = bundle(EchoModel(), "v1", sample=[[1.0, 2.0]], path=tmp_path / "b", trust_pickle=True)
    assert isinstance(info, BundleInfo)
    stamp = (info.path / "mlshift.json").stat().st_mtime_ns
    again = as_bundle(str(info.path), "v1")
    assert again.sha256 == info.sha256
    assert as_bundle(info, "v1").manifest == info.manifest
    assert (info.path / "mlshift.json").stat().st_mtime_ns == stamp
    fresh = as_bundle(EchoModel(), "v2", dest=tmp_path / "c", trust_pickle=True)
    assert fresh.manifest["version"] == "v2"


def test_rewriting_a_bundle_replaces_it(tmp_path: Path) -> None:
    first = write_bundle(EchoModel(), "v1", dest=tmp_path / "b", trust_pickle=True)
    second = write_bundle(EchoModel(delay_s=0.5), "v1", dest=tmp_path / "b", trust_pickle=True)
    assert first.sha256 != second.sha256
    assert read_bundle(tmp_path / "b").sha256 == second.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp dirs left behind


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(InvalidNameError):
        write_bundle(EchoModel(), "V_1", dest=tmp_path / "b", trust_pickle=True)
    with pytest.raises(BundleError, match="no predict"):
        write_bundle(object(), "v1", dest=tmp_path / "b")
    with pytest.raises(BundleError, match="not a bundle"):
        as_bundle(tmp_path, "v1")
    with pytest.raises(BundleError, match="predict\\(sample\\) failed"):
        write_bundle(
            EchoModel(fail_below=10.0), "v1", sample=[[1.0]], dest=tmp_path / "c", trust_pickle=True
        )
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a bundle"):
        write_bundle(EchoModel(), "v1", dest=tmp_path / "junk", trust_pickle=True)
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


def test_manifest_problems_are_named(tmp_path: Path) -> None:
    info = write_bundle(EchoModel(), "v1", dest=tmp_path / "b", trust_pickle=True)
    path = info.path / "mlshift.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(BundleReadError, match="upgrade model_server"):
        read_manifest(info.path)
    path.write_text("{")
    with pytest.raises(BundleReadError, match="not valid JSON"):
        read_manifest(info.path)
    with pytest.raises(BundleReadError, match="no mlshift.json"):
        read_manifest(tmp_path)


def test_newer_library_warns_by_name() -> None:
    manifest = {"requirements": {"scikit-learn": "999.0", "numpy": "0.1", "no-such-dist": "1.0"}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages = check_requirements(manifest)
    assert len(messages) == 2
    assert any("scikit-learn 999.0" in m for m in messages)
    assert any("no-such-dist" in m and "not installed" in m for m in messages)
    assert len(caught) == 2


def _distribution(module_or_dist: str) -> str:
    """The installed distribution that provides a module (``xgboost`` comes as ``xgboost`` or
    ``xgboost-cpu``), or the name itself when it already is one."""
    from importlib import metadata

    owners = metadata.packages_distributions().get(module_or_dist)
    return owners[0] if owners else module_or_dist


def test_requirements_are_detected_not_listed(data: Any) -> None:
    import xgboost

    X, y = data
    found = detect_requirements(xgboost.XGBClassifier(n_estimators=2).fit(X, y))
    # What pip installed the module as: the image installs the same distribution.
    assert found[_distribution("xgboost")] == xgboost.__version__
    assert "lightgbm" not in found
    assert "pandas" not in found


def test_the_same_model_gives_the_same_digest(tmp_path: Path) -> None:
    """skops names files after id() and stamps times; bundles must still repeat exactly."""

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from model_server._bundle import load_bundle

    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=4)).fit(X, y)
    first = write_bundle(model, "v1", dest=tmp_path / "a")
    second = write_bundle(model, "v1", dest=tmp_path / "b")
    assert first.serializer == "skops"
    assert first.sha256 == second.sha256
    assert (load_bundle(second.path).model.predict(X) == model.predict(X)).all()


# ---------------------------------------------------------------- without a sample


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(5)
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 60, size=80),
            "spend": rng.normal(50, 10, size=80),
            "plan": rng.choice(["basic", "pro"], size=80).astype(object),
        }
    )
    return X, (X["tenure"] > 30).to_numpy().astype(np.int64)


def _columns(info: BundleInfo) -> list[tuple[str, str]]:
    schema = info.manifest["input_schema"]
    assert schema["kind"] == "dataframe"
    return [(c["name"], c["dtype"]) for c in schema["columns"]]


def test_pipeline_without_sample_records_its_columns(tmp_path: Path, frame: Any) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X, y = frame
    prep = ColumnTransformer([("plan", OneHotEncoder(), ["plan"])], remainder="passthrough")
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=300))]).fit(X, y)
    info = write_bundle(model, "v1", dest=tmp_path / "b")
    assert sorted(_columns(info)) == [
        ("plan", "object"),
        ("spend", "float64"),
        ("tenure", "float64"),
    ]


def test_estimators_without_sample_record_names_or_width(tmp_path: Path, frame: Any) -> None:
    from sklearn.ensemble import RandomForestRegressor

    X, y = frame
    numeric = X[["tenure", "spend"]]
    named = write_bundle(
        RandomForestRegressor(n_estimators=3).fit(numeric, y), "v1", dest=tmp_path / "a"
    )
    assert _columns(named) == [("tenure", "float64"), ("spend", "float64")]
    unnamed = RandomForestRegressor(n_estimators=3).fit(numeric.to_numpy(), y)
    info = write_bundle(unnamed, "v1", dest=tmp_path / "b")
    assert info.manifest["input_schema"] == {
        "kind": "array",
        "shape": [None, 2],
        "dtype": "float64",
    }
    assert (
        write_bundle(EchoModel(), "v1", dest=tmp_path / "c", trust_pickle=True).manifest[
            "input_schema"
        ]
        is None
    )


def test_columns_of_unknown_dtype_take_any_value_and_need_format_2(
    tmp_path: Path, frame: Any
) -> None:
    from sklearn.dummy import DummyClassifier

    X, y = frame
    model = DummyClassifier().fit(X, y)  # takes any columns, so nothing says their dtypes
    info = write_bundle(model, "v1", dest=tmp_path / "b")
    assert _columns(info) == [("tenure", "any"), ("spend", "any"), ("plan", "any")]
    assert info.manifest["format_version"] == 2  # format-1 readers do not know "any"
    loaded = load_bundle(info.path).model
    assert loaded.predict(X[:2]).tolist() == model.predict(X[:2]).tolist()
    numeric = write_bundle(
        DummyClassifier().fit(X[["tenure"]].to_numpy(), y), "v1", dest=tmp_path / "c"
    )
    assert numeric.manifest["input_schema"]["dtype"] == "any"
    assert (
        write_bundle(EchoModel(), "v1", dest=tmp_path / "d", trust_pickle=True).manifest[
            "format_version"
        ]
        == 1
    )


@pytest.mark.slow  # first use of xgboost and lightgbm imports them (~2-5 s)
def test_boosters_without_sample_record_their_feature_names(tmp_path: Path, frame: Any) -> None:
    import lightgbm
    import xgboost

    X, y = frame
    numeric = X[["tenure", "spend"]]
    with_categories = X.assign(plan=X["plan"].astype("category"))
    cases = {
        "xgb": (xgboost.XGBClassifier(n_estimators=2), numeric),
        "xgb-cat": (
            xgboost.XGBClassifier(n_estimators=2, enable_categorical=True),
            with_categories,
        ),
        "lgbm": (lightgbm.LGBMClassifier(n_estimators=2, verbose=-1), numeric),
        "lgbm-cat": (lightgbm.LGBMClassifier(n_estimators=2, verbose=-1), with_categories),
    }
    for key, (model, data) in cases.items():
        info = write_bundle(model.fit(data, y), "v1", dest=tmp_path / key)
        expected = [(c, "category" if c == "plan" else "float64") for c in data.columns]
        assert _columns(info) == expected, key
    for key, model in {
        "xgb-array": xgboost.XGBRegressor(n_estimators=2),
        "lgbm-array": lightgbm.LGBMRegressor(n_estimators=2, verbose=-1),  # names Column_<i>
    }.items():
        info = write_bundle(model.fit(numeric.to_numpy(), y), "v1", dest=tmp_path / key)
        assert info.manifest["input_schema"] == {
            "kind": "array",
            "shape": [None, 2],
            "dtype": "float64",
        }, key


@pytest.mark.slow  # xgboost and lightgbm
@pytest.mark.parametrize("with_sample", [True, False])
def test_output_datatypes_are_recorded(tmp_path: Path, frame: Any, with_sample: bool) -> None:
    import lightgbm
    import xgboost
    from sklearn.linear_model import LinearRegression, LogisticRegression

    X, y = frame
    numeric = X[["tenure", "spend"]]
    cases = {
        "int-labels": (LogisticRegression().fit(numeric, y), "INT64", "FP64"),
        "str-labels": (
            LogisticRegression().fit(numeric, np.where(y, "yes", "no")),
            "BYTES",
            "FP64",
        ),
        "regressor": (LinearRegression().fit(numeric, y * 1.5), "FP64", None),
        "xgboost": (xgboost.XGBClassifier(n_estimators=2).fit(numeric, y), "INT64", "FP32"),
        "lightgbm": (
            lightgbm.LGBMClassifier(n_estimators=2, verbose=-1).fit(numeric, y),
            "INT64",
            "FP64",
        ),
    }
    for key, (model, predict, proba) in cases.items():
        sample = numeric[:4] if with_sample else None
        info = write_bundle(model, "v1", sample=sample, dest=tmp_path / key)
        tensors = {t["name"]: t for t in info.manifest["output"]["tensors"]}
        assert tensors["predict"] == {"name": "predict", "datatype": predict, "shape": [-1]}, key
        if proba is None:
            assert "predict_proba" not in tensors, key
        else:
            assert tensors["predict_proba"] == {
                "name": "predict_proba",
                "datatype": proba,
                "shape": [-1, 2],
            }, key
