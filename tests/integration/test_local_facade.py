"""The notebook verbs end to end on the real local mesh (Envoy + model_server processes).

Covers what a user types: ``mlshift.endpoint`` / ``deploy`` / ``predict`` / ``send`` /
``shift`` / ``metrics`` / ``predictions`` / ``promote`` / ``rollback`` / ``remove`` /
``delete``, reattaching from a fresh ``Endpoint``, and the automated canary promoting a
healthy version and rolling back a failing one while real traffic flows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import mlshift
from mlshift.local import Local

pytestmark = [pytest.mark.slow, pytest.mark.serial]


class Fragile:
    """A classifier that answers 500 (raises) for rows whose first feature is above 0."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict(self, X: Any) -> Any:
        rows = np.asarray(X, dtype=float)
        if (rows[:, 0] > 0).any():
            raise ValueError("feature 0 above 0 is not supported by this refactor")
        return self.model.predict(rows)


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 4))
    y = (X[:, 1] + X[:, 2] > 0).astype(int)
    return X, y


@pytest.fixture
def ep(tmp_path: Path, data: tuple[Any, Any]) -> Iterator[mlshift.Endpoint]:
    X, y = data
    endpoint = mlshift.endpoint("churn", target=Local(state_dir=tmp_path))
    try:
        endpoint.deploy(LogisticRegression().fit(X, y), "v1", sample=X[:5])
        endpoint.deploy(LogisticRegression(C=0.01).fit(X, y), "v2", sample=X[:5])
        yield endpoint
    finally:
        pids = list(endpoint.engine.pids().values())  # type: ignore[attr-defined]
        endpoint.delete()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_the_notebook_flow(ep: mlshift.Endpoint, data: tuple[Any, Any], tmp_path: Path) -> None:
    X, _ = data
    assert ep.weights == {"v1": 100, "v2": 0}
    assert set(ep.predict(X[:4])["version"]) == {"v1"}
    ep.shift({"v1": 50, "v2": 50})
    run = ep.send(X, rps=200, duration="2s").wait()
    summary = run.summary()
    assert summary["requests"].sum() >= 300
    assert summary["errors"].sum() == 0
    assert abs(summary.loc["v2", "share"] - 0.5) < 0.12
    frame = ep.metrics(since="30s", step="1s")
    per_version = frame.groupby("version")["requests"].sum()
    assert per_version.sum() == pytest.approx(summary["requests"].sum(), rel=0.05)
    preds = ep.predictions()
    assert set(preds["version"]) == {"v1", "v2"}
    assert preds.attrs["divergence"] == "tvd"

    # A second notebook (a fresh Endpoint) sees the same state and history.
    other = mlshift.Endpoint("churn", Local(state_dir=tmp_path))
    assert other.status()["weight"].to_dict() == {"v1": 50, "v2": 50}
    other.promote("v2")
    ep.rollback()
    assert ep.weights == {"v1": 50, "v2": 50}
    ep.promote("v2")
    ep.remove("v1")
    assert list(ep.status().index) == ["v2"]
    assert set(ep.predict(X[:4])["version"]) == {"v2"}


def test_module_level_deploy_and_bad_input_change_nothing(
    ep: mlshift.Endpoint, data: tuple[Any, Any]
) -> None:
    X, y = data
    mlshift.deploy(LogisticRegression(C=3.0).fit(X, y), "v3", sample=X[:5])
    assert ep.weights == {"v1": 100, "v2": 0, "v3": 0}
    with pytest.raises(mlshift.InvalidWeightsError, match="sum to 90"):
        ep.shift({"v1": 80, "v3": 10})
    with pytest.raises(mlshift.InvalidNameError, match="'v-4'"):
        ep.deploy(LogisticRegression().fit(X, y), "V_4")
    fresh = mlshift.Endpoint("churn", ep.target)
    assert fresh.status()["weight"].to_dict() == {"v1": 100, "v2": 0, "v3": 0}


def test_canary_promotes_a_healthy_version(ep: mlshift.Endpoint, data: tuple[Any, Any]) -> None:
    X, _ = data
    run = ep.send(X, rps=150, duration="12s")
    gate = mlshift.gates.MaxErrorRate(0.01, min_requests=20)
    result = ep.canary("v2", steps=(20, 100), interval="2.5s", gates=[gate], blocking=True)
    run.stop()
    assert result.outcome == "promoted", result.to_frame()
    assert ep.weights == {"v1": 0, "v2": 100}


def test_canary_rolls_back_a_failing_version(ep: mlshift.Endpoint, data: tuple[Any, Any]) -> None:
    X, y = data
    safe = X[X[:, 0] <= 0][:5]
    ep.deploy(Fragile(LogisticRegression().fit(X, y)), "v3", sample=safe, trust_pickle=True)
    run = ep.send(X, rps=150, duration="12s")
    result = ep.canary("v3", steps=(20, 50, 100), interval="2.5s", threshold=2).wait()
    run.stop()
    assert result.outcome.startswith("rolled back to v1: error-rate"), result.to_frame()
    assert ep.weights == {"v1": 100, "v2": 0, "v3": 0}
    verdicts = list(result.to_frame()["verdict"])
    # On a loaded machine the first interval may hold too few requests (inconclusive).
    assert verdicts[-2:] == ["fail", "fail"], verdicts
    assert "pass" not in verdicts


def test_a_dead_version_is_refused_traffic_until_revived(
    ep: mlshift.Endpoint, data: tuple[Any, Any]
) -> None:
    import signal
    import time

    X, _ = data
    pid = ep.engine.pids()["v2"]  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while ep.status().loc["v2", "ready"] and time.monotonic() < deadline:
        time.sleep(0.1)
    status = ep.status()
    assert not status.loc["v2", "ready"]
    assert status.loc["v2", "reason"]
    with pytest.raises(mlshift.InvalidWeightsError, match="not ready"):
        ep.shift({"v1": 50, "v2": 50})
    assert ep.revive() == ["v2"]
    ep.shift({"v1": 50, "v2": 50})
    assert set(ep.send(X, rps=100, duration="1s").wait().results["status"]) == {200}
    with pytest.raises(mlshift.MlshiftError, match="restarts versions by itself"):
        mlshift.Endpoint("x", mlshift.Kubernetes(namespace="ml")).revive()
