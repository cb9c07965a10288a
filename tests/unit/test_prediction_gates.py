"""Prediction gates: drift of the canary's predictions against stable's, and agreement on
mirrored requests; and a canary run that feeds them."""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
import pytest

import mlshift
from mlshift import gates
from mlshift._canary import run_canary
from mlshift._compare import Comparison, compare, journal_frame
from mlshift._exceptions import MetricsUnavailableError
from mlshift._prediction_stats import PredictionStats, predictions_frame
from mlshift._state import EndpointState
from mlshift._stats_tests import wilson
from tests.unit.memory import MemoryEngine, MemoryTarget

INF = math.inf


def _look(**kw: Any) -> gates.Interval:
    return gates.Interval("v2", "v1", {"v1": 50, "v2": 50}, pd.DataFrame(), **kw)


def _classes(v2: dict[str, float], v1: dict[str, float] | None = None) -> pd.DataFrame:
    stats = [PredictionStats("v1", v1 or {"yes": 400, "no": 600}), PredictionStats("v2", v2)]
    return predictions_frame(stats, stable="v1")


# -- PredictionDrift ------------------------------------------------------------------------


def test_drift_passes_on_the_same_class_shares() -> None:
    verdict = gates.PredictionDrift(0.1).check(_look(predictions=_classes({"yes": 200, "no": 300})))
    assert verdict.status == "pass", verdict.reason
    assert verdict.numbers["divergence"] == pytest.approx(0.0)
    assert "tvd" in verdict.reason


def test_drift_fails_on_shifted_class_shares() -> None:
    verdict = gates.PredictionDrift(0.1).check(_look(predictions=_classes({"yes": 350, "no": 150})))
    assert verdict.status == "fail", verdict.reason
    assert verdict.numbers["divergence"] == pytest.approx(0.3)


def test_drift_is_inconclusive_on_too_few_predictions() -> None:
    few = _look(predictions=_classes({"yes": 35, "no": 15}))
    verdict = gates.PredictionDrift(0.1, min_predictions=200).check(few)
    assert verdict.status == "inconclusive"
    assert "50 canary" in verdict.reason
    assert gates.PredictionDrift(0.1, min_predictions=50).check(few).status == "fail"


def test_drift_on_regressors_uses_psi() -> None:
    base = ((0.0, 250.0), (1.0, 500.0), (2.0, 750.0), (INF, 1000.0))
    shifted = ((0.0, 50.0), (1.0, 150.0), (2.0, 400.0), (INF, 1000.0))
    for buckets, status in ((base, "pass"), (shifted, "fail")):
        frame = predictions_frame(
            [PredictionStats("v1", buckets=base), PredictionStats("v2", buckets=buckets)],
            stable="v1",
        )
        verdict = gates.PredictionDrift(0.1).check(_look(predictions=frame))
        assert verdict.status == status, verdict.reason
        assert "psi" in verdict.reason


def test_drift_without_predictions_or_against_another_version_is_inconclusive() -> None:
    missing = _look(unavailable={"predictions": "Prometheus is down"})
    verdict = gates.PredictionDrift().check(missing)
    assert verdict.status == "inconclusive"
    assert "Prometheus is down" in verdict.reason
    stats = [PredictionStats("v1", {"yes": 400, "no": 600}), PredictionStats("v2", {"yes": 500})]
    wrong = predictions_frame(stats, stable="v2")
    assert gates.PredictionDrift().check(_look(predictions=wrong)).status == "inconclusive"


# -- Agreement ------------------------------------------------------------------------------


def _pairs(agree: int, n: int) -> Comparison:
    return Comparison("v1", "v2", pd.DataFrame({"agree": [True] * agree + [False] * (n - agree)}))


@pytest.mark.parametrize(
    ("agree", "status"), [(990, "pass"), (950, "inconclusive"), (900, "fail"), (5, "inconclusive")]
)
def test_agreement_verdicts(agree: int, status: str) -> None:
    n = 1000 if agree > 5 else 5
    verdict = gates.Agreement(0.95).check(_look(comparison=_pairs(agree, n)))
    assert verdict.status == status, verdict.reason


def test_agreement_decides_exactly_at_the_wilson_bounds() -> None:
    n, level, rate = 2000, 0.025, 0.95
    confidence = 1 - 2 * level
    # The largest count whose upper bound is still below the rate fails; one more does not.
    fail_at = max(k for k in range(n + 1) if wilson(k, n, confidence)[1] < rate)
    pass_at = min(k for k in range(n + 1) if wilson(k, n, confidence)[0] > rate)
    gate = gates.Agreement(rate)
    status = {k: gate.check(_look(comparison=_pairs(k, n), level=level)).status for k in range(n)}
    assert status[fail_at] == "fail"
    assert status[fail_at + 1] == "inconclusive"
    assert status[pass_at - 1] == "inconclusive"
    assert status[pass_at] == "pass"
    verdict = gate.check(_look(comparison=_pairs(fail_at, n), level=level))
    assert verdict.p_value < level  # the score test the bound inverts: Holm sees the same call


