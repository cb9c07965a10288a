"""The statistical canary on the local mesh routed by an HTTPRoute (``routing="gateway-api"``).

Real Envoy routed from the HTTPRoute form, real model_server processes, real traffic
(``ep.send``): a good v2 is promoted through every step (the stored HTTPRoute ends at v2 100
and the router answers only from v2), and a v3 failing a fifth of its requests is rolled back
to the exact three-way split in place before the run (the HTTPRoute's weights, and what the
router then does). ``test_canary_local.py`` runs the same canary with VirtualService routing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import mlshift
from mlshift.gates import ErrorRate, MaxErrorRate, SampleRatio
from mlshift.local import Local

pytestmark = [pytest.mark.slow, pytest.mark.serial]


class Failing:
    """A classifier that raises on rows whose feature 2 is at or above ``fail_from``."""

    def __init__(self, model: Any, fail_from: float) -> None:
        self.model, self.fail_from = model, fail_from
        self.classes_ = model.classes_

    def predict(self, X: Any) -> Any:
        rows = np.asarray(X, dtype=float)
        if (rows[:, 2] >= self.fail_from).any():
            raise ValueError("planted failure")
        return self.model.predict(rows)


@pytest.fixture(scope="module")
def data() -> Any:
    rng = np.random.default_rng(11)
    return rng.normal(size=(400, 4))


@pytest.fixture(scope="module")
def ep(tmp_path_factory: pytest.TempPathFactory, data: Any) -> Iterator[Any]:
    X = data
    y = (X[:, 1] + X[:, 2] > 0).astype(int)
    fifth = float(np.quantile(X[:, 2], 0.8))  # v3 fails on a fifth of the rows
    safe = X[X[:, 2] < fifth][:5]
    target = Local(state_dir=tmp_path_factory.mktemp("mesh"), routing="gateway-api")
    endpoint = mlshift.endpoint("churn", target=target)
    try:
        endpoint.deploy(LogisticRegression().fit(X, y), "v1", sample=safe)
        endpoint.deploy(LogisticRegression(C=0.5).fit(X, y), "v2", sample=safe)
        bad = Failing(LogisticRegression().fit(X, y), fifth)
        endpoint.deploy(bad, "v3", sample=safe, trust_pickle=True)
        assert endpoint.status().attrs["routing"] == "gateway-api"
        yield endpoint
    finally:
        endpoint.delete()


def _route_weights(ep: Any) -> dict[str, int]:
    """The weights of the managed rule of the HTTPRoute the router was last configured from."""
    route = ep.engine.files.stored("HTTPRoute")
    assert route is not None, "no HTTPRoute applied: the endpoint is not gateway-api routed"
    rule = next(r for r in route["spec"]["rules"] if r.get("name") == "mlshift")
    return {b["name"]: int(b.get("weight", 1)) for b in rule["backendRefs"]}


def _answered(ep: Any, X: Any, n: int = 400) -> dict[str, int]:
    """Which versions answered ``n`` requests sent through the router now."""
    sent = ep.send(X, rps=200, duration=n / 200).wait().results
    ok = sent[sent["status"] == 200]
    assert len(ok) >= 0.95 * len(sent), sent["status"].value_counts()
    return {str(k): int(v) for k, v in ok["version"].value_counts().items()}


def test_a_good_version_is_promoted_through_every_step(ep: Any, data: Any) -> None:
    ep.promote("v1")
    traffic = ep.send(data, rps=150, duration="40s")
    try:
        gates = [ErrorRate(0.01, min_requests=50), SampleRatio()]
        run = ep.canary("v2", steps=(25, 50, 100), interval="2.5s", gates=gates, max_inconclusive=6)
        run.wait()
    finally:
        traffic.stop()
    history = run.history
    assert run.outcome == "promoted", history
    assert list(history[history["verdict"] == "pass"]["weight"]) == [25, 50], history
    assert _route_weights(ep) == {"churn-v1": 0, "churn-v2": 100, "churn-v3": 0}
    assert _answered(ep, data).keys() == {"v2"}  # what the router does, not only the cache


def test_a_bad_version_is_rolled_back_to_the_three_way_split(ep: Any, data: Any) -> None:
    split = {"v1": 70, "v2": 30, "v3": 0}
    ep.shift(split)
    traffic = ep.send(data, rps=150, duration="40s")
    try:
        gates = [ErrorRate(0.005), MaxErrorRate(0.05, min_requests=30)]
        run = ep.canary(
            "v3", steps=(50, 100), interval="2.5s", gates=gates, threshold=1, max_inconclusive=6
        )
        run.wait()
    finally:
        traffic.stop()
    assert run.outcome.startswith("rolled back to v1 70 %, v2 30 %: "), run.history
    assert "error" in run.outcome, run.history
    assert set(run.history["verdict"]) <= {"fail", "inconclusive"}, run.history
    assert ep.reader().weights == split
    assert _route_weights(ep) == {"churn-v1": 70, "churn-v2": 30, "churn-v3": 0}
    seen = _answered(ep, data)
    assert seen.keys() == {"v1", "v2"}, seen
    assert abs(100 * seen["v2"] / sum(seen.values()) - 30) <= 8, seen
