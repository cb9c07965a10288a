"""``ep.predict`` / ``ep.send`` request code against real loopback HTTP servers.

A deliberately slow server checks that background traffic never queues more than
``concurrency`` requests (it skips instead), so a run against a struggling endpoint still
ends when its duration is up; a normal server checks pacing, bodies and version reporting,
and how ``method="predict_proba"`` answers are turned into one column per class.

Real ``model_server`` processes serving scikit-learn Pipelines on mixed-dtype DataFrames
check that rows go as the user has them (a frame of ints and floats, a list of dicts) and
that ``predict_proba`` comes back with the model's probabilities; one slow test runs the
README's calls through the facade on the local mesh (Envoy in front).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mlshift
from mlshift import MlshiftError
from mlshift._client import TrafficRun, predict
from tests.fixtures.serving import ServerProcess, start_server


class _Handler(http.server.BaseHTTPRequestHandler):
    delay = 0.0
    bodies: list[dict[str, object]] = []  # noqa: RUF012 (shared on purpose: the test reads it)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        time.sleep(self.delay)
        rows = body.get("instances") or body["dataframe_split"]["data"]
        asked = (body.get("parameters") or {}).get("method", "predict")
        if asked == "predict_proba" and not self.path.startswith("/v1/models/old"):
            predictions: list[Any] = [[0.25, 0.75] for _ in rows]  # an old server ignores it
        else:
            predictions = [len(r) for r in rows]
        self._answer(500 if self.path.startswith("/v1/models/broken") else 200, predictions)

    def do_GET(self) -> None:
        """Model metadata of a version; model "labelled" names its classes."""
        doc: dict[str, Any] = {"name": self.path.split("/")[3], "outputs": []}
        if self.path == "/v2/models/labelled/versions/v7":
            doc["parameters"] = {"classes": ["no", "yes"]}
        self._answer(200, doc)

    def _answer(self, status: int, doc: Any) -> None:
        out = json.dumps(doc if isinstance(doc, dict) else {"predictions": doc}).encode()
        self.send_response(status)
        self.send_header("x-mlshift-version", "v7")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _serve(delay: float) -> Iterator[str]:
    handler = type("H", (_Handler,), {"delay": delay, "bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fast_url() -> Iterator[str]:
    yield from _serve(0.0)


@pytest.fixture
def slow_url() -> Iterator[str]:
    yield from _serve(0.5)


def test_predict_reports_the_version_and_sends_dataframes_split(fast_url: str) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]})
    out = predict(fast_url, "churn", frame)
    assert list(out["prediction"]) == [2, 2]
    assert set(out["version"]) == {"v7"}
    with pytest.raises(MlshiftError, match="answered 500 \\(version v7\\)"):
        predict(fast_url, "broken", frame)
    with pytest.raises(MlshiftError, match="could not reach"):
        predict("http://127.0.0.1:9", "churn", frame, timeout=1)


@pytest.mark.serial  # paced sends: counts need the machine to itself
def test_send_paces_requests_one_row_each(fast_url: str) -> None:
    run = TrafficRun(fast_url, "churn", np.ones((7, 3)), rps=100, duration=1.0).wait(10)
    assert not run.running
    results = run.results
    assert 80 <= len(results) <= 110
    assert set(results["status"]) == {200}
    assert run.summary().loc["v7", "requests"] == len(results)
    assert run.skipped == 0


def test_a_slow_endpoint_gets_skipped_sends_not_a_queue(slow_url: str) -> None:
    run = TrafficRun(slow_url, "churn", np.ones((3, 2)), rps=100, duration=1.0, concurrency=4)
    run.wait(10)
    assert not run.running  # a queue of ~100 sends at 0.5 s on 4 workers would take ~12 s
    assert len(run.results) <= 4 * 3
    assert run.skipped >= 80


def test_predict_proba_names_columns_by_class_when_the_version_says(fast_url: str) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    labelled = predict(fast_url, "labelled", frame, method="predict_proba")
    assert list(labelled.columns) == ["no", "yes", "version"]
    assert labelled["yes"].tolist() == [0.75, 0.75]
    unnamed = predict(fast_url, "churn", frame, method="predict_proba")
    assert list(unnamed.columns) == [0, 1, "version"]
    with pytest.raises(MlshiftError, match="ignores method='predict_proba'"):
        predict(fast_url, "old", frame, method="predict_proba")
    with pytest.raises(ValueError, match="method must be one of"):
        predict(fast_url, "churn", frame, method="decision_function")


# ---------------------------------------------------------------- real model servers


@pytest.fixture(scope="module")
def numeric_data() -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    """Ints and floats only: the frame numpy would turn into one float64 array."""
    rng = np.random.default_rng(3)
    n = 200
    X = pd.DataFrame({"tenure": rng.integers(0, 72, size=n), "spend": rng.normal(60, 20, size=n)})
    y = np.where((X["tenure"] > 30) ^ (X["spend"] > 70), "stay", "churn")
    return X, y


@pytest.fixture(scope="module")
def numeric_model(numeric_data: tuple[pd.DataFrame, np.ndarray[Any, Any]]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = numeric_data
    prep = ColumnTransformer([("spend", StandardScaler(), ["spend"])], remainder="passthrough")
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)


@pytest.fixture(scope="module")
def numeric_server(
    tmp_path_factory: pytest.TempPathFactory,
    server_logs: Path,
    numeric_model: Any,
    numeric_data: tuple[pd.DataFrame, np.ndarray[Any, Any]],
) -> Iterator[ServerProcess]:
    """The int/float Pipeline, bundled with a sample, on a real model_server."""
    path = tmp_path_factory.mktemp("bundles") / "numeric"
    mlshift.bundle(numeric_model, "v1", sample=numeric_data[0][:5], path=path)
    server = start_server(path, server_logs)
    try:
        yield server
    finally:
        server.stop()


def test_a_frame_of_ints_and_floats_is_predicted_as_it_is(
    numeric_server: ServerProcess,
    numeric_model: Any,
    numeric_data: tuple[pd.DataFrame, np.ndarray[Any, Any]],
) -> None:
    X = numeric_data[0][:3]
    out = predict(numeric_server.url, "model", X)
    assert out["prediction"].tolist() == numeric_model.predict(X).tolist()
    assert set(out["version"]) == {"v1"}


def test_a_list_of_dicts_is_a_list_of_rows(
    frame_server: ServerProcess,
    pipeline_model: Any,
    frame_data: tuple[pd.DataFrame, np.ndarray[Any, Any]],
) -> None:
    X = frame_data[0][:4]
    out = predict(frame_server.url, "churn", X.to_dict(orient="records"))
    assert out["prediction"].tolist() == pipeline_model.predict(X).tolist()
    one = predict(frame_server.url, "churn", X.iloc[0].to_dict())
    assert one["prediction"].tolist() == pipeline_model.predict(X[:1]).tolist()


def test_predict_proba_gives_one_column_per_class(
    frame_server: ServerProcess,
    pipeline_model: Any,
    frame_data: tuple[pd.DataFrame, np.ndarray[Any, Any]],
) -> None:
    X = frame_data[0][:5]
    out = predict(frame_server.url, "churn", X, method="predict_proba")
    assert list(out.columns) == [*pipeline_model.classes_.tolist(), "version"]  # [0, 1, ...]
    np.testing.assert_allclose(out[[0, 1]].to_numpy(), pipeline_model.predict_proba(X))
    assert set(out["version"]) == {"v2-canary"}


def test_predict_proba_columns_are_the_class_labels(
    numeric_server: ServerProcess,
    numeric_model: Any,
    numeric_data: tuple[pd.DataFrame, np.ndarray[Any, Any]],
) -> None:
    out = predict(numeric_server.url, "model", numeric_data[0][:2], method="predict_proba")
    assert list(out.columns) == ["churn", "stay", "version"]


def test_send_can_ask_for_probabilities(
    numeric_server: ServerProcess, numeric_data: tuple[pd.DataFrame, np.ndarray[Any, Any]]
) -> None:
    X = numeric_data[0][:10]
    run = TrafficRun(numeric_server.url, "model", X, rps=40, duration=0.5, method="predict_proba")
    results = run.wait(10).results
    assert len(results) >= 10
    assert set(results["status"]) == {200}


@pytest.mark.slow
def test_the_readme_calls_through_the_local_mesh(
    tmp_path: Path,
    pipeline_model: Any,
    frame_data: tuple[pd.DataFrame, np.ndarray[Any, Any]],
) -> None:
    """``ep.predict(X_test[:3])``, records and ``predict_proba`` via Envoy, and ``ep.send``."""
    X_test = frame_data[0][100:110]
    ep = mlshift.Endpoint("churn", mlshift.Local(tmp_path / "home"))
    try:
        ep.deploy(pipeline_model, "v1", sample=X_test[:5])
        out = ep.predict(X_test[:3])
        assert out["prediction"].tolist() == pipeline_model.predict(X_test[:3]).tolist()
        assert set(out["version"]) == {"v1"}
        records = ep.predict(X_test[:3].to_dict(orient="records"))
        assert records["prediction"].tolist() == out["prediction"].tolist()
        proba = ep.predict(X_test[:3], method="predict_proba")
        np.testing.assert_allclose(
            proba[[0, 1]].to_numpy(), pipeline_model.predict_proba(X_test[:3])
        )
        run = ep.send(X_test, rps=40, duration="1s", method="predict_proba").wait(15)
        assert set(run.results["status"]) == {200}
    finally:
        ep.delete()