def test_agreement_bounds_follow_the_looks_level_unless_confidence_is_set() -> None:
    pairs = _pairs(930, 1000)
    assert gates.Agreement(0.95).check(_look(comparison=pairs, level=0.025)).status == "fail"
    late = gates.Agreement(0.95).check(_look(comparison=pairs, level=1e-6))
    assert late.status == "inconclusive", late.reason
    fixed = gates.Agreement(0.95, confidence=0.9).check(_look(comparison=pairs, level=1e-6))
    assert fixed.status == "fail"
    assert math.isnan(fixed.p_value)


def test_agreement_without_pairs_is_inconclusive() -> None:
    missing = gates.Agreement().check(_look(unavailable={"comparison": "journal unreadable"}))
    assert missing.status == "inconclusive"
    assert "journal unreadable" in missing.reason
    empty = compare("v1", journal_frame([]), "v2", journal_frame([]))
    verdict = gates.Agreement().check(_look(comparison=empty))
    assert verdict.status == "inconclusive"
    assert "ep.shadow" in verdict.reason


# -- fed by the canary run ------------------------------------------------------------------


class PredictingEngine(MemoryEngine):
    """Answers predictions() with fixed counts (or an error), counting the calls."""

    def __init__(self, stats: list[PredictionStats] | Exception) -> None:
        super().__init__()
        self.stats = stats
        self.calls = 0

    def predictions(self, state: EndpointState, *, since: float) -> list[PredictionStats]:
        self.calls += 1
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats


def _ep(models: list[Any], stats: list[PredictionStats] | Exception) -> mlshift.Endpoint:
    target = MemoryTarget()
    target.engines["churn"] = PredictingEngine(stats)
    ep = mlshift.Endpoint("churn", target)
    ep.deploy(models[0], "v1")
    ep.deploy(models[1], "v2")
    return ep


def _run(ep: mlshift.Endpoint, gate_list: list[Any]) -> Any:
    return run_canary(
        ep,
        "v2",
        steps=(10, 100),
        interval=1,
        gates=gate_list,
        max_inconclusive=1,
        sleep=lambda _: False,
    )


def test_a_run_feeds_prediction_drift(models: list[Any]) -> None:
    stable = PredictionStats("v1", {"yes": 4000, "no": 6000})
    drifted = _ep(models, [stable, PredictionStats("v2", {"yes": 900, "no": 100})])
    result = _run(drifted, [gates.PredictionDrift(0.1)])
    assert result.outcome.startswith("rolled back to v1: prediction-drift: tvd 0.500")
    assert list(result.history["prediction-drift"]) == ["fail", "fail"]
    same = _ep(models, [stable, PredictionStats("v2", {"yes": 400, "no": 600})])
    assert _run(same, [gates.PredictionDrift(0.1)]).outcome == "promoted"


def test_predictions_are_read_only_for_gates_that_need_them(models: list[Any]) -> None:
    ep = _ep(models, [PredictionStats("v1", {"yes": 1})])
    _run(ep, [gates.MaxErrorRate(0.01)])
    engine = ep.engine
    assert isinstance(engine, PredictingEngine)
    assert engine.calls == 0


def test_a_target_without_prediction_counts_makes_the_gate_inconclusive(
    models: list[Any],
) -> None:
    ep = _ep(models, MetricsUnavailableError("no Prometheus at http://prom:9090"))
    result = _run(ep, [gates.PredictionDrift()])
    assert "timed out at 10 %" in result.outcome
    assert "no Prometheus" in result.checks[0]["reason"]
    assert ep.weights == {"v1": 100, "v2": 0}


def test_a_run_feeds_agreement_from_the_journals(models: list[Any]) -> None:
    ep = _ep(models, [])
    engine = ep.engine
    assert isinstance(engine, MemoryEngine)
    future = time.time() + 3600
    for version in ("v1", "v2"):
        engine.journals[version] = [
            {
                "id": f"r{i}",
                "time": future,
                "status": 200,
                "latency_ms": 3.0,
                "digest": f"d{i}",
                "prediction": [int(version == "v2" and i % 10 == 0)],  # v2 differs on 10 %
            }
            for i in range(1000)
        ]
    result = _run(ep, [gates.Agreement(0.95)])
    assert result.outcome.startswith("rolled back to v1: agreement: agreement 90.0%")
    assert result.checks[0]["agreement.pairs"] == 1000


def test_drift_is_against_the_runs_stable_even_when_the_canary_carries_more(
    models: list[Any],
) -> None:
    stats = [PredictionStats("v1", {"yes": 4000, "no": 6000}), PredictionStats("v2", {"yes": 900})]
    ep = _ep(models, stats)
    ep.shift("v2", 60)
    assert ep.predictions(since=60).attrs["stable"] == "v2"  # the default: most traffic
    assert ep.predictions(since=60, stable="v1").attrs["stable"] == "v1"
    ep.shift("v2", 0)
    result = run_canary(
        ep,
        "v2",
        steps=(60, 100),
        interval=1,
        gates=[gates.PredictionDrift(0.1)],
        sleep=lambda _: False,
    )
    assert result.checks[0]["prediction-drift"] == "fail", result.checks[0]["reason"]
    assert ep.weights == {"v1": 100, "v2": 0}
