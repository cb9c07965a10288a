"""model_server as a real process over real HTTP: every endpoint, every protocol, bad input.

Covers health and metadata routes, KServe v1 (instances, records, dataframe_split,
dataframe_records, ``parameters.method``), OIP v2 (per-column tensors with BYTES, one 2-D tensor,
requested outputs including ``predict`` and ``predict_proba`` together, binary tensors via
tritonclient), input validation (400 with the field named, as the Open Inference Protocol
answers a bad request; values overflowing the model's dtype included), 404/405/413 with ``Allow``
on a 405, mixed-method requests batched concurrently, the ``x-mlshift-version`` header on every
response, configuration via environment variables, and the /metrics families.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.fixtures.serving import ServerProcess

pytestmark = pytest.mark.slow


def _post(server: ServerProcess, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=10, **kw)


# ---------------------------------------------------------------- health and metadata


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/health/live", {"live": True}),
        ("/v2/health/ready", {"ready": True}),
        ("/v2/models/rf/ready", {"name": "rf", "ready": True}),
        ("/v1/models/rf", {"name": "rf", "ready": True}),
    ],
)
def test_health_routes(rf_server: ServerProcess, path: str, expected: dict[str, Any]) -> None:
    response = httpx.get(f"{rf_server.url}{path}")
    assert response.status_code == 200
    assert response.json() == expected
    assert response.headers["x-mlshift-version"] == "v1"


def test_server_and_model_metadata(rf_server: ServerProcess) -> None:
    server = httpx.get(f"{rf_server.url}/v2").json()
    assert server["name"] == "mlshift-model-server"
    model = httpx.get(f"{rf_server.url}/v2/models/rf").json()
    assert model["name"] == "rf"
    assert model["versions"] == ["v1"]
    assert model["platform"] == "mlshift-sklearn"
    assert model["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert model["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},  # the classes are int64
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]


def test_env_configures_name_port_and_version(frame_server: ServerProcess) -> None:
    response = httpx.get(f"{frame_server.url}/v2/models/churn/ready")
    assert response.status_code == 200
    assert response.headers["x-mlshift-version"] == "v2-canary"


# ---------------------------------------------------------------- v1


def test_v1_instances_match_in_process_predict(
    rf_server: ServerProcess, rf_model: Any, array_data: Any
) -> None:
    X = array_data[0][:7]
    response = _post(rf_server, "/v1/models/rf:predict", {"instances": X.tolist()})
    assert response.status_code == 200
    assert response.json() == {
        "predictions": rf_model.predict(X).tolist(),
        "model": "rf",
        "version": "v1",
    }


@pytest.mark.parametrize("form", ["instances", "records", "dataframe_split", "dataframe_records"])
def test_v1_dataframe_forms(
    frame_server: ServerProcess, pipeline_model: Any, frame_data: Any, form: str
) -> None:
    X: pd.DataFrame = frame_data[0][:6]
    records = X.to_dict(orient="records")
    body = {
        "instances": {"instances": X.to_numpy().tolist()},
        "records": {"instances": records},
        "dataframe_split": {
            "dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}
        },
        "dataframe_records": {"dataframe_records": records},
    }[form]
    response = _post(frame_server, "/v1/models/churn:predict", body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pipeline_model.predict(X).tolist()
    assert response.json()["version"] == "v2-canary"


# ---------------------------------------------------------------- v2


def test_v2_columns_with_bytes(
    frame_server: ServerProcess, pipeline_model: Any, frame_data: Any
) -> None:
    X: pd.DataFrame = frame_data[0][:5]
    body = {
        "id": "req-1",
        "inputs": [
            {"name": "tenure", "shape": [5], "datatype": "INT64", "data": X["tenure"].tolist()},
            {"name": "spend", "shape": [5, 1], "datatype": "FP64", "data": X["spend"].tolist()},
            {"name": "plan", "shape": [5], "datatype": "BYTES", "data": X["plan"].tolist()},
        ],
    }
    response = _post(frame_server, "/v2/models/churn/infer", body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["id"] == "req-1"
    assert doc["model_name"] == "churn"
    assert doc["outputs"][0]["name"] == "predict"
    assert doc["outputs"][0]["shape"] == [5]
    assert doc["outputs"][0]["data"] == pipeline_model.predict(X).tolist()


def test_v2_requested_predict_proba(
    rf_server: ServerProcess, rf_model: Any, array_data: Any
) -> None:
    X = array_data[0][:3]
    body = {
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": X.ravel().tolist()}],
        "outputs": [{"name": "predict_proba"}],
    }
    response = _post(rf_server, "/v2/models/rf/versions/v1/infer", body)
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["name"] == "predict_proba"
    assert out["shape"] == [3, 2]
    assert out["datatype"] == "FP64"
    np.testing.assert_allclose(np.reshape(out["data"], (3, 2)), rf_model.predict_proba(X))


def test_v2_predict_and_predict_proba_in_one_request(
    rf_server: ServerProcess, rf_model: Any, array_data: Any
) -> None:
    X = array_data[0][:3]
    body = {
        "id": "both",
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": X.ravel().tolist()}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    response = _post(rf_server, "/v2/models/rf/infer", body)
    assert response.status_code == 200, response.text
    predict, proba = response.json()["outputs"]
    assert (predict["name"], predict["shape"]) == ("predict", [3])
    assert predict["data"] == rf_model.predict(X).tolist()
    assert (proba["name"], proba["shape"]) == ("predict_proba", [3, 2])
    np.testing.assert_allclose(np.reshape(proba["data"], (3, 2)), rf_model.predict_proba(X))


@pytest.mark.parametrize("path", ["/v1/models/rf:predict", "/v2/models/rf/infer"])
def test_parameters_method_asks_for_probabilities(
    rf_server: ServerProcess, rf_model: Any, array_data: Any, path: str
) -> None:
    X = array_data[0][:2]
    if path.startswith("/v1"):
        body: dict[str, Any] = {"instances": X.tolist()}
    else:
        tensor = {"name": "x", "shape": [2, 4], "datatype": "FP64", "data": X.ravel().tolist()}
        body = {"inputs": [tensor]}
    response = _post(rf_server, path, {**body, "parameters": {"method": "predict_proba"}})
    assert response.status_code == 200, response.text
    doc = response.json()
    got = doc["predictions"] if path.startswith("/v1") else doc["outputs"][0]["data"]
    np.testing.assert_allclose(np.reshape(got, (2, 2)), rf_model.predict_proba(X))
    if path.startswith("/v1"):
        assert doc["classes"] == rf_model.classes_.tolist()  # the columns' labels


def test_concurrent_mixed_method_requests_each_get_their_own_outputs(
    rf_server: ServerProcess, rf_model: Any, array_data: Any
) -> None:
    import asyncio

    X = array_data[0]
    asked = [["predict"], ["predict", "predict_proba"], ["predict_proba"]] * 12

    async def one(client: httpx.AsyncClient, i: int, names: list[str]) -> dict[str, Any]:
        rows = X[i : i + 1 + i % 3]
        tensor = {
            "name": "x",
            "shape": list(rows.shape),
            "datatype": "FP64",
            "data": rows.ravel().tolist(),
        }
        body = {"inputs": [tensor], "outputs": [{"name": n} for n in names]}
        response = await client.post(f"{rf_server.url}/v2/models/rf/infer", json=body)
        assert response.status_code == 200, response.text
        return {o["name"]: o["data"] for o in response.json()["outputs"]}

    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await asyncio.gather(*(one(client, i, n) for i, n in enumerate(asked)))

    for i, (names, outputs) in enumerate(zip(asked, asyncio.run(run()), strict=True)):
        rows = X[i : i + 1 + i % 3]
        assert list(outputs) == names
        if "predict" in outputs:
            assert outputs["predict"] == rf_model.predict(rows).tolist()
        if "predict_proba" in outputs:
            np.testing.assert_allclose(
                outputs["predict_proba"], rf_model.predict_proba(rows).ravel()
            )


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infers(
    rf_server: ServerProcess, rf_model: Any, array_data: Any, binary: bool
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{rf_server.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("rf")
        X = array_data[0][10:14]
        tensor = triton.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X, binary_data=binary)
        result = client.infer("rf", [tensor])
        np.testing.assert_array_equal(result.as_numpy("predict"), rf_model.predict(X))
    finally:
        client.close()


# ---------------------------------------------------------------- bad input

_RF_BAD = [
    ("/v1/models/rf:predict", b"{not json", 400, "body"),
    ("/v1/models/rf:predict", {"rows": [[1, 2, 3, 4]]}, 400, "body"),
    ("/v1/models/rf:predict", {"instances": []}, 400, "instances"),
    ("/v1/models/rf:predict", {"instances": [[1.0, 2.0, 3.0]]}, 400, "instances"),
    ("/v1/models/rf:predict", {"instances": [[1.0, 2.0], [1.0]]}, 400, "instances"),
    ("/v1/models/rf:predict", {"instances": [["a", "b", "c", "d"]]}, 400, "instances"),
    ("/v1/models/rf:predict", {"instances": [{"a": 1}]}, 400, "instances"),
    (
        "/v2/models/rf/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3]}]},
        400,
        "x",
    ),
    (
        "/v2/models/rf/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]},
        400,
        "x",
    ),
    (
        "/v2/models/rf/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]},
        400,
        "x",
    ),
    (
        "/v2/models/rf/infer",
        {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "explain"}],
        },
        400,
        "outputs",
    ),
    (
        "/v2/models/rf/infer",
        {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}],
            "outputs": 5,
        },
        400,
        "outputs",
    ),
    (
        "/v2/models/rf/infer",
        {"inputs": [{"name": "h", "shape": [1, 4], "datatype": "FP16", "data": [7e4, 0, 0, 0]}]},
        400,
        "h",
    ),
    (
        "/v2/models/rf/infer",
        {"inputs": [{"name": "u", "shape": [1, 4], "datatype": "UINT8", "data": [300, 0, 0, 0]}]},
        400,
        "u",
    ),
    ("/v2/models/rf/infer", {"inputs": [{"name": "x", "shape": [1, 4]}]}, 400, "x"),
    ("/v2/models/rf/infer", {"inputs": 3}, 400, "inputs"),
    ("/v2/models/rf/infer", {"inputs": [], "id": 7}, 400, "inputs"),
    ("/v2/models/rf/infer", [1, 2], 400, "inputs"),
    ("/v1/models/rf:predict", {"instances": [[1, 2, 3, 4]], "parameters": 1}, 400, "parameters"),
    ("/v2/models/other/infer", {"inputs": []}, 404, "model"),
    ("/v1/models/other:predict", {"instances": [[1, 2, 3, 4]]}, 404, "model"),
    ("/nope", {}, 404, "path"),
]


@pytest.mark.parametrize(("path", "body", "status", "field"), _RF_BAD)
def test_bad_input_gets_4xx_naming_the_field(
    rf_server: ServerProcess, path: str, body: Any, status: int, field: str
) -> None:
    if isinstance(body, bytes):
        response = httpx.post(f"{rf_server.url}{path}", content=body)
    else:
        response = _post(rf_server, path, body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert response.json()["error"]
    assert response.headers["x-mlshift-version"] == "v1"


_FRAME_ROW = {"tenure": 3, "spend": 1.5, "plan": "pro"}


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        ({"tenure": 3, "spend": 1.5}, "plan", "missing"),
        ({**_FRAME_ROW, "age": 40}, "age", "unknown"),
        ({**_FRAME_ROW, "spend": "lots"}, "spend", "float64"),
        ({**_FRAME_ROW, "tenure": 2.5}, "tenure", "int64"),
        ({**_FRAME_ROW, "plan": 7}, "plan", "row 0"),
    ],
)
def test_dataframe_schema_errors(
    frame_server: ServerProcess, record: dict[str, Any], field: str, words: str
) -> None:
    response = _post(frame_server, "/v1/models/churn:predict", {"dataframe_records": [record]})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert words in response.json()["error"]


def test_v2_bytes_into_numeric_column_is_refused(frame_server: ServerProcess) -> None:
    body = {
        "inputs": [
            {"name": "tenure", "shape": [1], "datatype": "BYTES", "data": ["3"]},
            {"name": "spend", "shape": [1], "datatype": "FP64", "data": [1.0]},
            {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
        ]
    }
    response = _post(frame_server, "/v2/models/churn/infer", body)
    assert response.status_code == 400
    assert response.json()["field"] == "tenure"


def test_oversized_body_gets_413(rf_server: ServerProcess) -> None:
    rows = [[0.5, 0.5, 0.5, 0.5]] * 4000  # ~90 KB, over the 64 KiB limit this server has
    response = _post(rf_server, "/v1/models/rf:predict", {"instances": rows})
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert "MLSHIFT_MAX_BODY_BYTES" in response.json()["error"]
    assert httpx.get(f"{rf_server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/models/rf:predict", "POST"),
        ("PUT", "/v2/models/rf/infer", "POST"),
        ("GET", "/v2/models/rf/versions/v1/infer", "POST"),
        ("POST", "/v2/models/rf", "GET, HEAD"),
        ("DELETE", "/v2/health/ready", "GET, HEAD"),
        ("PATCH", "/v2", "GET, HEAD"),
    ],
)
def test_wrong_method_gets_405_with_allow(
    rf_server: ServerProcess, method: str, path: str, allow: str
) -> None:
    response = httpx.request(method, f"{rf_server.url}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["field"] == "method"


# ---------------------------------------------------------------- metrics


def test_metrics_families(rf_server: ServerProcess, array_data: Any) -> None:
    X = array_data[0][:4]
    assert _post(rf_server, "/v1/models/rf:predict", {"instances": X.tolist()}).status_code == 200
    _post(rf_server, "/v1/models/rf:predict", {"instances": [[1.0]]})
    response = httpx.get(f"{rf_server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    labels = 'model="rf",route="/v1/models/{m}:predict",version="v1"'
    assert f'mlshift_requests_total{{code="200",{labels}}}' in text
    assert f'mlshift_requests_total{{code="400",{labels}}}' in text
    assert f'mlshift_request_duration_seconds_bucket{{le="0.0001",{labels}}}' in text
    assert 'mlshift_batch_size_count{model="rf",version="v1"}' in text
    assert 'mlshift_predictions_total{class="0",model="rf",version="v1"}' in text
    assert "mlshift_prediction_value" not in text  # a classifier has no value histogram
