"""Bad arguments and unsendable data raise mlshift's own errors, still ValueError / TypeError.

Covers durations, traffic runs, data orjson cannot encode (whose error orjson would otherwise
hide behind its own TypeError), plot arguments, the local target's port, Prometheus query
arguments, and a Prometheus answer of an unexpected result type (through an httpx transport,
no network).
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pandas as pd
import pytest

from mlshift._client import TrafficRun, encode_rows
from mlshift._durations import parse_duration
from mlshift._exceptions import (
    InvalidArgumentError,
    InvalidDataError,
    MetricsUnavailableError,
    MlshiftError,
)
from mlshift.local._target import Local
from mlshift.metrics._prometheus import PrometheusClient, istio_metrics, query
from mlshift.plot import latency


@pytest.mark.parametrize("value", [True, -1, "soon", ""])
def test_bad_durations(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="duration") as info:
        parse_duration(value)  # type: ignore[arg-type]
    assert isinstance(info.value, MlshiftError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rps": 0, "duration": 1.0}, "rps"),
        ({"rps": 10, "duration": 7200.0}, "duration"),
    ],
)
def test_traffic_run_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        TrafficRun("http://127.0.0.1:9", "m", [[1.0]], **kwargs)


def test_traffic_run_needs_rows() -> None:
    with pytest.raises(InvalidArgumentError, match="at least one row"):
        TrafficRun("http://127.0.0.1:9", "m", pd.DataFrame({"a": []}), rps=1, duration=1.0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (pd.DataFrame({"a": [object()]}), "cannot send object values"),
        ([[Decimal("1.5")]], "cannot send"),
    ],
)
def test_unsendable_data_is_invalid_data(data: object, match: str) -> None:
    with pytest.raises(InvalidDataError, match=match) as info:
        encode_rows(data)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)


def test_plot_arguments() -> None:
    frame = pd.DataFrame({"timestamp": [], "version": [], "p99_ms": []})
    with pytest.raises(InvalidArgumentError, match="p75"):
        latency(frame, quantile="p75")
    with pytest.raises(InvalidArgumentError, match="no column p50_ms"):
        latency(frame, quantile="p50")


@pytest.mark.parametrize("port", [0, 70000])
def test_local_port_out_of_range(port: int) -> None:
    with pytest.raises(InvalidArgumentError, match="1-65535"):
        Local("/nonexistent/mlshift", port=port)


def test_prometheus_query_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="swap them"):
        query("up", prometheus_url="http://127.0.0.1:9", start=200.0, end=100.0)
    with pytest.raises(InvalidArgumentError, match="step must be positive"):
        istio_metrics("http://127.0.0.1:9", service="churn", namespace="ml", step=0)


def test_unexpected_result_type_is_metrics_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"status": "success", "data": {"resultType": "string", "result": [0, "x"]}}
        return httpx.Response(200, json=body)

    prom = PrometheusClient("http://prom:9090", transport=httpx.MockTransport(answer))
    with prom, pytest.raises(MetricsUnavailableError, match="http://prom:9090.*'string'"):
        prom.query("up")
