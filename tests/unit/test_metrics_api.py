"""The metrics package surface: its export list, Istio PromQL shape, the rate window rule."""

from __future__ import annotations

import pytest

import mlshift.metrics
from mlshift import InvalidNameError
from mlshift.metrics._prometheus import istio_queries, rate_window


def test_export_list_does_not_drift() -> None:
    assert mlshift.metrics.__all__ == [
        "FRAME_COLUMNS",
        "PredictionStats",
        "Snapshot",
        "empty_frame",
        "frame_from_snapshots",
        "histogram_quantile",
        "istio_latency_histograms",
        "istio_metrics",
        "parse_exposition",
        "predictions_frame",
        "prometheus_predictions",
        "query",
        "stats_delta",
    ]
    assert all(hasattr(mlshift.metrics, name) for name in mlshift.metrics.__all__)


@pytest.mark.parametrize(
    ("step", "scrape", "expected"),
    [(15.0, 15.0, 60.0), (60.0, 15.0, 75.0), (1.0, 1.0, 4.0), (10.0, 30.0, 120.0)],
)
def test_rate_window_is_grafanas_rate_interval(step: float, scrape: float, expected: float) -> None:
    assert rate_window(step, scrape) == expected


def test_istio_queries_read_destination_reports_of_one_service() -> None:
    queries = istio_queries("churn", "ml", 60.0)
    assert set(queries) == {"rps", "errors", "p50_ms", "p95_ms", "p99_ms", "seen", "mesh_errors"}
    for column, promql in queries.items():
        side = 'reporter=~"source|waypoint"' if column in ("seen", "mesh_errors") else None
        assert (side or 'reporter="destination"') in promql
        assert 'destination_service_name="churn"' in promql
        assert 'destination_service_namespace="ml"' in promql
        assert "[60s]" in promql
    assert 'response_code=~"5.."' in queries["errors"]
    assert 'response_code=~"5..",response_flags=~' in queries["mesh_errors"]
    assert queries["p99_ms"].startswith("histogram_quantile(0.99, sum by (destination_version, le)")


def test_istio_queries_refuse_names_that_would_break_promql() -> None:
    with pytest.raises(InvalidNameError):
        istio_queries('churn"}', "ml", 60.0)
    with pytest.raises(InvalidNameError):
        istio_queries("churn", "ML", 60.0)
