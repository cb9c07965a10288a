"""The canary: gates on scripted looks, and the run's stepping, rollback and restoration."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mlshift
from mlshift._canary import CanaryRun, run_canary
from mlshift._gates import (
    ErrorRate,
    Interval,
    Latency,
    MaxErrorRate,
    MaxLatency,
    SampleRatio,
    Verdict,
    judge,
)
from mlshift._state import EndpointState
from tests.unit.memory import MemoryEngine, MemoryTarget


def _frame(
    canary: float, errors: float, p99: float = 5.0, stable: float = 900.0, stable_errors: float = 0
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "version": ["v1", "v2"],
            "requests": [stable, canary],
            "errors": [stable_errors, errors],
            "p99_ms": [3.0, p99],
        }
    )


def _look(frame: pd.DataFrame, weights: dict[str, int] | None = None, **kw: Any) -> Interval:
    return Interval("v2", "v1", weights or {"v1": 90, "v2": 10}, frame, **kw)


@pytest.mark.parametrize(
    ("requests", "errors", "p99", "verdict"),
    [
        (100, 0, 5, "pass"),
        (100, 2, 5, "fail"),
        (100, 0, 80, "fail"),
        (5, 5, 5, "inconclusive"),
        (0, 0, float("nan"), "inconclusive"),
    ],
)
def test_absolute_gates(requests: float, errors: float, p99: float, verdict: str) -> None:
    overall, _ = judge(_look(_frame(requests, errors, p99)), [MaxErrorRate(0.01), MaxLatency(50)])
    assert overall.status == verdict, overall.reason


def test_relative_error_gate_fails_what_an_absolute_five_percent_passes() -> None:
    look = _look(_frame(2000, 60, stable=18000, stable_errors=90), {"v1": 90, "v2": 10})
    assert MaxErrorRate(0.05).check(look).status == "pass"
    verdict = ErrorRate(tolerance=0.005).check(look)
    assert verdict.status == "fail", verdict.reason
    assert verdict.numbers["canary_error_rate"] == pytest.approx(0.03)


def test_relative_error_gate_needs_a_sample_to_pass() -> None:
    small = ErrorRate(tolerance=0.005).check(_look(_frame(100, 0, stable=900, stable_errors=4)))
    assert small.status == "inconclusive"
    assert "needs" in small.reason
    big = ErrorRate(tolerance=0.005).check(_look(_frame(9000, 40, stable=81000, stable_errors=400)))
    assert big.status == "pass", big.reason


def test_latency_gate_on_per_request_latencies() -> None:
    rng = np.random.default_rng(0)
    stable = rng.lognormal(2.0, 0.2, 2000)
    frame = _frame(500, 0)
    slow = {"v1": stable, "v2": rng.lognormal(2.0, 0.2, 500) * 1.4}
    assert Latency(0.2).check(_look(frame, latencies=slow)).status == "fail"
    same = {"v1": stable, "v2": rng.lognormal(2.0, 0.2, 500)}
    assert Latency(0.2).check(_look(frame, latencies=same)).status == "pass"


def test_sample_ratio_mismatch_is_invalid() -> None:
    # 10 % weight but a third of the requests: routing does not do what the weights say.
    verdict = SampleRatio().check(_look(_frame(450, 0, stable=900)))
    assert verdict.status == "invalid"
    assert SampleRatio().check(_look(_frame(100, 0, stable=900))).status == "pass"


def test_holm_turns_a_marginal_failure_inconclusive() -> None:
    class Fixed:
        def __init__(self, name: str, p: float) -> None:
            self.name, self.p = name, p

        def check(self, interval: Interval) -> Verdict:
            return Verdict(self.name, "fail" if self.p < interval.level else "pass", "", {}, self.p)

    overall, verdicts = judge(
        _look(_frame(100, 0), level=0.05), [Fixed("a", 0.04), Fixed("b", 0.5)]
    )
    assert [v.status for v in verdicts] == ["inconclusive", "pass"]
    assert overall.status == "inconclusive"


class ScriptedEngine(MemoryEngine):
    """Answers metrics() with the frames a test scripts, one per look."""

    def __init__(self, frames: list[pd.DataFrame]) -> None:
        super().__init__()
        self.frames = frames

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        frame = self.frames.pop(0)
        if isinstance(frame, Exception):
            raise frame
        return frame


class ScriptedTarget(MemoryTarget):
    def __init__(self, frames: list[pd.DataFrame]) -> None:
        super().__init__()
        self.engines["churn"] = ScriptedEngine(frames)


def _ep(frames: list[Any], models: list[Any], three: bool = False) -> mlshift.Endpoint:
    target = ScriptedTarget(frames)
    ep = mlshift.Endpoint("churn", target)
    ep.deploy(models[0], "v1")
    ep.deploy(models[1], "v2")
    if three:
        ep.deploy(models[2], "v3")
        ep.shift({"v1": 70, "v2": 0, "v3": 30})
    return ep


def _run(ep: mlshift.Endpoint, steps: tuple[int, ...], **kw: Any) -> CanaryRun:
    options: dict[str, Any] = {
        "interval": 1,
        "gates": [MaxErrorRate(0.01)],
        "threshold": 2,
        "max_inconclusive": 2,
        "sleep": lambda _: False,
    }
    return run_canary(ep, "v2", steps=steps, **(options | kw))


def test_healthy_canary_is_promoted_step_by_step(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0)] * 3, models)
    result = _run(ep, (10, 50, 100))
    assert result.outcome == "promoted"
    assert result.promoted
    assert [c["weight"] for c in result.checks] == [10, 50]  # 100 % is the promotion
    assert ep.weights == {"v1": 0, "v2": 100}


def test_failing_canary_is_rolled_back_after_threshold(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0), _frame(100, 9), _frame(100, 9)], models)
    result = _run(ep, (10, 50, 100))
    assert result.outcome.startswith("rolled back to v1: max-error-rate: error rate 9.0%")
    assert ep.weights == {"v1": 100, "v2": 0}
    assert list(result.to_frame()["verdict"]) == ["pass", "fail", "fail"]


def test_failures_in_a_row_means_in_a_row(models: list[Any]) -> None:
    # fail, inconclusive, fail: the inconclusive look breaks the streak; then a pass.
    frames = [_frame(100, 9), _frame(0, 0), _frame(100, 9), _frame(100, 0), _frame(100, 0)]
    result = _run(_ep(frames, models), (10, 50, 100))
    assert [c["verdict"] for c in result.checks] == ["fail", "inconclusive", "fail", "pass", "pass"]
    assert result.outcome == "promoted"


def test_rollback_restores_a_three_way_split(models: list[Any]) -> None:
    ep = _ep([_frame(100, 9)] * 2, models, three=True)
    result = _run(ep, (10, 100))
    assert ep.weights == {"v1": 70, "v2": 0, "v3": 30}
    assert result.outcome.startswith("rolled back to v1 70 %, v3 30 %")


def test_an_exception_restores_the_split_and_says_why(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0), RuntimeError("metrics broke")], models, three=True)
    with pytest.raises(RuntimeError, match="metrics broke"):
        _run(ep, (10, 50, 100))
    assert ep.weights == {"v1": 70, "v2": 0, "v3": 30}


def test_no_traffic_times_out_without_promoting(models: list[Any]) -> None:
    ep = _ep([_frame(0, 0)] * 3, models)
    result = _run(ep, (10, 100))
    assert "timed out at 10 %" in result.outcome
    assert ep.weights == {"v1": 100, "v2": 0}


def test_the_history_has_utc_timestamps_and_gate_columns(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0)] * 2, models)
    before = pd.Timestamp.now(tz="UTC")
    frame = _run(ep, (50, 100)).history
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert list(frame.columns[:6]) == [
        "time",
        "weight",
        "look",
        "verdict",
        "reason",
        "max-error-rate",
    ]
    assert before - pd.Timedelta("1s") <= frame["time"].min() <= pd.Timestamp.now(tz="UTC")
    empty = mlshift.CanaryResult("v2").to_frame()
    assert empty.empty
    assert str(empty["time"].dtype) == "datetime64[ns, UTC]"


def test_latencies_come_from_the_journals(models: list[Any]) -> None:
    ep = _ep([_frame(500, 0)] * 2, models)
    rng = np.random.default_rng(1)
    engine = ep.engine
    assert isinstance(engine, MemoryEngine)
    future = time.time() + 3600
    for version, scale, n in (("v1", 1.0, 2000), ("v2", 1.5, 500)):
        engine.journals[version] = [
            {"id": f"{version}-{i}", "time": future, "status": 200, "latency_ms": x}
            for i, x in enumerate(rng.lognormal(2.0, 0.2, n) * scale)
        ]
    result = _run(ep, (10, 100), gates=[Latency(0.2)])
    assert result.checks[0]["latency"] == "fail"
    assert "Mann-Whitney" in result.checks[0]["reason"]


def test_a_background_run_returns_at_once_and_cancel_restores(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0)] * 50, models, three=True)
    run = ep.canary("v2", steps=(10, 100), interval=30, gates=[MaxErrorRate(0.01)])
    assert not run.done
    assert "canary v2" in run._repr_html_()
    run.cancel()
    assert run.done
    assert run.outcome == "rolled back to v1 70 %, v3 30 %: cancelled"
    assert ep.weights == {"v1": 70, "v2": 0, "v3": 30}
    assert run.wait() is run


def test_blocking_runs_in_the_caller(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0)] * 2, models)
    run = ep.canary("v2", steps=(50, 100), interval=0.01, gates=[MaxErrorRate()], blocking=True)
    assert run.done
    assert run.outcome == "promoted"
    assert threading.active_count() >= 1


def test_canary_arguments_are_checked(models: list[Any]) -> None:
    ep = _ep([], models)
    with pytest.raises(ValueError, match="rising"):
        ep.canary("v2", steps=(50, 10))
    with pytest.raises(mlshift.UnknownVersionError):
        ep.canary("v7")
    with pytest.raises(ValueError, match="alpha"):
        ep.canary("v2", alpha=2)
