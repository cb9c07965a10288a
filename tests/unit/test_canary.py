"""The canary gate (pass / fail / inconclusive) and the stepping driver over the facade."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import mlshift
from mlshift._canary import Gate, judge, run_canary
from mlshift._state import EndpointState
from tests.unit.memory import MemoryEngine, MemoryTarget


def _frame(requests: float, errors: float, p99: float = 5.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "version": ["v1", "v2"],
            "requests": [500.0, requests],
            "errors": [0.0, errors],
            "p99_ms": [3.0, p99],
        }
    )


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
def test_gate(requests: float, errors: float, p99: float, verdict: str) -> None:
    got, reason = judge(_frame(requests, errors, p99), "v2", Gate(0.01, 50.0, 20))
    assert got == verdict, reason


class ScriptedEngine(MemoryEngine):
    """Answers metrics() with the frames a test scripts, one per check."""

    def __init__(self, frames: list[pd.DataFrame]) -> None:
        super().__init__()
        self.frames = frames

    def metrics(self, state: EndpointState, *, since: float, step: float) -> pd.DataFrame:
        return self.frames.pop(0)


class ScriptedTarget(MemoryTarget):
    def __init__(self, frames: list[pd.DataFrame]) -> None:
        super().__init__()
        self.engines["churn"] = ScriptedEngine(frames)


def _ep(frames: list[pd.DataFrame], models: list[Any]) -> mlshift.Endpoint:
    ep = mlshift.Endpoint("churn", ScriptedTarget(frames))
    ep.deploy(models[0], "v1")
    ep.deploy(models[1], "v2")
    return ep


def test_healthy_canary_is_promoted_step_by_step(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0)] * 3, models)
    result = run_canary(
        ep,
        "v2",
        steps=(10, 50, 100),
        interval=1,
        gate=Gate(),
        threshold=2,
        max_inconclusive=2,
        sleep=lambda _: None,
    )
    assert result.outcome == "promoted"
    assert [c["weight"] for c in result.checks] == [10, 50, 100]
    assert ep.weights == {"v1": 0, "v2": 100}


def test_failing_canary_is_rolled_back_after_threshold(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0), _frame(100, 9), _frame(100, 9)], models)
    result = run_canary(
        ep,
        "v2",
        steps=(10, 50, 100),
        interval=1,
        gate=Gate(),
        threshold=2,
        max_inconclusive=2,
        sleep=lambda _: None,
    )
    assert result.outcome.startswith("rolled back to v1: error rate 9.0%")
    assert ep.weights == {"v1": 100, "v2": 0}
    assert list(result.to_frame()["verdict"]) == ["pass", "fail", "fail"]


def test_the_checks_frame_has_utc_timestamps(models: list[Any]) -> None:
    ep = _ep([_frame(100, 0)] * 2, models)
    before = pd.Timestamp.now(tz="UTC")
    result = run_canary(
        ep,
        "v2",
        steps=(50, 100),
        interval=1,
        gate=Gate(),
        threshold=2,
        max_inconclusive=2,
        sleep=lambda _: None,
    )
    frame = result.to_frame()
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert list(frame.columns) == ["time", "weight", "verdict", "reason"]
    assert before - pd.Timedelta("1s") <= frame["time"].min() <= pd.Timestamp.now(tz="UTC")
    empty = mlshift.CanaryResult("v2").to_frame()
    assert empty.empty
    assert str(empty["time"].dtype) == "datetime64[ns, UTC]"


def test_no_traffic_waits_then_gives_up(models: list[Any]) -> None:
    ep = _ep([_frame(0, 0)] * 3, models)
    result = run_canary(
        ep,
        "v2",
        steps=(10, 100),
        interval=1,
        gate=Gate(),
        threshold=2,
        max_inconclusive=2,
        sleep=lambda _: None,
    )
    assert "no traffic" in result.outcome
    assert ep.weights == {"v1": 100, "v2": 0}


def test_canary_arguments_are_checked(models: list[Any]) -> None:
    ep = _ep([], models)
    with pytest.raises(ValueError, match="rising"):
        ep.canary("v2", steps=(50, 10))
    with pytest.raises(mlshift.UnknownVersionError):
        ep.canary("v7")
