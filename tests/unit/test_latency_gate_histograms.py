"""The latency gate on histogram buckets only (no per-request latencies), and the canary run
reading the versions' histograms when their journals hold nothing."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mlshift
from mlshift._canary import run_canary
from mlshift._gates import Interval, Latency
from mlshift._histogram import LatencyHistogram
from tests.unit.memory import MemoryEngine, MemoryTarget

EDGES = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, math.inf)  # Istio's


def _hist(samples: Any) -> LatencyHistogram:
    counts = np.bincount(np.searchsorted(np.asarray(EDGES), samples), minlength=len(EDGES))
    return LatencyHistogram(EDGES, tuple(float(c) for c in counts))


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"version": ["v1", "v2"], "requests": [4000.0, 500.0], "errors": [0.0, 0.0]}
    ).assign(p99_ms=[3.0, 5.0])


def _look(histograms: dict[str, LatencyHistogram], **kw: Any) -> Interval:
    return Interval("v2", "v1", {"v1": 90, "v2": 10}, _frame(), histograms=histograms, **kw)


@pytest.fixture
def stable() -> LatencyHistogram:
    return _hist(np.random.default_rng(0).lognormal(math.log(30), 0.3, 4000))


def test_a_slower_canary_fails_on_buckets(stable: LatencyHistogram) -> None:
    rng = np.random.default_rng(1)
    slow = _hist(rng.lognormal(math.log(30), 0.3, 500) * 1.6)
    verdict = Latency(0.2).check(_look({"v1": stable, "v2": slow}))
    assert verdict.status == "fail", verdict.reason
    assert "Mann-Whitney on histogram buckets" in verdict.reason
    assert verdict.numbers["canary_requests"] == 500
    assert verdict.numbers["canary_p99_ms"] > verdict.numbers["stable_p99_ms"]


def test_the_same_histograms_pass(stable: LatencyHistogram) -> None:
    same = _hist(np.random.default_rng(2).lognormal(math.log(30), 0.3, 500))
    verdict = Latency(0.2).check(_look({"v1": stable, "v2": same}))
    assert verdict.status == "pass", verdict.reason
    assert Latency(0.2).check(_look({"v1": stable, "v2": stable})).status == "pass"


def test_a_slow_tail_fails_the_quantile_test_on_buckets(stable: LatencyHistogram) -> None:
    samples = np.random.default_rng(3).lognormal(math.log(30), 0.3, 1000)
    samples[:50] = 400.0  # 5 % of requests slow: the median is the same, p99 is not
    tail = _hist(samples)
    verdict = Latency(0.2, quantile=0.99).check(_look({"v1": stable, "v2": tail}))
    assert verdict.status == "fail", verdict.reason
    assert "binomial on histogram buckets" in verdict.reason
    assert verdict.reason.startswith("p99 ")
    assert verdict.numbers["effect"] == pytest.approx(0.05, abs=0.01)


def test_too_few_canary_observations_are_inconclusive(stable: LatencyHistogram) -> None:
    few = _hist(np.random.default_rng(4).lognormal(math.log(30), 0.3, 40))
    verdict = Latency(0.2).check(_look({"v1": stable, "v2": few}))
    assert verdict.status == "inconclusive"
    assert "needs 100" in verdict.reason


def test_per_request_latencies_win_over_buckets(stable: LatencyHistogram) -> None:
    rng = np.random.default_rng(5)
    slow = _hist(rng.lognormal(math.log(30), 0.3, 500) * 1.6)
    latencies = {"v1": rng.lognormal(2.0, 0.2, 2000), "v2": rng.lognormal(2.0, 0.2, 500)}
    verdict = Latency(0.2).check(_look({"v1": stable, "v2": slow}, latencies=latencies))
    assert verdict.status == "pass"
    assert "histogram" not in verdict.reason


def test_without_histograms_it_compares_the_frame_p99() -> None:
    verdict = Latency(0.2).check(_look({}))
    assert verdict.status == "fail"  # 5 ms against 3 ms, a point estimate
    assert "histogram" not in verdict.reason and "p=" not in verdict.reason


def test_the_run_reads_histograms_when_journals_hold_nothing(models: list[Any]) -> None:
    target = MemoryTarget()
    ep = mlshift.Endpoint("churn", target)
    ep.deploy(models[0], "v1")
    ep.deploy(models[1], "v2")
    engine = ep.engine
    assert isinstance(engine, MemoryEngine)
    rng = np.random.default_rng(6)
    engine.histograms = {
        "v1": _hist(rng.lognormal(math.log(30), 0.3, 4000)),
        "v2": _hist(rng.lognormal(math.log(30), 0.3, 500) * 1.6),
    }
    future = time.time() + 3600  # v1 has a journal, v2's is empty: buckets for both
    engine.journals["v1"] = [{"id": "a", "time": future, "status": 200, "latency_ms": 3.0}]
    run = run_canary(
        ep,
        "v2",
        steps=(10, 100),
        interval=1,
        gates=[Latency(0.2)],
        threshold=1,
        sleep=lambda _: False,
    )
    assert run.outcome.startswith("rolled back to v1: latency"), run.outcome
    assert "histogram buckets" in run.outcome
