"""What model_server says about a model holds on the wire, checked against real server processes.

Model metadata announces each output with the datatype and shape responses actually carry
(scikit-learn classifiers with int and string labels, a regressor, XGBoost and LightGBM
classifiers, bundled without a sample, so the datatypes are derived from the model, and one
bundled with a sample, so they are recorded from it); a model bundled without a sample still has
its input schema (read from the fitted model), so a request missing a column is a 400 naming
it, not a 500 from ``predict``; the binary tensor data extension the server advertises works
both ways through tritonclient.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.fixtures.serving import ServerProcess, start_server

pytestmark = pytest.mark.slow

CASES = ["int-labels", "str-labels", "regressor", "xgboost", "lightgbm"]
SAMPLED = "str-labels"  # also bundled with a sample: datatypes recorded from running it
# What each model's responses carry: predict, then predict_proba (None: the model has none).
EXPECTED = {
    "int-labels": ("INT64", "FP64"),
    "str-labels": ("BYTES", "FP64"),
    "regressor": ("FP64", None),
    "xgboost": ("INT64", "FP32"),
    "lightgbm": ("INT64", "FP64"),
}


def _models(X: pd.DataFrame, y: np.ndarray[Any, Any]) -> dict[str, Any]:
    import lightgbm
    import xgboost
    from sklearn.linear_model import LinearRegression, LogisticRegression

    return {
        "int-labels": LogisticRegression().fit(X, y),
        "str-labels": LogisticRegression().fit(X, np.where(y == 1, "churn", "stay")),
        "regressor": LinearRegression().fit(X, X["spend"] * 2),
        "xgboost": xgboost.XGBClassifier(n_estimators=3, max_depth=2).fit(X, y),
        "lightgbm": lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(X, y),
    }


@pytest.fixture(scope="module")
def numeric_frame(frame_data: Any) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    X, y = frame_data
    return X[["tenure", "spend"]].astype("float64"), y


@pytest.fixture(scope="module")
def truth_servers(
    tmp_path_factory: pytest.TempPathFactory, numeric_frame: Any, server_logs: Path
) -> Iterator[dict[tuple[str, bool], tuple[ServerProcess, Any]]]:
    """Every case bundled without a sample, and one with, each served by its own process.

    The processes start (and stop) side by side: each takes seconds to import its libraries.
    """
    from mlshift._bundle import write_bundle

    X, y = numeric_frame
    root = tmp_path_factory.mktemp("truth")
    servers: dict[tuple[str, bool], tuple[ServerProcess, Any]] = {}
    try:
        for key, model in _models(X, y).items():
            for with_sample in (False, True) if key == SAMPLED else (False,):
                dest = root / f"{key}-{with_sample}"
                sample = X[:5] if with_sample else None
                write_bundle(model, "v1", sample=sample, dest=dest, name="m")
                server = start_server(dest, server_logs, wait=False)
                servers[key, with_sample] = (server, model)
        for server, _ in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server, _ in servers.values():
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server, _ in servers.values():
            server.stop()


@pytest.mark.parametrize(("case", "with_sample"), [*((c, False) for c in CASES), (SAMPLED, True)])
def test_metadata_outputs_are_what_responses_carry(
    truth_servers: Any, numeric_frame: Any, case: str, with_sample: bool
) -> None:
    server, model = truth_servers[case, with_sample]
    X = numeric_frame[0][:4]
    metadata = httpx.get(f"{server.url}/v2/models/m").json()
    announced = {o["name"]: o for o in metadata["outputs"]}
    predict, proba = EXPECTED[case]
    assert announced["predict"]["datatype"] == predict
    assert ("predict_proba" in announced) == (proba is not None)
    inputs = [
        {"name": c, "shape": [4], "datatype": "FP64", "data": X[c].tolist()} for c in X.columns
    ]
    body = {"inputs": inputs, "outputs": [{"name": n} for n in announced]}
    response = httpx.post(f"{server.url}/v2/models/m/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    for output in response.json()["outputs"]:
        said = announced[output["name"]]
        assert output["datatype"] == said["datatype"], output["name"]
        assert len(output["shape"]) == len(said["shape"])
        assert all(s in (-1, o) for s, o in zip(said["shape"], output["shape"], strict=True))
    assert response.json()["outputs"][0]["data"] == model.predict(X).tolist()


@pytest.fixture(scope="module")
def sampleless_pipeline_server(
    tmp_path_factory: pytest.TempPathFactory, pipeline_model: Any, server_logs: Path
) -> Iterator[ServerProcess]:
    """The churn Pipeline (one-hot ``plan`` + passthrough numbers) bundled without a sample."""
    from mlshift._bundle import write_bundle

    dest = tmp_path_factory.mktemp("bundles") / "churn-nosample"
    write_bundle(pipeline_model, "v1", dest=dest, name="churn")
    server = start_server(dest, server_logs)
    try:
        yield server
    finally:
        server.stop()


def test_pipeline_without_sample_announces_its_columns(
    sampleless_pipeline_server: ServerProcess,
) -> None:
    metadata = httpx.get(f"{sampleless_pipeline_server.url}/v2/models/churn").json()
    assert metadata["inputs"] == [
        {"name": "tenure", "datatype": "FP64", "shape": [-1]},
        {"name": "spend", "datatype": "FP64", "shape": [-1]},
        {"name": "plan", "datatype": "BYTES", "shape": [-1]},
    ]


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_missing_column_is_400_naming_it_before_predict(
    sampleless_pipeline_server: ServerProcess, protocol: str
) -> None:
    url = sampleless_pipeline_server.url
    if protocol == "v1":
        body: dict[str, Any] = {"dataframe_records": [{"tenure": 3, "spend": 20.5}]}
        response = httpx.post(f"{url}/v1/models/churn:predict", json=body)
    else:
        tensors = [
            {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [3]},
            {"name": "spend", "shape": [1], "datatype": "FP64", "data": [20.5]},
        ]
        response = httpx.post(f"{url}/v2/models/churn/infer", json={"inputs": tensors})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "plan"
    assert "column 'plan' is missing" in response.json()["error"]
    assert "model raised" not in response.json()["error"]


def test_pipeline_without_sample_still_predicts(
    sampleless_pipeline_server: ServerProcess, pipeline_model: Any, frame_data: Any
) -> None:
    X: pd.DataFrame = frame_data[0][:5]
    body = {"dataframe_records": X.to_dict(orient="records")}
    response = httpx.post(f"{sampleless_pipeline_server.url}/v1/models/churn:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pipeline_model.predict(X).tolist()


def test_binary_tensor_data_is_advertised_and_works_both_ways(
    truth_servers: Any, numeric_frame: Any
) -> None:
    import tritonclient.http as triton

    server, model = truth_servers[SAMPLED, True]
    metadata = httpx.get(f"{server.url}/v2").json()
    assert metadata["extensions"] == ["binary_tensor_data"]
    X = numeric_frame[0][:3]
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        inputs = []
        for column in X.columns:
            tensor = triton.InferInput(column, [3], "FP64")
            tensor.set_data_from_numpy(X[column].to_numpy(), binary_data=True)
            inputs.append(tensor)
        outputs = [
            triton.InferRequestedOutput("predict", binary_data=True),
            triton.InferRequestedOutput("predict_proba", binary_data=False),
        ]
        result = client.infer("m", inputs, outputs=outputs)
        sent = {o["name"]: o for o in result.get_response()["outputs"]}
        assert "binary_data_size" in sent["predict"]["parameters"]
        assert "data" in sent["predict_proba"]
        labels = [v.decode() for v in result.as_numpy("predict")]
        assert labels == model.predict(X).tolist()
        np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(X))
    finally:
        client.close()
